"""qiskit.ibm: IBM Quantum Platform through qiskit-ibm-runtime (batch mode)."""

from qrun.providers.aer import GATE_FORMATS
from qrun.providers.spec import Limits, ProviderSpec

# Where the service is (a local fake in rehearsals). Part of the keys on purpose: results
# from a rehearsal must never count as results from the real service.
CLOUD_OPTIONS = frozenset({"endpoint"})

SPEC = ProviderSpec(
    id="qiskit.ibm",
    adapter="qrun.providers.ibm_cloud.adapter",
    formats=GATE_FORMATS,
    local=False,
    sdk_packages=("qiskit", "qiskit-ibm-runtime"),
    option_names=frozenset({"optimization_level", "instance"}) | CLOUD_OPTIONS,
    device_pattern=r"[a-z][a-z0-9_]*",
    device_hint="an IBM backend name such as ibm_brisbane",
    fake="qrun.providers.ibm_cloud.fake:FakeIBMQuantum",
    # A Sampler job holds at most 10 million executions (circuits x shots; IBM's "Job
    # limits" guide, docs/research/usage-calibration-ibm-jobs.md): jobs are cut to fit, and
    # each job's circuits share one shot count, as the executor Sampler requires.
    cloud_limits=Limits(max_total_shots_per_job=10_000_000),
)
