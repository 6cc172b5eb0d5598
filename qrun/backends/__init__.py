"""Backend adapters and the registry of providers.

The registry holds what validation and planning need to know about each provider without
importing its SDK: which circuit formats it runs, its devices, its default limits. The
adapter module named by ``module`` is imported only when a job actually runs, inside the
process that runs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import BackendUnavailable


@dataclass(frozen=True)
class Limits:
    """How much one job may carry and how hard a backend may be driven. None: no limit."""

    max_parallel: int | None = None
    submit_rate: float | None = None  # submissions per second
    max_shots_per_job: int | None = None
    max_experiments_per_job: int | None = None
    max_qubits: int | None = None

    def tightened(self, other: "Limits") -> "Limits":
        """The stricter of the two for every limit (a manifest may only lower a device's)."""
        def lower(a, b):
            return b if a is None else a if b is None else min(a, b)
        return Limits(**{name: lower(getattr(self, name), getattr(other, name))
                         for name in self.__dataclass_fields__})

    def overridden(self, other: "Limits") -> "Limits":
        """These limits with every limit that ``other`` sets replacing ours."""
        return Limits(**{name: getattr(other, name) if getattr(other, name) is not None
                         else getattr(self, name) for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class ProviderInfo:
    id: str
    module: str  # adapter module, imported lazily
    formats: tuple  # circuit formats it runs
    devices: dict  # device name -> default Limits for it
    default_device: str
    local: bool
    sdk_packages: tuple  # distributions whose versions are recorded with results
    option_names: frozenset = field(default_factory=frozenset)  # accepted `options:` keys
    # Options that change how fast, not what, the backend computes: left out of keys.
    tuning_options: frozenset = field(default_factory=frozenset)

    def device_limits(self, device: str) -> Limits:
        return self.devices.get(device, Limits())


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
    "braket.local": ProviderInfo(
        id="braket.local",
        module="qrun.backends.braket_local",
        formats=_GATE_FORMATS,
        # From LocalSimulator(...).properties.paradigm.qubitCount.
        devices={"braket_sv": Limits(max_qubits=26), "braket_dm": Limits(max_qubits=13)},
        default_device="braket_sv",
        local=True,
        sdk_packages=("amazon-braket-sdk", "amazon-braket-default-simulator"),
        option_names=frozenset(),
    ),
}


def provider(provider_id: str) -> ProviderInfo:
    return PROVIDERS[provider_id]


_adapters: dict = {}


def adapter_for(provider_id: str, device: str, options: dict):
    """The adapter instance for a backend, created once per process (simulators are reused)."""
    cache_key = (provider_id, device, repr(sorted(options.items())))
    if cache_key not in _adapters:
        info = PROVIDERS[provider_id]
        try:
            module = importlib.import_module(info.module)
        except ImportError as exc:
            raise BackendUnavailable(
                f"provider {provider_id} needs {', '.join(info.sdk_packages)}, which cannot be "
                f"imported ({exc}); install qrun with its extra, e.g. pip install 'qrun[all]'"
            ) from None
        _adapters[cache_key] = module.Adapter(device=device, options=options)
    return _adapters[cache_key]


def run_local_job(provider_id: str, device: str, options: dict, seed, tasks: list) -> tuple:
    """Run one job's tasks in this (worker) process: (counts per task, backend metadata)."""
    adapter = adapter_for(provider_id, device, options)
    return adapter.run(tasks, seed), adapter.metadata()
