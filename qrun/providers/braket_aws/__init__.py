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
    # A quantum task holds one circuit, or on a device that declares program sets, up to
    # its maximumExecutables (read by the adapter at apply). AWS documents program sets for
    # every gate-based QPU, "up to 100" circuits or parameter sets: what plan assumes for a
    # QPU before an apply has read the device.
    cloud_limits=Limits(max_experiments_per_job=1),
    limits_by_device_pattern=((r"arn:aws:braket:[a-z0-9-]*:[0-9]*:device/qpu/.+",
                               Limits(max_experiments_per_job=100)),),
    # Dynamic circuits are refused at validation; the gates a device declares are read
    # from its properties when tasks are submitted.
    check_module="qrun.providers.braket_local.check",
    fake="qrun.providers.braket_aws.fake:FakeBraket",
)
