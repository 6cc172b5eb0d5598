"""Backend adapters and the registry of providers.

The registry holds what validation and planning need to know about each provider: the
family of programs it runs, its devices and their limits. Where the SDK's device objects
state limits that can be written down (Braket's local simulators), they are copied here and
a test keeps the copy honest; where they can only be asked (IBM's fake backends), the
adapter module is imported to ask, at validation, and only for manifests that use it.
Otherwise an adapter module is imported only when a job runs, in the process running it.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field, fields

from ..errors import BackendUnavailable
from .base import TransientBackendError
from .faults import NO_FAULTS, Faults


@dataclass(frozen=True)
class Limits:
    """How much one job may carry and how hard a backend may be driven. None: no limit."""

    max_parallel: int | None = None
    submit_rate: float | None = None  # submissions per second
    max_shots_per_job: int | None = None
    max_experiments_per_job: int | None = None
    max_qubits: int | None = None  # qubits, or atoms for neutral-atom backends
    max_modes: int | None = None  # photonic backends
    max_photons: int | None = None

    def tightened(self, other: "Limits") -> "Limits":
        """The stricter of the two for every limit."""
        def lower(a, b):
            return b if a is None else a if b is None else min(a, b)
        return Limits(**{f.name: lower(getattr(self, f.name), getattr(other, f.name))
                         for f in fields(self)})

    def overridden(self, other: "Limits") -> "Limits":
        """These limits with every limit that ``other`` sets replacing ours."""
        return Limits(**{f.name: getattr(other, f.name) if getattr(other, f.name) is not None
                         else getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class ProviderInfo:
    id: str
    module: str  # adapter module, imported lazily
    formats: tuple  # the program formats it runs (see sources.FAMILY)
    devices: dict | None  # device name -> its Limits; None: the adapter module knows them
    default_device: str | None  # None: the manifest must name a device
    local: bool
    sdk_packages: tuple  # distributions whose versions are recorded with results
    option_names: frozenset = field(default_factory=frozenset)  # accepted `options:` keys
    # Options that change how fast, not what, the backend computes (threads, a results
    # bucket): left out of experiment keys.
    tuning_options: frozenset = field(default_factory=frozenset)
    # Cloud devices are not listed (that would need the network at validation): their
    # names are checked against this pattern instead.
    device_pattern: str | None = None
    cloud_limits: Limits = field(default_factory=Limits)  # every device of a cloud provider
    checks_programs: bool = False  # its adapter module has check_program (imported to ask)
    # Where check_program is, when not in the adapter module: one that spares validation the
    # SDK's import.
    check_module: str | None = None

    @property
    def family(self) -> str:
        from ..sources import FAMILY

        return FAMILY[self.formats[0]]

    def known_devices(self) -> list:
        if self.devices is not None:
            return list(self.devices)
        return list(adapter_module(self.id).known_devices())

    def device_problem(self, device: str) -> str | None:
        """Why ``device`` is not one of this provider's, or None."""
        if self.device_pattern is not None:
            if re.fullmatch(self.device_pattern, device):
                return None
            return f"{self.id} device {device!r} does not look like one ({self.device_hint})"
        devices = self.known_devices()
        if device in devices:
            return None
        close = difflib.get_close_matches(device, devices, n=1)
        shown = ", ".join(devices) if len(devices) <= 12 else \
            ", ".join(devices[:12]) + f" and {len(devices) - 12} more"
        return (f"{self.id} has no device {device!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "") + f"; choose one of: {shown}")

    @property
    def device_hint(self) -> str:
        return _DEVICE_HINTS.get(self.id, "")

    def device_limits(self, device: str) -> Limits:
        if self.devices is not None:
            return self.devices.get(device, Limits())
        if self.device_pattern is not None:  # a cloud: no network at validation
            return self.cloud_limits
        return adapter_module(self.id).device_limits(device)

    def check_program(self, program, device: str, options: dict) -> str | None:
        """Why this backend cannot run ``program`` beyond family and size, or None."""
        if not self.checks_programs:  # spare validation the SDK's import
            return None
        if self.check_module:
            return importlib.import_module(self.check_module).check_program(program, device, options)
        return adapter_module(self.id).check_program(program, device, options)


_GATE_FORMATS = ("qasm2", "qasm3", "qpy")

PROVIDERS: dict[str, ProviderInfo] = {
    "qiskit.aer": ProviderInfo(
        id="qiskit.aer",
        module="qrun.backends.aer",
        formats=_GATE_FORMATS,
        # Aer's methods; qubit ceilings are what the method handles in this machine's memory.
        devices={
            "automatic": Limits(),
            "statevector": Limits(max_qubits=30),
            "density_matrix": Limits(max_qubits=15),
            "stabilizer": Limits(),
            "matrix_product_state": Limits(),
            "extended_stabilizer": Limits(),
        },
        default_device="automatic",
        local=True,
        sdk_packages=("qiskit", "qiskit-aer"),
        option_names=frozenset({
            "precision", "max_parallel_threads", "max_parallel_experiments", "max_parallel_shots",
            "fusion_enable", "fusion_threshold", "blocking_enable", "zero_threshold",
            "mps_truncation_threshold", "statevector_parallel_threshold", "shot_branching_enable",
        }),
        tuning_options=frozenset({
            "max_parallel_threads", "max_parallel_experiments", "max_parallel_shots",
            "statevector_parallel_threshold", "blocking_enable",
        }),
    ),
    "qiskit.ibm-local": ProviderInfo(
        id="qiskit.ibm-local",
        module="qrun.backends.ibm_local",
        formats=_GATE_FORMATS,
        devices=None,  # qiskit-ibm-runtime's fake backends: fake_manila, fake_kyiv, ...
        default_device=None,
        local=True,
        sdk_packages=("qiskit", "qiskit-ibm-runtime", "qiskit-aer"),
        option_names=frozenset({"optimization_level"}),
    ),
    "braket.local": ProviderInfo(
        id="braket.local",
        module="qrun.backends.braket_local",
        formats=_GATE_FORMATS + ("braket",),  # Braket circuits built by factories, too
        # LocalSimulator(name).properties: paradigm.qubitCount (tests/test_providers.py checks).
        devices={"braket_sv": Limits(max_qubits=26), "braket_dm": Limits(max_qubits=13)},
        default_device="braket_sv",
        local=True,
        sdk_packages=("amazon-braket-sdk", "amazon-braket-default-simulator"),
        # What the simulators run wrongly is refused (mid-circuit measurements in an `if`,
        # conditions Braket misreads), without importing the Braket SDK.
        checks_programs=True,
        check_module="qrun.backends.braket_program",
    ),
    "pulser.local": ProviderInfo(
        id="pulser.local",
        module="qrun.backends.pulser_local",
        formats=("pulser",),
        # QuTiP integrates the full state: 2^n amplitudes for n atoms (3^n with a digital
        # basis). Twelve atoms take seconds per run; more is a job for a tensor-network
        # emulator, not this one.
        devices={"qutip": Limits(max_qubits=12)},
        default_device="qutip",
        local=True,
        sdk_packages=("pulser-core", "pulser-simulation"),
        option_names=frozenset({"mimic_qpu", "with_modulation"}),
        checks_programs=True,
    ),
    "perceval.local": ProviderInfo(
        id="perceval.local",
        module="qrun.backends.perceval_local",
        formats=("perceval",),
        # Perceval states no limits; past ~16 modes and 8 photons SLOS's Fock space
        # (C(m+n-1, n) states) takes minutes: set limits in the manifest to go further.
        devices={"SLOS": Limits(max_modes=16, max_photons=8),
                 "CliffordClifford2017": Limits(max_modes=64, max_photons=16),
                 "Naive": Limits(max_modes=12, max_photons=6)},
        default_device="SLOS",
        local=True,
        sdk_packages=("perceval-quandela",),
    ),
}


# Where the service is (a local fake in rehearsals). Part of the keys on purpose: results
# from a rehearsal must never count as results from the real service.
_CLOUD_OPTIONS = frozenset({"endpoint"})

PROVIDERS.update({
    "qiskit.ibm": ProviderInfo(
        id="qiskit.ibm",
        module="qrun.backends.ibm_cloud",
        formats=_GATE_FORMATS,
        devices=None,
        default_device=None,
        local=False,
        sdk_packages=("qiskit", "qiskit-ibm-runtime"),
        option_names=frozenset({"optimization_level", "instance"}) | _CLOUD_OPTIONS,
        device_pattern=r"[a-z][a-z0-9_]*",
    ),
    "braket.aws": ProviderInfo(
        id="braket.aws",
        module="qrun.backends.braket_aws",
        formats=_GATE_FORMATS + ("braket",),
        devices=None,
        default_device=None,
        local=False,
        sdk_packages=("amazon-braket-sdk", "boto3"),
        option_names=frozenset({"region", "s3_bucket", "s3_prefix"}) | _CLOUD_OPTIONS,
        tuning_options=frozenset({"s3_bucket", "s3_prefix"}),
        device_pattern=r"arn:aws:braket:[a-z0-9-]*:[0-9]*:device/.+",
        cloud_limits=Limits(max_experiments_per_job=1),  # a quantum task holds one circuit
        # Dynamic circuits are refused at validation; the gates a device declares are read
        # from its properties when tasks are submitted.
        checks_programs=True,
        check_module="qrun.backends.braket_program",
    ),
    "pasqal.cloud": ProviderInfo(
        id="pasqal.cloud",
        module="qrun.backends.pasqal_cloud",
        formats=("pulser",),
        devices=None,
        default_device=None,
        local=False,
        sdk_packages=("pasqal-cloud", "pulser-core"),
        option_names=frozenset({"project_id"}) | _CLOUD_OPTIONS,
        checks_programs=True,
        device_pattern=r"[A-Z][A-Z0-9_]*",
    ),
    "quandela.cloud": ProviderInfo(
        id="quandela.cloud",
        module="qrun.backends.quandela_cloud",
        formats=("perceval",),
        devices=None,
        default_device=None,
        local=False,
        sdk_packages=("perceval-quandela",),
        option_names=_CLOUD_OPTIONS,
        device_pattern=r"(sim|qpu):[a-z0-9_.:-]+",
        # Iterations of one cloud job; a manifest's limits may raise or lower it.
        cloud_limits=Limits(max_experiments_per_job=100),
    ),
})

_DEVICE_HINTS = {
    "qiskit.ibm": "an IBM backend name such as ibm_brisbane",
    "braket.aws": "a Braket device ARN such as arn:aws:braket:::device/quantum-simulator/amazon/sv1",
    "pasqal.cloud": "a Pasqal device type such as FRESNEL or EMU_MPS",
    "quandela.cloud": "a Quandela platform such as sim:slos or qpu:belenos",
}


def adapter_module(provider_id: str):
    info = PROVIDERS[provider_id]
    try:
        return importlib.import_module(info.module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"provider {provider_id} needs {', '.join(info.sdk_packages)}, which cannot be "
            f"imported ({exc}); install qrun with its extra, e.g. pip install 'qrun[all]'"
        ) from None


_adapters: dict = {}


def adapter_for(provider_id: str, device: str, options: dict, credentials: dict | None = None):
    """The adapter instance for a backend, created once per process (simulators and cloud
    clients are reused). ``credentials`` holds references (profile or variable names) only."""
    cache_key = (provider_id, device, repr(sorted(options.items())),
                 repr(sorted((credentials or {}).items())))
    if cache_key not in _adapters:
        module = adapter_module(provider_id)
        if PROVIDERS[provider_id].local:
            _adapters[cache_key] = module.Adapter(device=device, options=options)
        else:
            _adapters[cache_key] = module.Adapter(device=device, options=options,
                                                  credentials=credentials or {})
    return _adapters[cache_key]


# A local run that fails transiently (a worker's simulator busy or crashed, an injected
# fault) is tried again inside its attempt, this many times in all, with jittered backoff.
LOCAL_TRIES = 5
LOCAL_BACKOFF = (0.05, 2.0)  # first wait's scale and longest wait, in seconds


def run_local_job(provider_id: str, device: str, options: dict, seed, tasks: list,
                  faults: Faults = NO_FAULTS) -> tuple:
    """Run one job's tasks in this (worker) process: (counts per task, backend metadata).

    The metadata says how many tries the run took when it took more than one.
    """
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    adapter = adapter_for(provider_id, device, options)
    retrying = Retrying(retry=retry_if_exception_type(TransientBackendError),
                        stop=stop_after_attempt(LOCAL_TRIES), reraise=True,
                        wait=wait_random_exponential(multiplier=LOCAL_BACKOFF[0], max=LOCAL_BACKOFF[1]))
    for attempt in retrying:
        with attempt:
            faults.before_run()
            outcomes = adapter.run(tasks, seed)
    metadata = adapter.metadata()
    tries = attempt.retry_state.attempt_number
    if tries > 1:
        metadata = {**metadata, "tries": tries}
    return faults.after_run(tasks, outcomes), metadata
