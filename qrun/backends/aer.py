"""qiskit.aer: Qiskit circuits on the local Aer simulator."""

from __future__ import annotations

from qiskit import transpile
from qiskit_aer import AerSimulator

from ..sources.gate import parse_circuit
from .base import Task, TaskFailed, qiskit_key_to_qrun, sdk_versions


class Adapter:
    provider = "qiskit.aer"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.simulator = AerSimulator(method=device, **options)
        self._transpiled: dict = {}  # program digest -> circuit transpiled for the simulator

    def run(self, tasks: list[Task], seed: int | None) -> list:
        """Counts (or TaskFailed) for every task, in order, in qrun's bit order."""
        outcomes: list = [None] * len(tasks)
        circuits: dict = {}
        for i, task in enumerate(tasks):
            try:
                circuits[i] = self._bound(task)
            except Exception as exc:  # this circuit only: the others still run
                outcomes[i] = TaskFailed.of(exc)
        # One Aer call per shot count: Aer takes a single `shots` for a whole batch.
        for shots, positions in _group_by_shots(tasks, circuits).items():
            options = {"shots": shots}
            if seed is not None:
                options["seed_simulator"] = seed
            result = self.simulator.run([circuits[i] for i in positions], **options).result()
            for n, i in enumerate(positions):
                outcomes[i] = _counts(result, n)
        return outcomes

    def _bound(self, task: Task):
        circuit = self._transpiled.get(task.program_digest)
        if circuit is None:
            parsed = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            # Transpiled once per program, before binding, so a sweep pays for it once.
            circuit = transpile(parsed, self.simulator)
            self._transpiled[task.program_digest] = circuit
        if not task.params:
            return circuit
        by_name = {p.name: p for p in circuit.parameters}
        return circuit.assign_parameters({by_name[k]: v for k, v in task.params.items()})

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("qiskit", "qiskit-aer"))}


def _group_by_shots(tasks: list[Task], runnable: dict) -> dict:
    groups: dict = {}
    for i in runnable:
        groups.setdefault(tasks[i].shots, []).append(i)
    return groups


def _counts(result, n: int):
    experiment = result.results[n]
    if not experiment.success:
        return TaskFailed(f"Aer: {experiment.status}")
    return {qiskit_key_to_qrun(k): v for k, v in result.get_counts(n).items()}
