"""qiskit.ibm-local: qiskit-ibm-runtime's local mode on its fake backends (real devices' noise)."""

from qrun.providers.aer import GATE_FORMATS
from qrun.providers.spec import ProviderSpec

SPEC = ProviderSpec(
    id="qiskit.ibm-local",
    adapter="qrun.providers.ibm_local.adapter",
    formats=GATE_FORMATS,
    local=True,
    sdk_packages=("qiskit", "qiskit-ibm-runtime", "qiskit-aer"),
    devices=None,  # the runtime's fake backends (fake_manila, fake_kyiv, ...): the adapter lists them
    option_names=frozenset({"optimization_level"}),
)
