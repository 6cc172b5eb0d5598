"""pulser.local: Pulser sequences emulated with QuTiP (pulser-simulation)."""

from qrun.providers.spec import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="pulser.local",
    adapter="qrun.providers.pulser_local.adapter",
    formats=("pulser",),
    local=True,
    sdk_packages=("pulser-core", "pulser-simulation"),
    # QuTiP integrates the full state: 2^n amplitudes for n atoms (3^n with a digital
    # basis). Twelve atoms take seconds per run; more is a job for a tensor-network
    # emulator, not this one.
    devices={"qutip": Limits(max_qubits=12)},
    default_device="qutip",
    option_names=frozenset({"mimic_qpu", "with_modulation"}),
    check_module="qrun.providers.pulser_local.check",
)
