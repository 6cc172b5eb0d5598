"""cirq.simulator's adapter: qrun's tasks run on Cirq's simulators. Only this module imports Cirq.

qrun imports it lazily, in the process that runs a job (a worker), and builds one Adapter per
backend there. The contract (qrun.providers.base): ``run(tasks, seed)`` returns, per task,
its counts in qrun's bit order (character i of an outcome is classical bit i) or a
TaskFailed for a task that failed on its own; ``metadata()`` is stored with every result.
"""

from __future__ import annotations

import cirq
import numpy as np
from cirq.contrib.qasm_import import circuit_from_qasm

from qrun.providers.base import Task, run_each, sdk_versions

from .program import bind, for_cirq, parse

SIMULATORS = {"simulator": cirq.Simulator, "density_matrix": cirq.DensityMatrixSimulator}
PRECISIONS = {"single": np.complex64, "double": np.complex128}


class Adapter:
    provider = "cirq.simulator"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.simulator_class = SIMULATORS[device]
        precision = options.get("precision", "single")  # Cirq's own default
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.dtype = PRECISIONS[precision]
        self._parsed: dict = {}  # program digest -> Qiskit circuit: a sweep parses once

    def run(self, tasks: list[Task], seed: int | None) -> list:
        """Counts (or TaskFailed) for every task, in order; each task is seeded on its own."""
        return run_each(tasks, seed, self._run_one)

    def _run_one(self, task: Task, seed: int | None) -> dict:
        program = for_cirq(bind(self._parse(task), task.params))
        circuit = circuit_from_qasm(program.qasm)
        if not cirq.is_measurement(circuit):  # Cirq refuses to sample nothing; all bits stay 0
            return {"0" * len(program.keys): task.shots}
        simulator = self.simulator_class(dtype=self.dtype, seed=seed)
        result = simulator.run(circuit, repetitions=task.shots)
        return counts(result.records, program.keys, task.shots)

    def _parse(self, task: Task):
        if task.program_digest not in self._parsed:
            self._parsed[task.program_digest] = parse(task.program_format, task.program_content,
                                                      index=task.program_item)
        return self._parsed[task.program_digest]

    def metadata(self) -> dict:
        # Qiskit too: it parses the program and writes the OpenQASM 2 that Cirq reads.
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("cirq-core", "qiskit"))}


def counts(records: dict, keys: tuple, shots: int) -> dict:
    """Outcome strings in qrun's order from Cirq's records (key -> shots x times x qubits).

    A bit measured several times keeps its last value, as in OpenQASM; a bit never measured
    reads 0.
    """
    columns = [records[key][:, -1, 0] if key in records else np.zeros(shots, dtype=np.int8)
               for key in keys]
    outcomes, numbers = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    return {"".join(map(str, row)): int(n) for row, n in zip(outcomes.tolist(), numbers)}
