"""Seeded random gate-model circuits for the benchmarks, in two OpenQASM 3 spellings.

One random draw gives the same circuit in both spellings, gate for gate:

  "std"     standard OpenQASM 3: `include "stdgates.inc";`, `cx` (what qrun, Qiskit and most
            tools read; what a user would keep in a repository);
  "braket"  Amazon Braket's dialect: no include (Braket's simulator cannot open stdgates.inc)
            and Braket's gate names (`cnot` for `cx`); h, x, rx, ry, rz are spelled alike.

Every qubit is measured at the end into one register, `c[i] = measure q[i];`, so outcome
character i is qubit i in both qrun's convention and Braket's `measurement_counts`.
"""

from __future__ import annotations

import math
import random

GATES_1Q = ("h", "x")
GATES_ROT = ("rx", "ry", "rz")
TWO_QUBIT = {"std": "cx", "braket": "cnot"}


def random_ops(rng: random.Random, qubits: int, depth: int) -> list[tuple]:
    """`depth` layers, each one gate per qubit (a cx takes two): (name, angle|None, qubits)."""
    ops = []
    for _ in range(depth):
        free = list(range(qubits))
        rng.shuffle(free)
        while free:
            q = free.pop()
            kind = rng.random()
            if kind < 0.3 and free:
                ops.append(("cx", None, (q, free.pop())))
            elif kind < 0.55:
                ops.append((rng.choice(GATES_1Q), None, (q,)))
            else:
                ops.append((rng.choice(GATES_ROT), round(rng.uniform(-math.pi, math.pi), 6), (q,)))
    return ops


def qasm2(ops: list[tuple], qubits: int) -> str:
    """OpenQASM 2 text of ``ops``, every qubit measured into one register (`measure q -> c;`)."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{qubits}];", f"creg c[{qubits}];"]
    for name, angle, wires in ops:
        gate = f"{name}({angle:.6f})" if angle is not None else name
        lines.append(f"{gate} " + ",".join(f"q[{w}]" for w in wires) + ";")
    lines.append("measure q -> c;")
    return "\n".join(lines) + "\n"


def qasm3(ops: list[tuple], qubits: int, dialect: str = "std") -> str:
    """OpenQASM 3 text of ``ops`` in ``dialect`` ("std" or "braket")."""
    lines = ["OPENQASM 3.0;"]
    if dialect == "std":
        lines.append('include "stdgates.inc";')
    lines += [f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for name, angle, wires in ops:
        if name == "cx":
            name = TWO_QUBIT[dialect]
        gate = f"{name}({angle:.6f})" if angle is not None else name
        lines.append(f"{gate} " + ", ".join(f"q[{w}]" for w in wires) + ";")
    lines += [f"c[{i}] = measure q[{i}];" for i in range(qubits)]
    return "\n".join(lines) + "\n"


def circuits(count: int, qubits: int, depth: int, seed: int) -> list[list[tuple]]:
    rng = random.Random(seed)
    return [random_ops(rng, qubits, depth) for _ in range(count)]


def total_variation(a: dict, b: dict) -> float:
    """Total variation distance between two count dictionaries (as distributions)."""
    na, nb = sum(a.values()) or 1, sum(b.values()) or 1
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))
