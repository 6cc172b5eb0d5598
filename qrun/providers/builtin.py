"""qrun's own providers, registered through the `qrun.providers` entry-point group as any
plugin's are (pyproject.toml: `qrun = "qrun.providers.builtin:SPECS"`). One entry point
for all nine keeps their order, which error messages and the schema show: local ones
first, then the clouds, each in the order of its SDK."""

from qrun.providers.aer import SPEC as AER
from qrun.providers.braket_aws import SPEC as BRAKET_AWS
from qrun.providers.braket_local import SPEC as BRAKET_LOCAL
from qrun.providers.ibm_cloud import SPEC as IBM_CLOUD
from qrun.providers.ibm_local import SPEC as IBM_LOCAL
from qrun.providers.pasqal_cloud import SPEC as PASQAL_CLOUD
from qrun.providers.perceval_local import SPEC as PERCEVAL_LOCAL
from qrun.providers.pulser_local import SPEC as PULSER_LOCAL
from qrun.providers.quandela_cloud import SPEC as QUANDELA_CLOUD

SPECS = [AER, IBM_LOCAL, BRAKET_LOCAL, PULSER_LOCAL, PERCEVAL_LOCAL,
         IBM_CLOUD, BRAKET_AWS, PASQAL_CLOUD, QUANDELA_CLOUD]
