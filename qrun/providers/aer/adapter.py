"""qiskit.aer: Qiskit circuits on the local Aer simulator."""

from __future__ import annotations

from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer import AerSimulator

from qrun.providers.base import Task, TaskFailed, qiskit_key_to_qrun, sdk_versions
from qrun.sources.gate import parse_circuit


class Adapter:
    provider = "qiskit.aer"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.simulator = AerSimulator(method=device, **options)
        # Read once: Aer builds its target anew on every read, which made per-circuit
        # transpile() calls cost 60 ms each (bench/overhead_aer.py).
        self._supported = set(self.simulator.target.operation_names) | {"barrier"}
        self._pass_manager = None
        self._prepared: dict = {}  # program digest -> circuit ready for the simulator

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
        circuit = self._prepared.get(task.program_digest)
        if circuit is None:
            parsed = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            circuit = self._prepared[task.program_digest] = self._for_simulator(parsed)
        if not task.params:
            return circuit
        by_name = {p.name: p for p in circuit.parameters}
        return circuit.assign_parameters({by_name[k]: v for k, v in task.params.items()})

    def _for_simulator(self, circuit):
        """The circuit as written when Aer runs all its instructions, else transpiled for it.

        Prepared once per program, before binding, so a sweep pays for it once.
        """
        if _instruction_names(circuit) <= self._supported:
            return circuit
        if self._pass_manager is None:
            self._pass_manager = generate_preset_pass_manager(optimization_level=1,
                                                              backend=self.simulator)
        return self._pass_manager.run(circuit)

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("qiskit", "qiskit-aer"))}


def _instruction_names(circuit) -> set:
    """Names of every instruction, inside control-flow blocks too (count_ops stops at the
    block: a gate Aer lacks inside an `if` went untranslated, and Aer refused the batch)."""
    names = set()
    for instruction in circuit.data:
        names.add(instruction.operation.name)
        for block in getattr(instruction.operation, "blocks", ()):
            names |= _instruction_names(block)
    return names


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
