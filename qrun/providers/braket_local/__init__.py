"""braket.local: the Braket SDK's local simulators (state vector and density matrix)."""

from qrun.providers.aer import GATE_FORMATS
from qrun.providers.spec import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="braket.local",
    adapter="qrun.providers.braket_local.adapter",
    formats=GATE_FORMATS + ("braket",),  # Braket circuits built by factories, too
    local=True,
    sdk_packages=("amazon-braket-sdk", "amazon-braket-default-simulator"),
    # LocalSimulator(name).properties: paradigm.qubitCount (tests/test_providers.py checks).
    devices={"braket_sv": Limits(max_qubits=26), "braket_dm": Limits(max_qubits=13)},
    default_device="braket_sv",
    # What the simulators run wrongly is refused (mid-circuit measurements in an `if`,
    # conditions Braket misreads), without importing the Braket SDK.
    check_module="qrun.providers.braket_local.check",
)
