"""Real-world circuits for Braket's differential checks (tests/test_braket_corpus.py).

Two sources:
- QASMBench (pnnl/QASMBench, BSD-style licence kept in tests/data/qasmbench/LICENSE): the
  small and medium OpenQASM 2 benchmarks, as written and as transpiled by their authors; a
  subset is committed under tests/data/qasmbench/, another checkout can be named with
  QRUN_QASMBENCH=<its folder>.
- Qiskit's circuit library, written by qiskit.qasm2.dumps and qiskit.qasm3.dumps at several
  gate-set levels (as built, and transpiled to IBM's, a rotation and a legacy u1/u2/u3 basis,
  one of them routed on a line): QFT, quantum volume, ansatzes with bound parameters,
  Grover, phase estimation, adders, multi-controlled gates, and Qiskit's random circuits with
  mid-circuit measurements, resets and conditions.

Each circuit is checked as tests/test_differential.py checks its own: exact probabilities on
Braket (through the adapter's translation) against Qiskit's Statevector for static circuits;
sampled counts on Braket and on Aer (through the adapters' run) within the shot-noise bound of
an exact branching reference for dynamic ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "qasmbench"


@dataclass(frozen=True)
class Program:
    name: str
    format: str
    text: str


def qasmbench(folder: Path | None = None, max_qubits: int = 12, max_bytes: int = 60_000) -> list:
    """QASMBench programs with at most ``max_qubits`` qubits, from ``folder`` (or the
    committed subset, or $QRUN_QASMBENCH)."""
    folder = folder or Path(os.environ.get("QRUN_QASMBENCH") or DATA)
    programs = []
    for path in sorted(folder.rglob("*.qasm")):
        if path.stat().st_size > max_bytes:
            continue
        text = path.read_text()
        if _qubits(text) <= max_qubits:
            programs.append(Program(f"qasmbench/{path.stem}", "qasm2", text))
    return programs


def _qubits(text: str) -> int:
    import re

    return sum(int(n) for n in re.findall(r"^\s*qreg\s+\w+\s*\[\s*(\d+)\s*\]", text, re.MULTILINE))


def qiskit_library(seed: int = 7, full: bool = False) -> list:
    """Qiskit library circuits, written as OpenQASM 2 and 3 at several gate-set levels."""
    import qiskit.qasm2
    import qiskit.qasm3

    programs = []
    for name, circuit in _library_circuits(seed, full):
        for level, lowered in _levels(circuit, seed, full):
            dynamic = any(i.operation.name in ("if_else", "reset") for i in lowered.data)
            if not dynamic:
                try:
                    programs.append(Program(f"{name}/{level}/qasm2", "qasm2", qiskit.qasm2.dumps(lowered)))
                except Exception:  # a gate OpenQASM 2 cannot name: the OpenQASM 3 one is kept
                    pass
            programs.append(Program(f"{name}/{level}/qasm3", "qasm3", qiskit.qasm3.dumps(lowered)))
    return programs


def _library_circuits(seed: int, full: bool):
    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit.circuit import library as lib
    from qiskit.circuit.random import random_circuit

    rng = np.random.default_rng(seed)

    def measured(circuit):
        out = circuit.copy()
        out.measure_all()
        return out

    def bound(circuit):
        return circuit.assign_parameters(rng.uniform(-np.pi, np.pi, circuit.num_parameters))

    def prepared(n, body):
        circuit = QuantumCircuit(n)
        for q in range(n):
            circuit.ry(float(rng.uniform(0, np.pi)), q)
        circuit.compose(body, inplace=True)
        return measured(circuit)

    sizes = (3, 5, 7) if full else (4,)
    for n in sizes:
        yield f"qft{n}", prepared(n, lib.QFTGate(n).definition)
        yield f"qv{n}", measured(lib.quantum_volume(n, seed=seed))
        yield f"efficient_su2_{n}", measured(bound(lib.efficient_su2(n, reps=2)))
        yield f"real_amplitudes_{n}", measured(bound(lib.real_amplitudes(n, reps=2, entanglement="full")))
        yield f"two_local_crx_{n}", measured(bound(lib.n_local(n, ["ry", "rz"], ["crx"], reps=2)))
        yield f"excitation_preserving_{n}", prepared(n, bound(lib.excitation_preserving(n, reps=1)))
        upper = np.triu(rng.integers(0, 8, (n, n)))
        yield f"iqp_{n}", measured(lib.iqp(upper + np.triu(upper, 1).T))
        yield f"mcx_{n}", prepared(n + 1, lib.MCXGate(n).definition)
        for depth in (3, 6):
            yield (f"random_dynamic_{n}_{depth}",
                   random_circuit(n, depth, max_operands=3, measure=True, conditional=True,
                                  reset=True, seed=int(rng.integers(1 << 30))))
            yield f"random_{n}_{depth}", random_circuit(n, depth, max_operands=4, measure=True,
                                                        seed=int(rng.integers(1 << 30)))
    if full:  # more dynamic circuits: the class where Braket's reports are subtle
        for k in range(24):
            yield (f"random_dynamic_extra_{k}",
                   random_circuit(3 + k % 3, 4 + k % 4, max_operands=2, measure=True,
                                  conditional=True, reset=True, seed=int(rng.integers(1 << 30))))
    oracle = QuantumCircuit(3)
    oracle.ccz(0, 1, 2)
    grover = QuantumCircuit(3)
    grover.h([0, 1, 2])
    grover.compose(lib.grover_operator(oracle), inplace=True)
    yield "grover3", measured(grover)
    yield "phase_estimation", prepared(4, lib.phase_estimation(3, lib.PhaseGate(0.7)))
    yield "cdkm_adder", prepared(6, lib.CDKMRippleCarryAdder(2, kind="full"))
    yield "draper_adder", prepared(4, lib.DraperQFTAdder(2))


def _levels(circuit, seed: int, full: bool):
    """The circuit as built, and lowered to a few gate sets (one routed on a line)."""
    from qiskit import transpile
    from qiskit.transpiler import CouplingMap

    yield "as-built", circuit
    bases = {"ibm": ["rz", "sx", "x", "cx"], "rotations": ["rx", "ry", "rz", "cz"],
             "legacy": ["u1", "u2", "u3", "cx"]}
    for level, basis in bases.items():
        if not full and level != "ibm":
            continue
        try:
            yield level, transpile(circuit, basis_gates=basis + ["measure", "reset", "if_else"],
                                   optimization_level=1, seed_transpiler=seed)
        except Exception:  # a basis the circuit's control flow cannot be written in
            continue
    if full:
        line = CouplingMap.from_line(circuit.num_qubits)
        yield "ibm-routed", transpile(circuit, basis_gates=bases["ibm"] + ["measure", "reset", "if_else"],
                                      coupling_map=line, optimization_level=3, seed_transpiler=seed)


def task_for(program: Program, shots: int):
    from qrun.providers.base import Task

    content = program.text.encode()
    return Task(program.format, content, 0, hashlib.sha256(content).hexdigest(), {}, shots)


def is_dynamic(circuit) -> bool:
    """Mid-circuit measurement, reset or control flow: checked by sampling, not exactly."""
    seen: set = set()
    for instruction in circuit.data:
        if instruction.operation.name in ("if_else", "for_loop", "while_loop", "switch_case", "reset"):
            return True
        if seen.intersection(instruction.qubits):
            return True
        if instruction.operation.name == "measure":
            seen.update(instruction.qubits)
    return False


def problems(program: Program, braket: dict, aer, shots: int = 2000, dm_qubits: int = 6) -> list:
    """What disagrees for one program (empty: nothing). ``braket``: device -> adapter."""
    from qrun.sources.gate import parse_circuit

    from . import test_differential as diff

    circuit = parse_circuit(program.format, program.text.encode())
    devices = [d for d in braket if d == "braket_sv" or circuit.num_qubits <= dm_qubits]
    found = []
    if not is_dynamic(circuit):
        want = diff._exact_qiskit(program.format, program.text)
        for device in devices:
            got = diff._exact_braket(braket[device], task_for(program, 0))
            distance = max(abs(got.get(k, 0.0) - want.get(k, 0.0)) for k in set(got) | set(want))
            if distance > 1e-8:
                found.append(f"{device}: probabilities off by {distance:.3g}")
        return found
    exact = diff.exact_distribution(circuit)
    for label, adapter in [("aer", aer)] + [(d, braket[d]) for d in devices]:
        [counts] = adapter.run([task_for(program, shots)], 5)
        if not isinstance(counts, dict):
            found.append(f"{label}: {counts.error}")
            continue
        found += [f"{label}: {p}" for p in diff.within_shot_noise(counts, exact, shots)]
    return found
