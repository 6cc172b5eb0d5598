"""pasqal.cloud: Pasqal's neutral-atom devices and emulators through pasqal-cloud."""

from qrun.providers.ibm_cloud import CLOUD_OPTIONS
from qrun.providers.spec import ProviderSpec

SPEC = ProviderSpec(
    id="pasqal.cloud",
    adapter="qrun.providers.pasqal_cloud.adapter",
    formats=("pulser",),
    local=False,
    sdk_packages=("pasqal-cloud", "pulser-core"),
    option_names=frozenset({"project_id"}) | CLOUD_OPTIONS,
    device_pattern=r"[A-Z][A-Z0-9_]*",
    device_hint="a Pasqal device type such as FRESNEL or EMU_MPS",
    check_module="qrun.providers.pasqal_cloud.check",
    fake="qrun.providers.pasqal_cloud.fake:FakePasqal",
)
