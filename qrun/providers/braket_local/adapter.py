"""braket.local: OpenQASM programs on the Braket SDK's LocalSimulator.

Every gate-model program (OpenQASM 2 or 3, QPY) is parsed by Qiskit and written anew as
Braket's OpenQASM 3 in the operations the simulator declares (its properties'
``supportedOperations``), without gate modifiers, its classical bits in one register
(braket_program.py says why and how). Braket circuits built by factories run as written
when they use only declared operations and no modifier; a gate with a modifier (which the
simulators compute wrongly) is replaced by declared gates. Their outcomes keep Braket's
order.

Outcomes come back by measured element of that register; ``BraketProgram.counts_by_clbit``
maps them to qrun's bit order (base.py) and refuses a result it cannot map.
"""

from __future__ import annotations

import logging
import warnings

from braket.devices import LocalSimulator
from braket.ir.openqasm import Program as OpenQASMProgram

from qrun.providers.base import Task, run_each, sdk_versions
from qrun.providers.braket_local import program as braket_program
from qrun.sources.gate import parse_braket, parse_circuit

# Braket's interpreter warns on every run of a program with mid-circuit measurements or
# conditions ("may not be supported on QPUs"); on a local simulator they are.
logging.getLogger("braket.default_simulator.openqasm.interpreter").setLevel(logging.ERROR)
# braket_dm says so on every run of a circuit without noise; running one is what was asked.
warnings.filterwarnings("ignore", message="You are running a noise-free circuit")


class Adapter:
    provider = "braket.local"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.simulator = LocalSimulator(device)
        # The local simulators run mid-circuit measurement, reset and if/else (measured on
        # amazon-braket-default-simulator 1.41.2; tests/test_differential.py keeps it true).
        # They declare gate modifiers too, but compute them wrongly: not trusted.
        self.target = braket_program.Device.from_properties(
            device, self.simulator.properties, dynamic=True, trust_modifiers=False)
        self._prepared: dict = {}  # program digest -> BraketProgram

    def run(self, tasks: list[Task], seed: int | None) -> list:
        """Counts (or TaskFailed) for every task, in order, in qrun's bit order."""
        # Braket's local simulators take no seed: their sampling cannot be made repeatable.
        return run_each(tasks, None, lambda task, _seed: self._run_one(task))

    def _run_one(self, task: Task) -> dict:
        prepared = prepare_program(task, self.target, self._prepared)
        program = OpenQASMProgram(source=prepared.source, inputs=prepared.inputs_for(task.params))
        result = self.simulator.run(program, shots=task.shots).result()
        return measure_counts(result, prepared)

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("amazon-braket-sdk", "amazon-braket-default-simulator"))}


def prepare_program(task: Task, target: braket_program.Device, cache: dict):
    """The task's program as a BraketProgram for ``target``, kept in ``cache`` per digest."""
    prepared = cache.get(task.program_digest)
    if prepared is None:
        if task.program_format == "braket":
            text = task.program_content.decode("utf-8")
            circuit = parse_braket(task.program_content)
            source = braket_program.braket_circuit_for(circuit, target, text)
            prepared = braket_program.BraketProgram.as_written(source, circuit.qubit_count)
        else:
            circuit = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            prepared = braket_program.translate(circuit, target)
        cache[task.program_digest] = prepared
    return prepared


def measure_counts(result, prepared) -> dict:
    """Braket's counts (by measured element) rewritten by classical bit, qrun's convention."""
    return prepared.counts_by_clbit(result.measured_qubits, dict(result.measurement_counts))
