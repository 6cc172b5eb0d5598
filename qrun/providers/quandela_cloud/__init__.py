"""quandela.cloud: Quandela's photonic QPUs and simulators through Perceval's RemoteProcessor."""

from qrun.providers.ibm_cloud import CLOUD_OPTIONS
from qrun.providers.spec import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="quandela.cloud",
    adapter="qrun.providers.quandela_cloud.adapter",
    formats=("perceval",),
    local=False,
    sdk_packages=("perceval-quandela",),
    option_names=CLOUD_OPTIONS,
    device_pattern=r"(sim|qpu):[a-z0-9_.:-]+",
    device_hint="a Quandela platform such as sim:slos or qpu:belenos",
    # Iterations of one cloud job; a manifest's limits may raise or lower it.
    cloud_limits=Limits(max_experiments_per_job=100),
    fake="qrun.providers.quandela_cloud.fake:FakeQuandela",
)
