"""Braket against independent references, through qrun's own code path.

1. Every gate of qelib1.inc (OpenQASM 2) and stdgates.inc (OpenQASM 3) on every ordered
   placement over 4 qubits (24 sampled ones over 5 for c4x), between seeded random layers
   that entangle the qubits before and rotate the measurement basis after (so a wrong phase
   shows in the probabilities). Each circuit goes through qrun's parser, the braket.local
   adapter's translation (`prepare_program` with the adapter's own target) and its outcome
   map (`BraketProgram.counts_by_clbit`); Braket's LocalSimulator gives exact probabilities
   (shots=0 and a probability result type), on braket_sv and braket_dm, compared with
   Qiskit's Statevector to 1e-9.
2. Dynamic circuits (mid-circuit measurement, measure-reset-measure, conditions on one of
   several registers, on loose bits, on whole registers, if/else, for loops) and seeded
   random dynamic circuits, run with shots through the adapters' `run` (braket_sv,
   braket_dm and Aer), against exact distributions from a small branching simulator in this
   file (Qiskit's Statevector per branch).
3. One end-to-end `qrun apply` on Aer and both Braket devices, exported counts checked the
   same way.

Shot-noise bound (parts 2 and 3): every outcome's frequency f over N shots must satisfy
|f - p| <= 5.5 sqrt(p (1 - p) / N) + 2/N, and an outcome of probability 0 must not occur.
A correct simulator breaks it for one outcome with probability below about 1e-7.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random

import numpy as np
import pytest
import qiskit.qasm2
from qiskit.circuit import Clbit, ForLoopOp, IfElseOp, Measure, Reset
from qiskit.circuit.classical import expr, types
from qiskit.circuit.library import XGate
from qiskit.qasm3 import STDGATES_INC_GATES
from qiskit.quantum_info import Statevector

from qrun.providers.base import Task
from qrun.sources.gate import parse_circuit

from .conftest import qrun, write

BRAKET_DEVICES = ("braket_sv", "braket_dm")
# braket_dm says it on every noise-free run; that is what is asked of it here.
pytestmark = pytest.mark.filterwarnings("ignore:You are running a noise-free circuit")
SHOTS = 2000


def _task(fmt: str, text: str, shots: int = SHOTS, params: dict | None = None) -> Task:
    content = text.encode()
    return Task(fmt, content, 0, hashlib.sha256(fmt.encode() + content).hexdigest(),
                params or {}, shots)


def _format(text: str) -> str:
    return "qasm2" if text.lstrip().startswith("OPENQASM 2") else "qasm3"


@pytest.fixture(scope="module")
def braket():
    from qrun.providers.braket_local.adapter import Adapter

    return {device: Adapter(device, {}) for device in BRAKET_DEVICES}


@pytest.fixture(scope="module")
def aer():
    from qrun.providers.aer.adapter import Adapter

    return Adapter("automatic", {})


# -- 1. every standard gate, every placement, exact

QELIB1 = [(g.name, g.num_params, g.num_qubits) for g in qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS
          if g.name != "delay"]
STDGATES = [(g.name, g.num_params, g.num_qubits) for g in STDGATES_INC_GATES]


def _placements(width: int, rng: random.Random) -> list:
    if width <= 4:
        return list(itertools.permutations(range(4), width))
    return rng.sample(list(itertools.permutations(range(5), width)), 24)


def _angle(rng: random.Random) -> str:
    return f"{rng.uniform(-math.pi, math.pi):.6f}"


def _u3(rng: random.Random, qubit: int) -> str:
    return f"u3({_angle(rng)}, {_angle(rng)}, {_angle(rng)}) q[{qubit}];"


def _gate_program(fmt, name, n_params, qubits, n, rng) -> str:
    # Random single-qubit states entangled by a chain of cx, then rotated again: the gate
    # under test acts on a generic entangled state; the random rotations after it choose
    # the measurement basis, so phases it gets wrong change the probabilities.
    prep = [_u3(rng, i) for i in range(n)] + [f"cx q[{i}], q[{i + 1}];" for i in range(n - 1)]
    prep += [_u3(rng, i) for i in range(n)]
    params = ", ".join(_angle(rng) for _ in range(n_params))
    if name == "u0":  # u0(n): an identity n gate lengths long (Qiskit reads it as a delay)
        params = str(rng.randint(1, 3))
    gate = f"{name}({params})" if n_params else name
    body = prep + [f"{gate} {', '.join(f'q[{i}]' for i in qubits)};"]
    body += [_u3(rng, i) for i in range(n)]
    if fmt == "qasm2":
        head = ['OPENQASM 2.0;', 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];"]
        tail = ["measure q -> c;"]
    else:
        head = ['OPENQASM 3.0;', 'include "stdgates.inc";', f"qubit[{n}] q;", f"bit[{n}] c;"]
        tail = ["c = measure q;"]
    return "\n".join(head + body + tail) + "\n"


def _gate_circuits() -> list:
    """(id, format, text) for every gate and placement, with seeded random layers."""
    rng = random.Random(2024)
    cases = []
    for fmt, gates in (("qasm2", QELIB1), ("qasm3", STDGATES)):
        for name, n_params, width in gates:
            for qubits in _placements(width, rng):
                text = _gate_program(fmt, name, n_params, qubits, max(4, width), rng)
                cases.append((f"{fmt}-{name}-{''.join(map(str, qubits))}", fmt, text))
    return cases


GATE_CIRCUITS = _gate_circuits()


def _exact_braket(adapter, task: Task) -> dict:
    """Probability per outcome (qrun's keys) from Braket with shots=0, through the
    adapter's translation and outcome map."""
    from braket.ir.openqasm import Program

    from qrun.providers.braket_local.adapter import prepare_program

    prepared = prepare_program(task, adapter.target, {})
    lines = [line for line in prepared.source.splitlines() if "= measure" not in line]
    slot_qubits = [qubit for _, qubit in prepared.slots]
    targets = sorted(set(slot_qubits))  # Braket's probability lists its targets in this order
    lines.append("#pragma braket result probability " + ", ".join(f"q[{i}]" for i in targets))
    result = adapter.simulator.run(Program(source="\n".join(lines)), shots=0).result()
    outcomes: dict = {}
    for index, p in enumerate(result.values[0]):
        bits = format(index, f"0{len(targets)}b")
        value = dict(zip(targets, bits))
        outcome = "".join(value[q] for q in slot_qubits)  # what Braket reports per slot
        outcomes[outcome] = outcomes.get(outcome, 0.0) + float(p)
    return prepared.counts_by_clbit(slot_qubits, outcomes)


def _exact_qiskit(fmt: str, text: str) -> dict:
    circuit = parse_circuit(fmt, text.encode())
    measured = {circuit.find_bit(i.qubits[0]).index: circuit.find_bit(i.clbits[0]).index
                for i in circuit.data if i.operation.name == "measure"}
    probabilities = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities()
    out: dict = {}
    for index, p in enumerate(probabilities):
        bits = ["0"] * circuit.num_clbits
        for qubit, clbit in measured.items():
            bits[clbit] = str((index >> qubit) & 1)
        key = "".join(bits)
        out[key] = out.get(key, 0.0) + float(p)
    return out


@pytest.mark.parametrize("device", BRAKET_DEVICES)
def test_every_standard_gate_on_every_placement_exactly(braket, device):
    adapter = braket[device]
    wrong = []
    for case_id, fmt, text in GATE_CIRCUITS:
        want = _exact_qiskit(fmt, text)
        got = _exact_braket(adapter, _task(fmt, text))
        distance = max(abs(got.get(k, 0.0) - want.get(k, 0.0)) for k in set(got) | set(want))
        if distance > 1e-9:
            wrong.append(f"{case_id}: {distance:.3g}")
    assert not wrong, f"{len(wrong)} of {len(GATE_CIRCUITS)} differ on {device}: {wrong[:20]}"
    assert len(GATE_CIRCUITS) == 692  # the size the module docstring promises


# -- 2. dynamic circuits, sampled, against an exact branching reference

def exact_distribution(circuit) -> dict:
    """Exact outcome probabilities (qrun's keys) of a dynamic circuit: every measurement
    or reset splits a branch in two (Qiskit's Statevector per branch)."""
    branches = [(1.0, Statevector.from_label("0" * circuit.num_qubits), [0] * circuit.num_clbits)]
    qubit_index = {q: i for i, q in enumerate(circuit.qubits)}
    clbit_index = {b: i for i, b in enumerate(circuit.clbits)}
    for instruction in circuit.data:
        branches = _step(branches, instruction, qubit_index, clbit_index)
    out: dict = {}
    for weight, _, bits in branches:
        key = "".join(map(str, bits))
        out[key] = out.get(key, 0.0) + weight
    return {k: v for k, v in out.items() if v > 1e-12}


def _step(branches, instruction, qubit_index, clbit_index):
    operation = instruction.operation
    qubits = [qubit_index[q] for q in instruction.qubits]
    if operation.name in ("barrier", "delay"):
        return branches
    if isinstance(operation, (Measure, Reset)):
        split = []
        for weight, state, bits in branches:
            for outcome in (0, 1):
                projected, p = _project(state, qubits[0], outcome)
                if p < 1e-14:
                    continue
                new_bits = list(bits)
                if isinstance(operation, Measure):
                    new_bits[clbit_index[instruction.clbits[0]]] = outcome
                elif outcome:  # reset: the |1> branch is flipped back to |0>
                    projected = projected.evolve(XGate(), [qubits[0]])
                split.append((weight * p, projected, new_bits))
        return split
    if isinstance(operation, IfElseOp):
        out = []
        for branch in branches:
            if _holds(operation.condition, branch[2], clbit_index):
                block = operation.blocks[0]
            else:
                block = operation.blocks[1] if len(operation.blocks) > 1 else None
            out += [branch] if block is None else \
                _run_block(block, instruction, [branch], qubit_index, clbit_index)
        return out
    if isinstance(operation, ForLoopOp):
        indexset, parameter, body = operation.params
        for value in indexset:
            bound = body.assign_parameters({parameter: value}) if parameter is not None else body
            branches = _run_block(bound, instruction, branches, qubit_index, clbit_index)
        return branches
    return [(w, s.evolve(operation, qubits), b) for w, s, b in branches]


def _run_block(block, instruction, branches, qubit_index, clbit_index):
    inner_q = {bq: qubit_index[oq] for bq, oq in zip(block.qubits, instruction.qubits)}
    inner_c = {bc: clbit_index[oc] for bc, oc in zip(block.clbits, instruction.clbits)}
    for inner in block.data:
        branches = _step(branches, inner, inner_q, inner_c)
    return branches


def _project(state: Statevector, qubit: int, outcome: int):
    data = state.data.copy()
    keep = ((np.arange(len(data)) >> qubit) & 1) == outcome
    data[~keep] = 0
    p = float(np.vdot(data, data).real)
    return (Statevector(data / math.sqrt(p)) if p > 0 else state), p


def _holds(condition, bits, clbit_index) -> bool:
    if isinstance(condition, tuple):
        condition = expr.lift_legacy_condition(condition)
    return bool(_evaluate(condition, bits, clbit_index))


def _evaluate(node, bits, clbit_index) -> int:
    """The value of a Qiskit classical expression over the branch's bits."""
    if isinstance(node, expr.Var):
        if isinstance(node.var, Clbit):
            return bits[clbit_index[node.var]]
        return sum(bits[clbit_index[b]] << k for k, b in enumerate(node.var))
    if isinstance(node, expr.Value):
        return int(node.value)
    if isinstance(node, expr.Cast):
        value = _evaluate(node.operand, bits, clbit_index)
        return int(bool(value)) if node.type.kind is types.Bool else value
    if isinstance(node, expr.Index):
        return (_evaluate(node.target, bits, clbit_index) >> _evaluate(node.index, bits, clbit_index)) & 1
    if isinstance(node, expr.Unary):
        value = _evaluate(node.operand, bits, clbit_index)
        if node.type.kind is types.Bool:
            return int(not value)
        return ~value & ((1 << node.type.width) - 1)
    a, b = _evaluate(node.left, bits, clbit_index), _evaluate(node.right, bits, clbit_index)
    op = expr.Binary.Op
    return {op.BIT_AND: lambda: a & b, op.BIT_OR: lambda: a | b, op.BIT_XOR: lambda: a ^ b,
            op.LOGIC_AND: lambda: int(bool(a) and bool(b)),
            op.LOGIC_OR: lambda: int(bool(a) or bool(b)),
            op.EQUAL: lambda: int(a == b), op.NOT_EQUAL: lambda: int(a != b),
            op.LESS: lambda: int(a < b), op.GREATER: lambda: int(a > b)}[node.op]()


def within_shot_noise(counts: dict, exact: dict, shots: int) -> list:
    """What breaks the shot-noise bound of the module docstring (empty: nothing)."""
    problems = []
    if sum(counts.values()) != shots:
        problems.append(f"{sum(counts.values())} shots, not {shots}")
    for key in sorted(set(counts) | set(exact)):
        p, f = exact.get(key, 0.0), counts.get(key, 0) / shots
        if p == 0.0 and counts.get(key):
            problems.append(f"{key}: {counts[key]} counts of an impossible outcome")
        elif abs(f - p) > 5.5 * math.sqrt(max(0.0, p * (1 - p)) / shots) + 2 / shots:
            problems.append(f"{key}: frequency {f:.4f}, probability {p:.4f}")
    return problems


DYNAMIC = {
    "measure-reset-measure": """OPENQASM 3.0; include "stdgates.inc"; qubit[1] q; bit[2] c;
        x q[0]; c[0] = measure q[0]; reset q[0]; c[1] = measure q[0];""",
    "measure-twice-flip": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[3] c;
        h q[0]; c[0] = measure q[0]; x q[0]; c[1] = measure q[0]; c[2] = measure q[1];""",
    "mid-circuit-then-entangle": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[4] c;
        h q[0]; c[0] = measure q[0]; cx q[0], q[1]; h q[0]; c[1] = measure q[0];
        ry(0.7) q[2]; cx q[1], q[2]; c[2] = measure q[1]; c[3] = measure q[2];""",
    "condition-on-second-register": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q;
        bit[1] c0; bit[1] c1; bit[1] out; h q[0]; h q[1]; c0[0] = measure q[0];
        c1[0] = measure q[1]; if (c1 == 1) { x q[2]; } out[0] = measure q[2];""",
    "condition-on-first-of-registers": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q;
        bit[1] c0; bit[1] c1; h q[0]; c0[0] = measure q[0]; if (c0 == 1) { x q[1]; }
        c1[0] = measure q[1];""",
    "loose-bits": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit a; bit b; bit d;
        x q[1]; h q[2]; a = measure q[0]; b = measure q[1]; d = measure q[2];""",
    "condition-on-loose-bit": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit a; bit b;
        h q[0]; a = measure q[0]; if (a) { x q[1]; } b = measure q[1];""",
    "register-value": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[2] c; bit[1] r;
        h q[0]; h q[1]; c[0] = measure q[0]; c[1] = measure q[1];
        if (c == 2) { x q[2]; } r[0] = measure q[2];""",
    "if-else": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;
        h q[0]; c[0] = measure q[0]; if (c[0] == true) { x q[1]; } else { h q[1]; }
        c[1] = measure q[1];""",
    "condition-on-unmeasured-bit": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;
        x q[0]; if (c[0] == false) { x q[1]; } c[1] = measure q[1];""",
    "reset-in-if": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;
        h q[0]; x q[1]; c[0] = measure q[0]; if (c[0]) { reset q[1]; } c[1] = measure q[1];""",
    "nested-if": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c;
        h q[0]; h q[1]; c[0] = measure q[0]; c[1] = measure q[1];
        if (c[0]) { if (c[1]) { x q[2]; } } c[2] = measure q[2];""",
    "for-loop": """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;
        for int i in [0:2] { rx(0.4) q[0]; cx q[0], q[1]; }
        c[0] = measure q[0]; c[1] = measure q[1];""",
    "scrambled-bits-and-a-gap": """OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[5] c;
        x q[2]; h q[0]; c[4] = measure q[2]; c[1] = measure q[0]; c[3] = measure q[1];""",
    "qasm2-conditions": """OPENQASM 2.0; include "qelib1.inc"; qreg q[3]; creg a[1]; creg b[2];
        h q[0]; measure q[0] -> a[0]; if (a == 1) x q[1]; h q[2]; measure q[1] -> b[0];
        measure q[2] -> b[1]; if (b == 3) x q[0]; measure q[0] -> a[0];""",
    "controlled-gates-after-measure": """OPENQASM 3.0; include "stdgates.inc"; qubit[4] q;
        bit[4] c; h q[1]; c[0] = measure q[1]; ch q[1], q[3]; crx(1.1) q[1], q[2];
        cu(0.3, 0.2, 0.1, 0.5) q[3], q[0]; c[1] = measure q[3]; c[2] = measure q[2];
        c[3] = measure q[0];""",
}


def _random_dynamic(seed: int) -> str:
    """A seeded random dynamic circuit: gates, mid-circuit measurements, resets, conditions."""
    rng = random.Random(seed)
    n, m = 3, 4
    lines = ['OPENQASM 3.0;', 'include "stdgates.inc";', f"qubit[{n}] q;", f"bit[{m}] c;"]
    gates = ["h q[{a}];", "rx({t}) q[{a}];", "ry({t}) q[{a}];", "cx q[{a}], q[{b}];",
             "crz({t}) q[{a}], q[{b}];", "ch q[{a}], q[{b}];", "cp({t}) q[{a}], q[{b}];"]
    for _ in range(rng.randint(6, 12)):
        kind = rng.random()
        a, b = rng.sample(range(n), 2)
        if kind < 0.45:
            lines.append(rng.choice(gates).format(a=a, b=b, t=_angle(rng)))
        elif kind < 0.7:
            lines.append(f"c[{rng.randrange(m)}] = measure q[{a}];")
        elif kind < 0.8:
            lines.append(f"reset q[{a}];")
        else:
            bit, value = rng.randrange(m), rng.choice(["true", "false"])
            lines.append(f"if (c[{bit}] == {value}) {{ x q[{a}]; ry({_angle(rng)}) q[{b}]; }}")
    lines += [f"c[{i}] = measure q[{i}];" for i in range(n)]
    return "\n".join(lines) + "\n"


RANDOM_DYNAMIC = {f"random-{seed}": _random_dynamic(seed) for seed in range(12)}
ALL_DYNAMIC = {**DYNAMIC, **RANDOM_DYNAMIC}


@pytest.mark.parametrize("name", list(ALL_DYNAMIC))
def test_dynamic_circuits_on_braket_and_aer(braket, aer, name):
    text = ALL_DYNAMIC[name]
    exact = exact_distribution(parse_circuit(_format(text), text.encode()))
    task = _task(_format(text), text)
    for label, adapter in (("aer", aer), *braket.items()):
        [counts] = adapter.run([task], seed=11)
        assert isinstance(counts, dict), f"{label}: {counts}"
        problems = within_shot_noise(counts, exact, SHOTS)
        assert not problems, f"{label} on {name}: {problems}; exact {exact}, counts {counts}"


def test_the_reference_itself_on_known_answers():
    # The branching reference must be right for the tests above to mean anything.
    def exact(name):
        return exact_distribution(parse_circuit(_format(DYNAMIC[name]), DYNAMIC[name].encode()))

    assert exact("measure-reset-measure") == {"10": 1.0}
    assert exact("if-else") == pytest.approx({"11": 0.5, "00": 0.25, "01": 0.25})
    # c == 2 is c[1] set and c[0] clear: then r is flipped.
    assert exact("register-value") == pytest.approx({"000": 0.25, "100": 0.25, "011": 0.25,
                                                     "110": 0.25})
    assert exact("condition-on-unmeasured-bit") == {"01": 1.0}
    assert within_shot_noise({"10": 2000}, {"10": 1.0}, 2000) == []
    assert within_shot_noise({"10": 1999, "00": 1}, {"10": 1.0}, 2000)  # impossible outcome
    assert within_shot_noise({"11": 1200, "00": 800}, {"11": 0.5, "00": 0.5}, 2000)


# -- 3. the whole path once: qrun apply on Aer and both Braket simulators

E2E = ["measure-reset-measure", "condition-on-second-register", "loose-bits",
       "register-value", "controlled-gates-after-measure", "scrambled-bits-and-a-gap"]


def test_qrun_apply_agrees_with_the_exact_reference(tmp_path):
    project = tmp_path / "diff"
    texts = {name: DYNAMIC[name] for name in E2E}
    texts.update({case_id: text for case_id, _, text in GATE_CIRCUITS[::97]})  # a spread of gates
    for name, text in texts.items():
        write(project, f"circuits/{name}.qasm", text)
    manifest = write(project, "diff.yaml", "\n".join([
        "apiVersion: qrun/v1", "kind: Campaign", "metadata: {name: diff}", "spec:",
        f"  shots: {SHOTS}", "  seed: 3", "  circuits:",
        *[f"    - {{name: {name}, source: circuits/{name}.qasm}}" for name in texts],
        "  backends:",
        "    - {name: aer, provider: qiskit.aer}",
        "    - {name: sv, provider: braket.local, device: braket_sv}",
        "    - {name: dm, provider: braket.local, device: braket_dm}"]) + "\n")
    result = qrun("apply", manifest, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in
            qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]
    assert len(rows) == 3 * len(texts)
    for row in rows:
        text = texts[row["circuit"]]
        exact = exact_distribution(parse_circuit(_format(text), text.encode()))
        problems = within_shot_noise(row["counts"], exact, SHOTS)
        assert not problems, f"{row['backend']} on {row['circuit']}: {problems}"
