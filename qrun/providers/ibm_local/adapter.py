"""qiskit.ibm-local: qiskit-ibm-runtime's local testing mode on its fake backends.

A fake backend (fake_manila, fake_kyiv, ...) carries a real device's coupling map, basis
gates and noise; circuits are transpiled for it and sampled with the runtime's current
sampler (``executor_sampler.Sampler``) in local mode, which simulates that noise with Aer.
"""

from __future__ import annotations

from functools import lru_cache

from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import fake_provider
from qiskit_ibm_runtime.executor_sampler import Sampler
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

from qrun.providers.base import Task, TaskFailed, qiskit_key_to_qrun, sdk_versions
from qrun.providers.spec import Limits
from qrun.sources.gate import parse_circuit


@lru_cache(maxsize=1)
def _fake_backends() -> dict:
    """name -> class of every fake backend; classes name themselves in ``backend_name``."""
    found = {}
    for attribute in dir(fake_provider):
        candidate = getattr(fake_provider, attribute)
        if isinstance(candidate, type) and issubclass(candidate, FakeBackendV2):
            name = getattr(candidate, "backend_name", None)
            if isinstance(name, str):
                found[name] = candidate
    return found


def known_devices() -> list:
    return sorted(_fake_backends())


def device_limits(device: str) -> Limits:
    """The fake backend's own limits: its qubits, and its configuration's shot and circuit caps."""
    backend = _fake_backends()[device]()
    configuration = backend.configuration()
    return Limits(max_qubits=backend.num_qubits,
                  max_shots_per_job=getattr(configuration, "max_shots", None),
                  max_experiments_per_job=getattr(configuration, "max_experiments", None))


class Adapter:
    provider = "qiskit.ibm-local"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.backend = _fake_backends()[device]()
        self.optimization_level = options.get("optimization_level", 1)
        self._isa: dict = {}  # (program digest, seed) -> circuit transpiled for the backend

    def run(self, tasks: list[Task], seed: int | None) -> list:
        outcomes: list = [None] * len(tasks)
        pubs, positions = [], []
        for i, task in enumerate(tasks):
            try:
                pubs.append((self._bound(task, seed), None, task.shots))
                positions.append(i)
            except Exception as exc:  # this circuit only: the others still run
                outcomes[i] = TaskFailed.of(exc)
        if pubs:
            sampler = Sampler(mode=self.backend)
            if seed is not None:
                sampler.options.simulator.seed_simulator = seed
            result = sampler.run(pubs).result()
            for i, pub_result in zip(positions, result):
                counts = pub_result.join_data().get_counts()
                outcomes[i] = {qiskit_key_to_qrun(k): v for k, v in counts.items()}
        return outcomes

    def _bound(self, task: Task, seed: int | None):
        key = (task.program_digest, seed)
        circuit = self._isa.get(key)
        if circuit is None:
            parsed = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            manager = generate_preset_pass_manager(optimization_level=self.optimization_level,
                                                   backend=self.backend, seed_transpiler=seed)
            circuit = self._isa[key] = manager.run(parsed)
        if not task.params:
            return circuit
        by_name = {p.name: p for p in circuit.parameters}
        return circuit.assign_parameters({by_name[k]: v for k, v in task.params.items()})

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "noise": f"{self.device} noise model (local testing mode)",
                "sdk": sdk_versions(("qiskit", "qiskit-ibm-runtime", "qiskit-aer"))}
