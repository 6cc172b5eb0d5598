"""braket.local: OpenQASM programs on the Braket SDK's LocalSimulator.

Braket's simulator reads OpenQASM 3 but knows its own gate names (cnot, phaseshift, ...)
and cannot open `stdgates.inc`. So programs are handed over as OpenQASM 3 with that include
replaced by definitions of the standard gates Braket lacks, written with the modifiers it
understands. OpenQASM 2 and QPY circuits are first written out as OpenQASM 3 by Qiskit.

Braket reports outcomes by measured qubit, in the order of the measure statements; we map
them back to classical bits (qrun's convention, see base.py) using the program's measures.
"""

from __future__ import annotations

import logging
import re

from braket.devices import LocalSimulator
from braket.ir.openqasm import Program as OpenQASMProgram

from ..sources.gate import parse_circuit
from .base import Task, run_each, sdk_versions

# Gates of OpenQASM 3's stdgates.inc that Braket does not define, in terms of ones it does.
# (Gates both define, such as x, h, rx, cz or swap, mean the same in both.)
STDGATES_FOR_BRAKET = """
gate p(l) a { phaseshift(l) a; }
gate phase(l) a { phaseshift(l) a; }
gate sdg a { inv @ s a; }
gate tdg a { inv @ t a; }
gate sx a { h a; s a; h a; }
gate cx a, b { cnot a, b; }
gate CX a, b { cnot a, b; }
gate cp(l) a, b { cphaseshift(l) a, b; }
gate cphase(l) a, b { cphaseshift(l) a, b; }
gate crx(t) a, b { ctrl @ rx(t) a, b; }
gate cry(t) a, b { ctrl @ ry(t) a, b; }
gate crz(t) a, b { ctrl @ rz(t) a, b; }
gate ch a, b { ctrl @ h a, b; }
gate ccx a, b, c { ccnot a, b, c; }
gate cu(t, f, l, g) a, b { phaseshift(g) a; ctrl @ U(t, f, l) a, b; }
gate id a { U(0, 0, 0) a; }
gate u1(l) a { U(0, 0, l) a; }
gate u2(f, l) a { gphase(-(f + l) / 2); U(pi / 2, f, l) a; }
gate u3(t, f, l) a { gphase(-(f + l) / 2); U(t, f, l) a; }
"""

_STDGATES_INCLUDE = re.compile(r'^\s*include\s+"stdgates\.inc"\s*;', re.MULTILINE)


# The gate definitions above use OpenQASM modifiers, about which Braket's interpreter warns
# on every run ("may not be supported on QPUs"); on a local simulator they are.
logging.getLogger("braket.default_simulator.openqasm.interpreter").setLevel(logging.ERROR)


class Adapter:
    provider = "braket.local"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.simulator = LocalSimulator(device)
        self._prepared: dict = {}  # program digest -> (OpenQASM 3 text, qubit -> clbit, clbits)

    def run(self, tasks: list[Task], seed: int | None) -> list:
        """Counts (or TaskFailed) for every task, in order, in qrun's bit order."""
        # Braket's local simulators take no seed: their sampling cannot be made repeatable.
        return run_each(tasks, None, lambda task, _seed: self._run_one(task))

    def _run_one(self, task: Task) -> dict:
        source, clbit_of, num_clbits = prepare_program(task, self._prepared)
        program = OpenQASMProgram(source=source, inputs=task.params or None)
        result = self.simulator.run(program, shots=task.shots).result()
        return measure_counts(result, clbit_of, num_clbits)

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("amazon-braket-sdk", "amazon-braket-default-simulator"))}


def prepare_program(task: Task, cache: dict) -> tuple:
    """(OpenQASM 3 for Braket, qubit -> classical bit, classical bits) of a task's program.

    Braket circuits (from factories) run as written and keep Braket's outcome order: their
    map is None. ``cache`` keeps the answer per program digest.
    """
    prepared = cache.get(task.program_digest)
    if prepared is None:
        if task.program_format == "braket":
            prepared = (task.program_content.decode("utf-8"), None, None)
        else:
            circuit = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            if task.program_format == "qasm3" and len(circuit.cregs) <= 1:
                text = task.program_content.decode("utf-8")  # as written, pragmas and all
            else:
                text = _as_qasm3_one_register(circuit)
            prepared = (for_braket(text), _measure_map(circuit), circuit.num_clbits)
        cache[task.program_digest] = prepared
    return prepared


def measure_counts(result, clbit_of: dict | None, num_clbits: int | None) -> dict:
    """Braket's counts (by measured qubit) rewritten by classical bit, qrun's convention."""
    if clbit_of is None:
        return dict(result.measurement_counts)
    measured = list(result.measured_qubits)
    counts: dict = {}
    for outcome, count in result.measurement_counts.items():
        bits = ["0"] * num_clbits
        for position, qubit in enumerate(measured):
            if qubit in clbit_of:
                bits[clbit_of[qubit]] = outcome[position]
        key = "".join(bits)
        counts[key] = counts.get(key, 0) + count
    return counts


_DEFINITIONS = {line.split()[1].split("(")[0]: line
                for line in STDGATES_FOR_BRAKET.strip().splitlines()}


def for_braket(qasm3: str) -> str:
    """OpenQASM 3 text that Braket's simulator accepts: stdgates.inc spelled out.

    Only the gates the program uses are defined: Braket parses every definition on every
    run, and all of them cost more than a small circuit itself (bench/peer_braket.py).
    """
    match = _STDGATES_INCLUDE.search(qasm3)
    if not match:
        return qasm3
    body = qasm3[match.end():]
    used = "\n".join(line for name, line in _DEFINITIONS.items()
                      if re.search(rf"\b{name}\b", body))
    return qasm3[:match.start()] + used + qasm3[match.end():]


def _as_qasm3_one_register(circuit) -> str:
    """OpenQASM 3 of a Qiskit circuit, its classical bits gathered into one register.

    Braket reports outcomes for a single classical register only; which bit is which is
    restored from the measure map anyway.
    """
    import qiskit.qasm3
    from qiskit import QuantumCircuit

    flat = QuantumCircuit(circuit.num_qubits, circuit.num_clbits)
    flat.compose(circuit, qubits=range(circuit.num_qubits), clbits=range(circuit.num_clbits),
                 inplace=True)
    return qiskit.qasm3.dumps(flat)


def _measure_map(circuit) -> dict:
    """qubit index -> classical bit index of its (last) measurement."""
    mapping = {}
    for instruction in circuit.data:
        if instruction.operation.name == "measure":
            qubit = circuit.find_bit(instruction.qubits[0]).index
            mapping[qubit] = circuit.find_bit(instruction.clbits[0]).index
    return mapping
