"""Translation of gate-model programs for Braket devices (qrun/backends/braket_program.py)."""

from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import pytest
from qiskit.quantum_info import Operator

from qrun.providers.base import Task
from qrun.providers.braket_local import program as braket_program
from qrun.sources.gate import parse_circuit

from .conftest import qrun, write

pytestmark = pytest.mark.filterwarnings("ignore:You are running a noise-free circuit")


def _braket_gate_classes() -> dict:
    import braket.circuits.gates as gates
    from braket.circuits import Gate

    classes = {}
    for _, cls in inspect.getmembers(gates, inspect.isclass):
        if issubclass(cls, Gate) and cls is not Gate:
            try:
                name = cls._qasm_name.fget(None)  # a property that needs no instance
            except NotImplementedError:  # abstract bases
                continue
            classes[name] = cls
    return classes


@pytest.mark.parametrize("qiskit_class", list(braket_program.BRAKET_NAME), ids=lambda c: c.__name__)
def test_every_gate_qrun_writes_is_the_same_gate_in_braket(qiskit_class):
    # Same matrix, parameters in the same order, up to a global phase (nothing qrun writes
    # is controlled by a modifier, so a global phase is not observable).
    braket_name = braket_program.BRAKET_NAME[qiskit_class]
    braket_class = _braket_gate_classes()[braket_name]
    count = len(inspect.signature(braket_class.__init__).parameters) - 1
    angles = [0.3 + 0.71 * i for i in range(count)]
    qiskit_gate = qiskit_class(*angles)
    assert braket_program.QISKIT_NAME[braket_name] == qiskit_gate.name
    ours = Operator(qiskit_gate).reverse_qargs().data  # Qiskit orders qubits the other way
    theirs = braket_class(*angles).to_matrix()
    phase = theirs.flat[np.argmax(np.abs(theirs))] / ours.flat[np.argmax(np.abs(theirs))]
    assert abs(abs(phase) - 1) < 1e-12
    assert np.allclose(theirs, phase * ours, atol=1e-12), braket_name


def test_the_local_simulators_declarations_are_copied_faithfully():
    from braket.devices import LocalSimulator

    for name, device in braket_program.LOCAL_DEVICES.items():
        properties = LocalSimulator(name).properties
        action = properties.action["braket.ir.openqasm.program"]
        assert set(action.supportedOperations) == device.operations, name
        assert properties.paradigm.qubitCount == device.max_qubits


@pytest.mark.parametrize("device", ["braket_sv", "braket_dm"])
def test_how_braket_reports_outcomes(device):
    # The facts the outcome map rests on (amazon-braket-default-simulator 1.41.2): one
    # character per measured element of the register, in element order, not in the order of
    # the measure statements; a qubit measured twice is listed twice; a bit written twice
    # once, with the qubit measured last.
    from braket.devices import LocalSimulator
    from braket.ir.openqasm import Program

    simulator = LocalSimulator(device)

    def run(body, bits):
        source = f"OPENQASM 3.0; qubit[3] q; bit[{bits}] c; {body}"
        result = simulator.run(Program(source=source), shots=20).result()
        return list(result.measured_qubits), dict(result.measurement_counts)

    assert run("x q[2]; c[3] = measure q[2]; c[1] = measure q[0];", 4) == ([0, 2], {"01": 20})
    assert run("x q[0]; c[0] = measure q[0]; reset q[0]; c[1] = measure q[0];", 2) == \
        ([0, 0], {"10": 20})
    assert run("x q[1]; c[0] = measure q[0]; c[0] = measure q[1];", 1) == ([1], {"1": 20})


def _local(device="braket_sv"):
    return braket_program.LOCAL_DEVICES[device]


def _translate(text: str, device=None, fmt="qasm3"):
    return braket_program.translate(parse_circuit(fmt, text.encode()), device or _local())


def test_registers_and_loose_bits_become_one_register_in_qrun_order():
    program = _translate("""
        OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[1] a; bit b; bit[2] d;
        h q[0]; a[0] = measure q[0]; if (a == 1) { x q[1]; } b = measure q[1];
        d[1] = measure q[2];""")
    assert "bit[4] c" in program.source and "if ((c[0] == 1))" in program.source
    assert program.slots == ((0, 0), (1, 1), (3, 2))
    # Braket lists c[0], c[1], c[3]: their outcomes go back to bits 0, 1 and 3.
    assert program.counts_by_clbit([0, 1, 2], {"111": 5, "001": 3}) == {"1101": 5, "0001": 3}


def test_an_unexpected_report_is_refused_not_guessed():
    program = _translate('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
                         'x q[0]; c[0] = measure q[0]; c[1] = measure q[1];')
    with pytest.raises(RuntimeError, match="refusing to guess"):
        program.counts_by_clbit([1, 0], {"10": 4})


def test_final_measurements_are_written_in_bit_order():
    program = _translate('OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; '
                         'c[2] = measure q[0]; c[0] = measure q[1]; h q[2]; c[1] = measure q[2];')
    lines = [line for line in program.source.splitlines() if "measure" in line]
    assert lines == ["c[0] = measure q[1];", "c[1] = measure q[2];", "c[2] = measure q[0];"]


def test_no_gate_modifier_is_ever_written():
    program = _translate("""
        OPENQASM 3.0; include "stdgates.inc"; qubit[4] q; bit[4] c;
        ctrl @ x q[1], q[3]; negctrl @ h q[0], q[2]; inv @ s q[1]; pow(0.5) @ x q[0];
        ctrl(2) @ rz(0.3) q[0], q[1], q[2]; crx(0.2) q[0], q[1]; cu(1, 2, 3, 4) q[2], q[3];
        c = measure q;""")
    assert "@" not in program.source
    words = {line.split()[0].split("(")[0] for line in program.source.splitlines()[3:]}
    assert words <= _local().operations | {"c[0]", "c[1]", "c[2]", "c[3]"}


def test_only_declared_operations_are_used():
    # A device that declares a small set gets everything written in that set.
    small = braket_program.Device("small", frozenset({"cnot", "rz", "rx", "h"}))
    program = _translate('OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; '
                         'ccx q[0], q[1], q[2]; cswap q[2], q[0], q[1]; u3(1, 2, 3) q[0]; '
                         'c = measure q;', small)
    names = {line.split()[0].split("(")[0] for line in program.source.splitlines()
             if not line.startswith(("OPENQASM", "qubit", "bit", "c["))}
    assert names <= {"cnot", "rz", "rx", "h"}
    none = braket_program.Device("gpi-only", frozenset({"gpi", "gpi2", "ms"}))
    with pytest.raises(braket_program.Untranslatable, match="declares none of the gates"):
        _translate('OPENQASM 3.0; include "stdgates.inc"; qubit[1] q; bit[1] c; h q[0]; '
                   'c[0] = measure q[0];', none)


def test_a_users_gate_that_takes_a_standard_name_is_expanded():
    # Without stdgates.inc, `cx` here is the user's own gate (it is a CZ): qrun must not
    # write it as Braket's cnot.
    from qrun.providers.braket_local.adapter import Adapter

    text = """OPENQASM 3.0; gate cx a, b { U(pi / 2, 0, pi) b; U(0, 0, pi) a; U(pi / 2, 0, pi) b; }
        qubit[2] q; bit[2] c; U(pi, 0, pi) q[0]; cx q[0], q[1];
        c[0] = measure q[0]; c[1] = measure q[1];"""
    program = _translate(text)
    assert "cnot" not in program.source
    content = text.encode()
    [counts] = Adapter("braket_sv", {}).run(
        [Task("qasm3", content, 0, hashlib.sha256(content).hexdigest(), {}, 100)], None)
    assert counts == {"10": 100}  # a CNOT would have given 11


@pytest.mark.parametrize("text, words", [
    ('h q[0]; c[0] = measure q[0]; if (c[0]) { c[1] = measure q[1]; }', "inside an if block"),
    ('h q[0]; c[0] = measure q[0]; while (c[0]) { x q[0]; c[0] = measure q[0]; }', "while loop"),
])
def test_what_braket_computes_wrongly_is_refused(text, words):
    head = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    with pytest.raises(braket_program.Untranslatable, match=words):
        _translate(head + text)


def test_conditions_braket_cannot_evaluate_are_refused():
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.classical import expr

    c = ClassicalRegister(2, "c")
    circuit = QuantumCircuit(QuantumRegister(2, "q"), c)
    circuit.h(0)
    circuit.measure(0, 0)
    with circuit.if_test(expr.less(c, 2)):
        circuit.x(1)
    circuit.measure(1, 1)
    with pytest.raises(braket_program.Untranslatable, match="only bit and register equality"):
        braket_program.translate(circuit, _local())


@pytest.mark.parametrize("text, words", [
    ('x q[0]; c[0] = measure q[0]; reset q[0]; c[1] = measure q[0];', "reset"),
    ('h q[0]; c[0] = measure q[0]; h q[0]; c[1] = measure q[0];', "mid-circuit"),
    ('h q[0]; c[0] = measure q[0]; if (c[0]) { x q[1]; } c[1] = measure q[1];', "if/else"),
])
def test_cloud_devices_refuse_dynamic_circuits(text, words):
    cloud = braket_program.Device("arn:sv1", frozenset({"cnot", "h", "x", "rz", "rx"}))
    head = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    with pytest.raises(braket_program.Untranslatable, match=words):
        _translate(head + text, cloud)


def test_parameters_become_inputs_and_keep_their_values():
    from qrun.providers.braket_local.adapter import Adapter

    text = ('OPENQASM 3.0; include "stdgates.inc"; input float c; input float theta; '
            'qubit[2] q; bit[2] c2; rx(c) q[0]; crx(2 * theta + 0.5) q[0], q[1]; '
            'c2[0] = measure q[0]; c2[1] = measure q[1];')
    program = _translate(text)
    inputs = dict(program.inputs)
    assert inputs["theta"] == "theta" and inputs["c"] != "c"  # `c` is the register's name
    content = text.encode()
    task = Task("qasm3", content, 0, hashlib.sha256(content).hexdigest(),
                {"c": np.pi, "theta": (np.pi - 0.5) / 2}, 200)
    [counts] = Adapter("braket_sv", {}).run([task], None)
    assert counts == {"11": 200}  # rx(pi) sets q0; crx(pi) then sets q1


def test_parameters_of_any_name_and_unwritable_expressions():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter, ParameterVector

    from qrun.providers.braket_local.adapter import Adapter

    theta = ParameterVector("θ", 2)
    circuit = QuantumCircuit(2, 2)
    circuit.crx(theta[0], 0, 1)
    circuit.ry(2 * theta[1] + 0.1, 1)
    circuit.measure([0, 1], [0, 1])
    program = braket_program.translate(circuit, _local())
    assert dict(program.inputs) == {"θ[0]": "input_0", "θ[1]": "input_1"}
    assert "input float input_0;" in program.source and "θ" not in program.source
    odd = QuantumCircuit(1, 1)
    odd.rx(abs(Parameter("t")), 0)
    odd.measure(0, 0)
    with pytest.raises(braket_program.Untranslatable, match="cannot be written for Braket"):
        braket_program.translate(odd, _local())
    # Through the adapter, QPY: the values reach Braket under the inputs' names.
    import io

    import qiskit.qpy

    buffer = io.BytesIO()
    qiskit.qpy.dump(circuit, buffer)
    content = buffer.getvalue()
    task = Task("qpy", content, 0, hashlib.sha256(content).hexdigest(),
                {"θ[0]": np.pi, "θ[1]": (np.pi - 0.1) / 2}, 100)
    [counts] = Adapter("braket_sv", {}).run([task], None)
    assert counts == {"01": 100}  # q0 stays 0, so crx does nothing; ry(pi) sets q1


@pytest.mark.parametrize("device", ["braket_sv", "braket_dm"])
def test_braket_circuits_with_modifiers_are_rewritten_without_them(device):
    # Every ordered pair of 4 qubits, controlled and powered gates as the Braket SDK writes
    # them (`ctrl @`, `negctrl @`, `pow(..) @`): rewritten in declared gates, and Braket's
    # exact probabilities on the rewritten program equal the SDK's own matrix algebra
    # (Circuit.to_unitary), which the simulator does not use.
    import itertools

    from braket.circuits import Circuit
    from braket.ir.openqasm import Program

    from qrun.providers.braket_local.adapter import Adapter

    adapter = Adapter(device, {})
    as_written = Circuit().h(0).cnot(0, 1).cphaseshift(0, 1, 0.3)
    assert braket_program.braket_circuit_for(as_written, adapter.target, "TEXT") == "TEXT"
    wrong = []
    for a, b in itertools.permutations(range(4), 2):
        circuit = Circuit()
        for q in range(4):
            circuit.ry(q, 0.4 + 0.3 * q).rz(q, 0.2 * q)
        circuit.x(b, control=a).ry(a, 0.7, control=b).h(b, control=a, control_state=[0])
        circuit.rx(a, 0.9, power=0.5).phaseshift(b, 1.1, control=a, power=-1)
        source = braket_program.braket_circuit_for(circuit, adapter.target, circuit.to_ir().source)
        assert "@" not in source
        lines = [line for line in source.splitlines() if "measure" not in line]
        lines.append("#pragma braket result probability q[0], q[1], q[2], q[3]")
        got = adapter.simulator.run(Program(source="\n".join(lines)), shots=0).result().values[0]
        want = np.abs(circuit.to_unitary()[:, 0]) ** 2
        if not np.allclose(got, want, atol=1e-9):
            wrong.append((a, b))
    assert not wrong, wrong


def test_braket_circuits_refused_when_they_cannot_be_rewritten():
    from braket.circuits import Circuit, FreeParameter

    with pytest.raises(braket_program.Untranslatable, match="free parameter"):
        braket_program.check_braket_circuit(Circuit().rx(1, FreeParameter("t"), control=0), _local())
    with pytest.raises(braket_program.Untranslatable, match="noise channel 'bit_flip'"):
        braket_program.check_braket_circuit(Circuit().h(0).bit_flip(0, 0.1), _local("braket_sv"))
    braket_program.check_braket_circuit(Circuit().h(0).bit_flip(0, 0.1), _local("braket_dm"))


def test_validation_refuses_what_cannot_run_and_says_why(project):
    write(project, "circuits/measure-in-if.qasm", """
        OPENQASM 3.0;
        include "stdgates.inc";
        qubit[2] q;
        bit[2] c;
        h q[0];
        c[0] = measure q[0];
        if (c[0]) { c[1] = measure q[1]; }
    """)
    write(project, "circuits/reset.qasm", """
        OPENQASM 3.0;
        include "stdgates.inc";
        qubit[1] q;
        bit[2] c;
        x q[0];
        c[0] = measure q[0];
        reset q[0];
        c[1] = measure q[0];
    """)
    manifest = write(project, "refuse.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: refuse}
        spec:
          shots: 10
          circuits:
            - {name: measure-in-if, source: circuits/measure-in-if.qasm}
            - {name: reset, source: circuits/reset.qasm}
            - {name: ghz, source: circuits/ghz.qasm}
          backends:
            - {name: sv, provider: braket.local}
            - name: sv1
              provider: braket.aws
              device: arn:aws:braket:::device/quantum-simulator/amazon/sv1
              options: {endpoint: "http://127.0.0.1:9"}
    """)
    result = qrun("validate", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    problems = result.stderr
    assert ("spec.backends[0]: circuits/measure-in-if.qasm: a measurement inside an if block is "
            "not computed correctly") in problems
    assert ("spec.backends[1]: circuits/reset.qasm: arn:aws:braket:::device/quantum-simulator/"
            "amazon/sv1 does not run reset") in problems
    assert "ghz" not in problems and "3 problems found" in problems  # measure-in-if on both


def test_a_qasm3_sweep_runs_on_braket_as_on_aer(project):
    manifest = write(project, "sweep.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: sweep}
        spec:
          shots: 300
          circuits:
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.0, 3.141592653589793]}}
          backends: [{name: aer, provider: qiskit.aer}, {name: sv, provider: braket.local}]
    """)
    assert qrun("apply", manifest).returncode == 0
    rows = [json.loads(x) for x in qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]
    by = {(r["backend"], r["params"]["theta"]): r["counts"] for r in rows}
    for backend in ("aer", "sv"):
        assert by[(backend, 0.0)] == {"0": 300} and by[(backend, 3.141592653589793)] == {"1": 300}
