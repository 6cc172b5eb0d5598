"""The provider plugin kept in examples/plugins/qrun-cirq, installed by the test command:
registered through the entry-point group, its counts against exact probabilities from
Qiskit's Statevector for every gate it reads on every ordered placement over 3 qubits, and
a campaign through `qrun apply` and `qrun export`."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random

import pytest

from qrun.providers import PROVIDERS
from qrun.providers.base import Task, TaskFailed

from .conftest import qrun, write

pytest.importorskip("qrun_cirq", reason="the test command installs examples/plugins/qrun-cirq")
from qrun_cirq.program import CIRQ_GATES  # noqa: E402

SHOTS = 4000
# (qubits, parameters) of each gate, as qelib1.inc and Qiskit define them; `cu` is Qiskit's
# four-parameter gate, which the plugin decomposes (Cirq's importer reads `cu` as cu3).
ARITY = {"id": (1, 0), "x": (1, 0), "y": (1, 0), "z": (1, 0), "h": (1, 0), "s": (1, 0),
         "sdg": (1, 0), "t": (1, 0), "tdg": (1, 0), "sx": (1, 0), "sxdg": (1, 0), "rx": (1, 1),
         "ry": (1, 1), "rz": (1, 1), "u1": (1, 1), "u2": (1, 2), "u3": (1, 3), "p": (1, 1),
         "u": (1, 3), "cx": (2, 0), "cy": (2, 0), "cz": (2, 0), "ch": (2, 0), "swap": (2, 0),
         "crx": (2, 1), "cry": (2, 1), "crz": (2, 1), "cu1": (2, 1), "cp": (2, 1), "cu3": (2, 3),
         "rzz": (2, 1), "rxx": (2, 1), "csx": (2, 0), "ccx": (3, 0), "cswap": (3, 0), "cu": (2, 4)}
# A state with every amplitude in play, so that a wrong gate or placement shows in the counts.
PREPARE = "ry(1.1) q[0];\nrx(0.6) q[1];\nh q[2];\nrz(0.4) q[2];\ncx q[0], q[2];\nry(2.3) q[1];\n"


def test_every_gate_it_reads_is_listed_here():
    assert set(ARITY) - {"cu"} == CIRQ_GATES


def test_the_plugin_is_registered_by_its_package():
    spec = PROVIDERS["cirq.simulator"]
    assert spec.distribution == "qrun-cirq" and spec.adapter == "qrun_cirq.adapter"


def _placements():
    rng = random.Random(9)
    for gate, (qubits, parameters) in sorted(ARITY.items()):
        for placement in itertools.permutations(range(3), qubits):
            angles = [round(rng.uniform(-math.pi, 2 * math.pi), 6) for _ in range(parameters)]
            yield gate, placement, angles


def _program(gate, placement, angles, measures="measure q -> c;\n", cregs="creg c[3];\n") -> str:
    call = gate + (f"({', '.join(map(str, angles))})" if angles else "")
    operands = ", ".join(f"q[{i}]" for i in placement)
    return (f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\n{cregs}{PREPARE}'
            f"{call} {operands};\n{measures}")


def _task(text: str) -> Task:
    content = text.encode()
    return Task("qasm2", content, 0, hashlib.sha256(content).hexdigest(), {}, SHOTS)


def _exact(text: str, bits_of_qubits: dict, width: int) -> dict:
    """Exact outcome probabilities in qrun's order: bit b = the qubit measured into it."""
    from qiskit import qasm2
    from qiskit.quantum_info import Statevector

    circuit = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    circuit = circuit.remove_final_measurements(inplace=False)
    probabilities = Statevector(circuit).probabilities_dict()  # qubit 0 rightmost
    exact: dict = {}
    for key, p in probabilities.items():
        bits = ["0"] * width
        for qubit, bit in bits_of_qubits.items():
            bits[bit] = key[::-1][qubit]
        outcome = "".join(bits)
        exact[outcome] = exact.get(outcome, 0.0) + p
    return exact


def _within_shot_noise(counts: dict, exact: dict, shots: int) -> list:
    """Outcomes whose frequency is more than 5 standard deviations (plus one count) off."""
    off = []
    for outcome in set(counts) | set(exact):
        p = exact.get(outcome, 0.0)
        seen = counts.get(outcome, 0) / shots
        if abs(seen - p) > 5 * math.sqrt(p * (1 - p) / shots) + 1 / shots:
            off.append((outcome, seen, round(p, 4)))
    return off


@pytest.mark.parametrize("device", ["simulator", "density_matrix"])
def test_every_gate_on_every_placement_matches_the_exact_distribution(device):
    from qrun_cirq.adapter import Adapter

    cases = list(_placements())
    if device == "density_matrix":  # slower per circuit: one placement of each gate
        cases = [case for case in cases if case[1] == tuple(range(len(case[1])))]
    texts = [_program(*case) for case in cases]
    outcomes = Adapter(device, {}).run([_task(text) for text in texts], seed=5)
    wrong = []
    for case, text, counts in zip(cases, texts, outcomes):
        assert not isinstance(counts, TaskFailed), (case, counts)
        assert sum(counts.values()) == SHOTS
        off = _within_shot_noise(counts, _exact(text, {0: 0, 1: 1, 2: 2}, 3), SHOTS)
        if off:
            wrong.append((case, off))
    assert wrong == [], wrong
    assert len(cases) == (159 if device == "simulator" else 36)


@pytest.mark.parametrize("measures, cregs, bits_of_qubits, width", [
    ("measure q[1] -> c[0];\n", "creg c[2];\n", {1: 0}, 2),  # a bit never measured reads 0
    ("measure q[2] -> c[0];\nmeasure q[0] -> c[2];\nmeasure q[1] -> c[1];\n", "creg c[3];\n",
     {2: 0, 0: 2, 1: 1}, 3),  # bits filled out of order
    ("measure q[0] -> b[1];\nmeasure q[1] -> a[0];\nmeasure q[2] -> b[0];\n",
     "creg a[1];\ncreg b[2];\n", {1: 0, 2: 1, 0: 2}, 3),  # two registers, a's bits first
])
def test_measurement_patterns(measures, cregs, bits_of_qubits, width):
    from qrun_cirq.adapter import Adapter

    text = _program("cry", (2, 0), [0.9], measures=measures, cregs=cregs)
    [counts] = Adapter("simulator", {}).run([_task(text)], seed=3)
    assert not isinstance(counts, TaskFailed), counts
    assert _within_shot_noise(counts, _exact(text, bits_of_qubits, width), SHOTS) == []


def test_a_campaign_on_the_plugin(project):
    manifest = write(project, "cirq.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: cirq}
        spec:
          shots: 2000
          seed: 4
          circuits:
            - {name: ghz, source: circuits/ghz.qasm}
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: {values: [0.0, 3.141592653589793]}}}
          backends:
            - {name: cirq, provider: cirq.simulator}
            - {name: dm, provider: cirq.simulator, device: density_matrix, options: {precision: double}}
          targets: [{circuits: [ghz, rot], backends: [cirq, dm]}]
    """)
    applied = qrun("apply", manifest, "--no-progress")
    assert applied.returncode == 0, applied.stderr
    rows = [json.loads(line) for line in qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]
    assert len(rows) == 6
    from importlib.metadata import version

    for row in rows:
        assert row["metadata"]["sdk"]["cirq-core"] == version("cirq-core")
        counts = row["counts"]
        if row["circuit"] == "ghz":  # '000' and '111' only, each 1000 +- 5 sigma (22)
            assert set(counts) == {"000", "111"} and abs(counts["000"] - 1000) < 5 * 22.4
        else:
            flipped = row["params"]["theta"] > 1
            assert counts == ({"1": 2000} if flipped else {"0": 2000})


def test_validation_refuses_what_cirq_would_read_differently(project):
    write(project, "circuits/early.qasm", """\
        OPENQASM 2.0;
        include "qelib1.inc";
        qreg q[1];
        creg c[1];
        if (c == 1) x q[0];
        measure q[0] -> c[0];
    """.replace("        ", ""))
    manifest = write(project, "early.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: early}
        spec:
          circuits: [{name: early, source: circuits/early.qasm}]
          backends: [{name: cirq, provider: cirq.simulator}]
          targets: [{circuits: [early], backends: [cirq]}]
    """)
    checked = qrun("validate", manifest)
    assert checked.returncode == 2
    assert "cirq.simulator cannot run it: the condition on c reads bits not measured before it (c[0])" \
        in checked.stderr
