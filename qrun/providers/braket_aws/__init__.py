"""braket.aws: Amazon Braket's devices through the Braket SDK (boto3)."""

from qrun.providers.aer import GATE_FORMATS
from qrun.providers.ibm_cloud import CLOUD_OPTIONS
from qrun.providers.spec import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="braket.aws",
    adapter="qrun.providers.braket_aws.adapter",
    formats=GATE_FORMATS + ("braket",),
    local=False,
    sdk_packages=("amazon-braket-sdk", "boto3"),
    option_names=frozenset({"region", "s3_bucket", "s3_prefix"}) | CLOUD_OPTIONS,
    tuning_options=frozenset({"s3_bucket", "s3_prefix"}),
    device_pattern=r"arn:aws:braket:[a-z0-9-]*:[0-9]*:device/.+",
    device_hint="a Braket device ARN such as arn:aws:braket:::device/quantum-simulator/amazon/sv1",
    cloud_limits=Limits(max_experiments_per_job=1),  # a quantum task holds one circuit
    # Dynamic circuits are refused at validation; the gates a device declares are read
    # from its properties when tasks are submitted.
    check_module="qrun.providers.braket_local.program",
    fake="qrun.providers.braket_aws.fake:FakeBraket",
)
