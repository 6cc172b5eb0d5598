"""Qiskit circuits written as Braket OpenQASM 3, in the operations a Braket device declares.

Every gate-model program for a Braket device (OpenQASM 2 or 3, QPY) is parsed by Qiskit, its
gates are translated by Qiskit's basis translator into gates that are, one for one, operations
the device declares (its properties' ``supportedOperations``), and the result is written out
as Braket's OpenQASM 3 with those names (``cnot``, ``phaseshift``, ``si``, ...). Nothing is
written with a gate modifier (``ctrl @``, ``inv @``, ``pow @``), even where a device declares
them: Braket's local state-vector simulator computes ``ctrl @`` wrongly on some qubit pairs
(``x q[1]; ctrl @ x q[1], q[3];`` on four qubits gives 0100), its density-matrix simulator
ignores modifiers altogether (amazon-braket-default-simulator-python#319), and SV1 refuses
``ctrl`` (amazon-braket-sdk-python#683).

Classical bits: Braket reports outcomes of one classical register only, so all of a
circuit's bits (every register, loose bits too) become one register ``c`` in qrun's bit
order (bit i of the circuit is ``c[i]``), and conditions are rewritten in its bits.

How Braket reports outcomes (measured with amazon-braket-default-simulator 1.41.2): one
character per *measured element* of the register, in element order (``c[0]``, ``c[1]``, ...;
elements never measured are left out), with ``measured_qubits`` naming the qubit measured
last into each. A qubit measured twice appears twice. :class:`BraketProgram.slots` records,
per position, the classical bit and the qubit qrun expects there; ``counts_by_clbit``
refuses a result whose measured qubits differ rather than guess.

Dynamic circuits (mid-circuit measurement, reset, ``if``/``else``, ``for``) run on the local
simulators. Conditions are written in the forms Braket's interpreter evaluates right (bit
comparisons joined by ``&&``, ``||``, ``!``): it refuses ``!`` or ``^`` on bits, gets
``bool(c[0]) && bool(c[1])`` wrong and fails on ``c == 3`` for a register, which qrun writes
bit by bit. Refused, because Braket computes them differently from OpenQASM's meaning or
not at all: a measurement inside an ``if`` (Braket then reports the qubit's final state for
the bit, not the bit's earlier value), register comparisons other than equality,
``while``, ``switch`` and classical variables. Cloud devices run no dynamic feature.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.circuit import (
    BoxOp,
    ControlledGate,
    ForLoopOp,
    Gate,
    IfElseOp,
    Measure,
    Parameter,
    ParameterExpression,
    Reset,
)
from qiskit.circuit import library as lib
from qiskit.circuit.classical import expr, types

from qrun.providers.braket_local.check import BEYOND_STRAIGHT_LINE


class Untranslatable(ValueError):
    """A program that cannot run correctly on the Braket device: the message says why."""


# Qiskit gate class -> the Braket operation that is the same gate, parameters in the same
# order and meaning (tests/test_braket_program.py compares their matrices).
BRAKET_NAME = {
    lib.IGate: "i", lib.XGate: "x", lib.YGate: "y", lib.ZGate: "z", lib.HGate: "h",
    lib.SGate: "s", lib.SdgGate: "si", lib.TGate: "t", lib.TdgGate: "ti",
    lib.SXGate: "v", lib.SXdgGate: "vi",
    lib.RXGate: "rx", lib.RYGate: "ry", lib.RZGate: "rz", lib.PhaseGate: "phaseshift",
    lib.UGate: "U", lib.RGate: "prx",
    lib.CXGate: "cnot", lib.CYGate: "cy", lib.CZGate: "cz", lib.CPhaseGate: "cphaseshift",
    lib.CSXGate: "cv", lib.SwapGate: "swap", lib.iSwapGate: "iswap", lib.ECRGate: "ecr",
    lib.RXXGate: "xx", lib.RYYGate: "yy", lib.RZZGate: "zz",
    lib.CCXGate: "ccnot", lib.CSwapGate: "cswap",
}


_PARAMETER_COUNT = {"rx": 1, "ry": 1, "rz": 1, "phaseshift": 1, "U": 3, "prx": 2,
                    "cphaseshift": 1, "xx": 1, "yy": 1, "zz": 1}
# Braket operation name -> Qiskit gate name (the names Qiskit's translator works with).
QISKIT_NAME = {braket: cls(*[0.0] * _PARAMETER_COUNT.get(braket, 0)).name
               for cls, braket in BRAKET_NAME.items()}

# Instructions with nothing to compute on an ideal simulator (and that SV1 refuses).
_DROPPED = {"barrier", "delay"}
# Names OpenQASM 3 (and Braket's interpreter) know in parameter expressions.
_EXPRESSION_WORDS = {"pi", "sin", "cos", "tan", "exp", "log", "sqrt"}
_EXPRESSION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9.]+(?:e[-+]?[0-9]+)?|\*\*|[-+*/() ]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"q", "c", "pi", "euler", "tau", "input", "output", "float", "int", "bit",
             "qubit", "measure", "reset", "if", "else", "for", "while", "gate", "U", "im"}


@dataclass(frozen=True)
class Device:
    """What qrun may send to one Braket device."""

    name: str  # for messages
    operations: frozenset  # Braket operation names the device declares
    dynamic: bool = False  # runs mid-circuit measurement, reset and if/else correctly
    # Modifiers a Braket circuit (format braket) may use: the declared ones, where they work.
    modifiers: frozenset = frozenset()
    max_qubits: int | None = None
    shots: tuple | None = None  # (fewest, most) shots of one task

    @classmethod
    def from_properties(cls, name: str, properties, dynamic: bool,
                        trust_modifiers: bool = True) -> Device:
        """From a device's properties (``AwsDevice.properties``, ``LocalSimulator.properties``)."""
        action = properties.action.get("braket.ir.openqasm.program")
        if action is None:
            raise Untranslatable(f"{name} does not take OpenQASM programs")
        modifiers = frozenset(m.name for m in action.supportedModifiers or ()) if trust_modifiers \
            else frozenset()
        paradigm = getattr(properties, "paradigm", None)
        service = getattr(properties, "service", None)
        return cls(name, frozenset(action.supportedOperations), dynamic, modifiers,
                   getattr(paradigm, "qubitCount", None),
                   tuple(getattr(service, "shotsRange", None) or ()) or None)

    def size_problem(self, qubits: int, shots: int) -> str | None:
        """Why a task of this size cannot run here, or None."""
        if self.max_qubits is not None and qubits > self.max_qubits:
            return f"{self.name} takes at most {self.max_qubits} qubits; the circuit has {qubits}"
        if self.shots is not None and not self.shots[0] <= shots <= self.shots[1]:
            return (f"{self.name} takes {self.shots[0]} to {self.shots[1]:,} shots per task, "
                    f"not {shots:,} (set limits.max_shots_per_job to cut experiments into slices)")
        return None

    @property
    def basis(self) -> list:
        """Qiskit names of the gates that are declared operations of this device."""
        return sorted(QISKIT_NAME[op] for op in self.operations if op in QISKIT_NAME)


@dataclass(frozen=True)
class BraketProgram:
    """A circuit written for one Braket device, and how to read its outcomes back."""

    source: str
    num_qubits: int
    num_clbits: int | None
    # Per position of Braket's outcome strings: (classical bit, qubit measured into it);
    # None for a Braket circuit run as written, whose outcomes keep Braket's order.
    slots: tuple | None
    # (qrun parameter name, Braket input name) for each `input float` of the source.
    inputs: tuple = ()

    @classmethod
    def as_written(cls, source: str, num_qubits: int) -> BraketProgram:
        return cls(source, num_qubits, None, None)

    def inputs_for(self, params: dict) -> dict | None:
        """Braket's ``inputs`` for a task's parameter values."""
        if self.slots is None:  # Braket's own circuit: its inputs are qrun's parameter names
            return dict(params) or None
        values = {braket: float(params[name]) for name, braket in self.inputs if name in params}
        return values or None

    def counts_by_clbit(self, measured_qubits, counts: dict) -> dict:
        """Braket's counts rewritten with character i = classical bit i (qrun's convention)."""
        if self.slots is None:
            return dict(counts)
        shots = sum(counts.values())
        width = self.num_clbits or 0  # set whenever slots are (a translated program)
        if not self.slots:  # nothing measured: every classical bit stays 0
            return {"0" * width: shots} if shots else {}
        expected = [qubit for _, qubit in self.slots]
        if list(measured_qubits) != expected:
            raise RuntimeError(f"Braket reported outcomes of qubits {list(measured_qubits)}, "
                               f"qrun expected {expected}; refusing to guess which classical "
                               "bit each outcome is")
        result: dict = {}
        for outcome, count in counts.items():
            bits = ["0"] * width
            for position, (clbit, _) in enumerate(self.slots):
                bits[clbit] = outcome[position]
            key = "".join(bits)
            result[key] = result.get(key, 0) + count
        return result


def translate(circuit: QuantumCircuit, device: Device) -> BraketProgram:
    """The circuit as Braket OpenQASM 3 in ``device``'s operations (Untranslatable if not)."""
    _refuse_classical_variables(circuit)
    translated = to_basis(circuit, device)
    writer = _Writer(translated, device)
    writer.write_circuit()
    return writer.program()


# -- checks at validation (no SDK, no network)

# What LocalSimulator(name).properties declare for OpenQASM programs (default-simulator
# 1.41.2; tests/test_braket_program.py keeps the copy honest). Their modifiers are left out:
# declared, but braket_sv computes `ctrl @` wrongly on some qubit pairs and braket_dm
# ignores every modifier.
_LOCAL_GATES = frozenset({
    "GPhase", "U", "ccnot", "cnot", "cphaseshift", "cphaseshift00", "cphaseshift01",
    "cphaseshift10", "cswap", "cv", "cy", "cz", "ecr", "gpi", "gpi2", "h", "i", "iswap", "ms",
    "phaseshift", "prx", "pswap", "rx", "ry", "rz", "s", "si", "swap", "t", "ti", "unitary",
    "v", "vi", "x", "xx", "xy", "y", "yy", "z", "zz"})
_NOISE = frozenset({
    "amplitude_damping", "bit_flip", "depolarizing", "generalized_amplitude_damping", "kraus",
    "pauli_channel", "phase_damping", "phase_flip", "two_qubit_dephasing",
    "two_qubit_depolarizing"})
LOCAL_DEVICES = {
    "braket_sv": Device("braket_sv", _LOCAL_GATES, dynamic=True, max_qubits=26),
    "braket_dm": Device("braket_dm", _LOCAL_GATES | _NOISE, dynamic=True, max_qubits=13),
}
# An OpenQASM program without these words is translatable for a local simulator, and is
# not parsed again (shared with the SDK-free check, braket_local/check.py).
_BEYOND_STRAIGHT_LINE = BEYOND_STRAIGHT_LINE


def check_program(program, device: str, options: dict) -> str | None:
    """Why ``program`` cannot run correctly on Braket device ``device``, or None.

    For a cloud device (an ARN) the operations it declares are not known without the
    network: only what no cloud device runs (mid-circuit measurement, reset, conditions)
    is refused here; the gates are translated, or refused, when a task is submitted.
    """
    from qrun.sources import SourceError
    from qrun.sources.gate import parse_braket, parse_circuit

    cloud = device.startswith("arn:")
    target = Device(device, frozenset(QISKIT_NAME)) if cloud else LOCAL_DEVICES.get(device)
    if target is None:  # an unknown device: validation says so already
        return None
    try:
        if program.format == "braket":
            if not cloud:
                check_braket_circuit(parse_braket(program.content, program.origin), target)
            return None
        if not cloud and program.format in ("qasm2", "qasm3") \
                and not _BEYOND_STRAIGHT_LINE.search(program.content):
            return None
        translate(parse_circuit(program.format, program.content, program.origin, program.index),
                  target)
    except (Untranslatable, SourceError) as exc:
        return f"{program.origin}: {exc}"
    return None


def check_braket_circuit(circuit, device: Device) -> None:
    """Refuse (Untranslatable) a Braket ``Circuit`` that cannot run right on ``device``."""
    braket_circuit_for(circuit, device)


def braket_circuit_for(circuit, device: Device, text: str | None = None) -> str:
    """A Braket ``Circuit``'s OpenQASM for ``device``: ``text`` (its own) when it uses only
    operations the device declares and no modifier (or only modifiers the device declares
    and computes right); otherwise each other gate is replaced by declared ones, its matrix
    synthesized by Qiskit. Outcomes keep Braket's order: the qubits are the same."""
    from braket.circuits import Circuit, Gate, Noise
    from braket.circuits.serialization import IRType

    replaced = False
    rebuilt = Circuit()
    for instruction in circuit.instructions:
        operator = instruction.operator
        if isinstance(operator, Noise):
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(operator).__name__).lower()
            if name not in device.operations:
                raise Untranslatable(f"{device.name} does not declare the noise channel {name!r}")
        elif isinstance(operator, Gate) and not _runs_as_written(instruction, device):
            rebuilt.add(_synthesized(instruction, device))
            replaced = True
            continue
        rebuilt.add_instruction(instruction)
    if not replaced and text is not None:
        return text
    # A qubit the synthesis no longer touches must stay in the circuit: Braket measures
    # the qubits a circuit uses, and the outcome strings would lose its character.
    for qubit in sorted(set(circuit.qubits) - set(rebuilt.qubits)):
        if "i" not in device.operations:
            raise Untranslatable(f"{device.name} declares no identity to keep qubit {qubit}")
        rebuilt.i(qubit)
    for result_type in circuit.result_types:
        rebuilt.add_result_type(result_type)
    return rebuilt.to_ir(IRType.OPENQASM).source


def _runs_as_written(instruction, device: Device) -> bool:
    if instruction.operator._qasm_name not in device.operations:
        return False
    used = set()
    if instruction.control:
        state = instruction.control_state
        bits = state.as_tuple if state is not None and state.size else [1] * len(instruction.control)
        used |= {"ctrl" if bit else "negctrl" for bit in bits}
    if instruction.power != 1:
        used.add("pow" if instruction.power > 0 else "inv")
    return used <= device.modifiers


def _synthesized(instruction, device: Device) -> list:
    """Braket instructions, all declared by ``device`` and without modifiers, doing what
    ``instruction`` does (its matrix, synthesized by Qiskit)."""
    from braket.circuits import Circuit, Instruction
    from qiskit.circuit.library import UnitaryGate

    operator = instruction.operator
    if getattr(operator, "parameters", None) and any(
            not isinstance(p, (int, float)) for p in operator.parameters):
        raise Untranslatable(f"{operator.name} on qubits {[int(q) for q in instruction.target]} "
                             f"uses a free parameter and needs a modifier or operation "
                             f"{device.name} does not run right; bind it in the factory")
    alone = Circuit().add_instruction(instruction)
    qubits = [int(q) for q in alone.qubits]  # ascending; Braket's matrix is big-endian
    n = len(qubits)
    qiskit_circuit = QuantumCircuit(n)
    qiskit_circuit.append(UnitaryGate(alone.to_unitary(), check_input=False), range(n))
    lowered = to_basis(qiskit_circuit, device)
    classes = _braket_classes()
    out = []
    for inner in lowered.data:
        operation = inner.operation
        if not _is_braket_gate(operation):
            raise Untranslatable(f"{operation.name} left after translating {operator.name}")
        gate = classes[BRAKET_NAME[operation.base_class]](*[float(p) for p in operation.params])
        # Qiskit's qubit j is the j-th least significant: Braket's qubit qubits[n - 1 - j].
        targets = [qubits[n - 1 - lowered.find_bit(q).index] for q in inner.qubits]
        out.append(Instruction(gate, targets))
    return out


@functools.lru_cache(maxsize=1)
def _braket_classes() -> dict:
    """Braket operation name -> the Braket SDK's gate class."""
    import inspect

    import braket.circuits.gates as gates
    from braket.circuits import Gate

    classes = {}
    for _, cls in inspect.getmembers(gates, inspect.isclass):
        if issubclass(cls, Gate) and cls is not Gate:
            try:
                classes[cls._qasm_name.fget(None)] = cls  # a property that needs no instance
            except NotImplementedError:  # abstract bases
                continue
    return classes


# -- gates into the device's operations

_PASS_MANAGERS: dict = {}


def to_basis(circuit: QuantumCircuit, device: Device) -> QuantumCircuit:
    """The circuit with every gate one the device declares (Qiskit's translation)."""
    basis = device.basis
    if not basis:
        raise Untranslatable(f"{device.name} declares none of the gates qrun writes "
                             f"(it declares {', '.join(sorted(device.operations))})")
    kept = set(basis)
    if _all_in_basis(circuit, kept):
        return circuit  # the common case, and the fast one: nothing to translate
    circuit = _without(circuit, _DROPPED)
    circuit = _impostors_expanded(circuit, kept)
    try:
        return _pass_manager(tuple(basis)).run(circuit)
    except Exception as exc:  # Qiskit's translator: no path into these gates
        raise Untranslatable(f"cannot be written in the operations {device.name} declares "
                             f"({', '.join(sorted(device.operations))}): "
                             f"{' '.join(str(exc).split())}") from None


def _pass_manager(basis: tuple):
    manager = _PASS_MANAGERS.get(basis)
    if manager is None:
        from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary
        from qiskit.transpiler import PassManager
        from qiskit.transpiler.passes import BasisTranslator, HighLevelSynthesis, UnitarySynthesis

        # Level 0's translation stage, without layout or routing: qubits keep their indices.
        target = list(basis) + ["measure", "reset", "if_else", "for_loop", "box", "while_loop",
                                "switch_case"]
        manager = _PASS_MANAGERS[basis] = PassManager([
            UnitarySynthesis(basis_gates=target),
            HighLevelSynthesis(basis_gates=target, equivalence_library=SessionEquivalenceLibrary),
            BasisTranslator(SessionEquivalenceLibrary, target_basis=target),
        ])
    return manager


def _is_braket_gate(operation) -> bool:
    """A standard Qiskit gate with a Braket twin (not a user's gate that took its name)."""
    base = getattr(operation, "base_class", None)
    if base not in BRAKET_NAME:
        return False
    if isinstance(operation, ControlledGate):  # an open control is another gate
        return operation.ctrl_state == 2 ** operation.num_ctrl_qubits - 1
    return True


def _all_in_basis(circuit: QuantumCircuit, basis: set) -> bool:
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name in _DROPPED or isinstance(operation, (Measure, Reset)):
            continue
        if hasattr(operation, "blocks") and operation.name in ("if_else", "for_loop", "box"):
            if not all(_all_in_basis(block, basis) for block in operation.blocks):
                return False
            continue
        if operation.name not in basis or not _is_braket_gate(operation):
            return False
    return True


def _without(circuit: QuantumCircuit, names: set) -> QuantumCircuit:
    """The circuit without the named instructions (at every depth)."""
    return _rebuilt(circuit, lambda instruction: [] if instruction.operation.name in names else None)


def _impostors_expanded(circuit: QuantumCircuit, basis: set) -> QuantumCircuit:
    """A user's own gate named like a basis gate (``gate cx a, b {...}``) replaced by its
    definition: the translator keeps gates by name and would take it for the standard one."""
    def expand(instruction):
        operation = instruction.operation
        if operation.name in basis and isinstance(operation, Gate) and not _is_braket_gate(operation):
            if operation.definition is None:
                raise Untranslatable(f"gate {operation.name!r} is not the standard gate of that "
                                     "name and has no definition")
            inner = _impostors_expanded(operation.definition, basis)
            mapping = dict(zip(inner.qubits, instruction.qubits))
            return [(i.operation, [mapping[q] for q in i.qubits], []) for i in inner.data]
        return None
    return _rebuilt(circuit, expand)


def _rebuilt(circuit: QuantumCircuit, replace) -> QuantumCircuit:
    """A copy of the circuit in which ``replace(instruction)`` -> None keeps an instruction,
    or gives the (operation, qubits, clbits) to put in its place; control flow is entered."""
    result = circuit.copy_empty_like()
    for instruction in circuit.data:
        replacement = replace(instruction)
        if replacement is not None:
            for operation, qubits, clbits in replacement:
                result.append(operation, qubits, clbits, copy=False)
            continue
        operation = instruction.operation
        if isinstance(operation, (IfElseOp, ForLoopOp, BoxOp)):
            operation = operation.replace_blocks([_rebuilt(block, replace) for block in operation.blocks])
        result.append(operation, instruction.qubits, instruction.clbits, copy=False)
    return result


def _refuse_classical_variables(circuit: QuantumCircuit) -> None:
    if circuit.num_vars or getattr(circuit, "num_stretches", 0):
        raise Untranslatable("classical variables (other than bits) are not supported on Braket "
                             "devices by qrun")


# -- writing Braket's OpenQASM


@dataclass
class _Scope:
    qubits: dict  # Qiskit Qubit -> index in `q`
    clbits: dict  # Qiskit Clbit -> index in `c`
    inside_if: bool = False


@dataclass
class _Writer:
    circuit: QuantumCircuit
    device: Device
    lines: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # Qiskit Parameter -> Braket input name
    _symbols: dict = field(default_factory=dict)  # Braket input name -> its Qiskit Parameter
    last_measured: dict = field(default_factory=dict)  # clbit -> qubit measured into it last
    measured_qubits: set = field(default_factory=set)
    conditioned: bool = False

    def write_circuit(self) -> None:
        scope = _Scope({q: i for i, q in enumerate(self.circuit.qubits)},
                       {b: i for i, b in enumerate(self.circuit.clbits)})
        self._block(_deferred_measures(self.circuit), scope, indent="")

    def program(self) -> BraketProgram:
        n = self.circuit.num_clbits
        head = ["OPENQASM 3.0;"]
        head += [f"input float {name};" for name in self.inputs.values()]
        head.append(f"qubit[{self.circuit.num_qubits}] q;")
        # Braket reads an unwritten bit in a condition as an error: start them at 0, as
        # OpenQASM does.
        head.append(f'bit[{n}] c = "{"0" * n}";' if self.conditioned else f"bit[{n}] c;")
        slots = tuple((clbit, self.last_measured[clbit]) for clbit in sorted(self.last_measured))
        inputs = tuple(sorted((p.name, name) for p, name in self.inputs.items()))
        return BraketProgram("\n".join(head + self.lines) + "\n", self.circuit.num_qubits, n,
                             slots, inputs)

    # -- statements

    def _block(self, instructions, scope: _Scope, indent: str) -> None:
        for instruction in instructions:
            self._statement(instruction, scope, indent)

    def _statement(self, instruction, scope: _Scope, indent: str) -> None:
        operation = instruction.operation
        qubits = [scope.qubits[q] for q in instruction.qubits]
        name = operation.name
        if name in _DROPPED:
            return
        if isinstance(operation, Measure):
            self._measure(qubits[0], scope.clbits[instruction.clbits[0]], scope, indent)
        elif isinstance(operation, Reset):
            self._dynamic("reset")
            self._touch(qubits)
            self.lines.append(f"{indent}reset q[{qubits[0]}];")
        elif isinstance(operation, IfElseOp):
            self._if_else(operation, instruction, scope, indent)
        elif isinstance(operation, ForLoopOp):
            self._for_loop(operation, instruction, scope, indent)
        elif isinstance(operation, BoxOp):
            self._block(operation.blocks[0].data, _inner(scope, operation.blocks[0], instruction),
                        indent)
        elif isinstance(operation, Gate) and _is_braket_gate(operation):
            braket = BRAKET_NAME[operation.base_class]
            if braket not in self.device.operations:
                raise Untranslatable(f"{self.device.name} does not declare {braket}")
            self._touch(qubits)
            arguments = ", ".join(self._parameter(p) for p in operation.params)
            call = f"{braket}({arguments})" if arguments else braket
            self.lines.append(f"{indent}{call} {', '.join(f'q[{i}]' for i in qubits)};")
        else:
            raise Untranslatable(f"{_what(name)} is not supported on Braket devices by qrun")

    def _measure(self, qubit: int, clbit: int, scope: _Scope, indent: str) -> None:
        if scope.inside_if:
            # Braket fills such a bit from the qubit's final state on every path, also where
            # the measurement did not happen (OpenQASM keeps the bit's earlier value).
            raise Untranslatable("a measurement inside an if block is not computed correctly by "
                                 "Braket's simulators; measure after the block")
        if qubit in self.measured_qubits:
            self._dynamic("a qubit measured more than once (mid-circuit measurement)")
        if clbit in self.last_measured:
            self._dynamic("a classical bit written by two measurements")
        self.measured_qubits.add(qubit)
        self.last_measured[clbit] = qubit
        self.lines.append(f"{indent}c[{clbit}] = measure q[{qubit}];")

    def _touch(self, qubits: list) -> None:
        if self.measured_qubits.intersection(qubits):
            self._dynamic("operations on a qubit after its measurement (mid-circuit measurement)")

    def _dynamic(self, reason: str) -> None:
        if not self.device.dynamic:
            raise Untranslatable(f"{self.device.name} does not run {reason} (Braket runs "
                                 "mid-circuit measurement, reset and conditions on its local "
                                 "simulators only)")

    def _if_else(self, operation: IfElseOp, instruction, scope: _Scope, indent: str) -> None:
        self._dynamic("conditions on measured bits (if/else)")
        condition = operation.condition
        if isinstance(condition, tuple):
            condition = expr.lift_legacy_condition(condition)
        text = _Condition(scope.clbits).boolean(condition)
        self.conditioned = True
        true_block = operation.blocks[0]
        false_block = operation.blocks[1] if len(operation.blocks) > 1 else None
        self.lines.append(f"{indent}if ({text}) {{")
        self._block(true_block.data, _inner(scope, true_block, instruction, inside_if=True),
                    indent + "  ")
        if false_block is not None and false_block.data:
            self.lines.append(f"{indent}}} else {{")
            self._block(false_block.data, _inner(scope, false_block, instruction, inside_if=True),
                        indent + "  ")
        self.lines.append(f"{indent}}}")

    def _for_loop(self, operation: ForLoopOp, instruction, scope: _Scope, indent: str) -> None:
        indexset, loop_parameter, body = operation.params
        inner = _inner(scope, body, instruction)
        for value in indexset:  # unrolled: every device runs a straight line
            bound = body.assign_parameters({loop_parameter: value}) if loop_parameter is not None else body
            self._block(bound.data, inner, indent)  # a bound copy keeps the body's bits

    # -- parameters

    def _parameter(self, value) -> str:
        if isinstance(value, ParameterExpression):
            if not value.parameters:
                value = complex(value)
                if abs(value.imag) > 1e-12:
                    raise Untranslatable(f"gate parameter {value} is not real")
                return repr(value.real)
            return self._expression(value)
        number = float(value)
        if not math.isfinite(number):
            raise Untranslatable(f"gate parameter {number} is not a finite number")
        return repr(number)

    def _expression(self, value: ParameterExpression) -> str:
        # Each parameter renamed to its Braket input first (a Qiskit name may be `θ[0]`),
        # then only those names, OpenQASM's functions, numbers and operators may remain.
        renamed = {}
        for parameter in value.parameters:
            name = self._input(parameter)
            if name != parameter.name:
                renamed[parameter] = self._symbols.setdefault(name, Parameter(name))
        text = str(value.subs(renamed) if renamed else value)
        allowed = set(self.inputs.values()) | _EXPRESSION_WORDS
        tokens = _EXPRESSION.findall(text)
        if "".join(tokens) != text or any(_IDENTIFIER.fullmatch(t) and t not in allowed
                                          for t in tokens):
            raise Untranslatable(f"parameter expression {value} cannot be written for Braket "
                                 "(OpenQASM 3 arithmetic, sin, cos, tan, exp, log, sqrt only)")
        return text

    def _input(self, parameter) -> str:
        name = self.inputs.get(parameter)
        if name is None:
            name = parameter.name
            taken = set(self.inputs.values())
            if not _IDENTIFIER.fullmatch(name) or name in _RESERVED or name in _EXPRESSION_WORDS \
                    or name in taken:
                number = len(self.inputs)
                while f"input_{number}" in taken:
                    number += 1
                name = f"input_{number}"
            self.inputs[parameter] = name
        return name


def _inner(scope: _Scope, block: QuantumCircuit, instruction, inside_if: bool = False) -> _Scope:
    """The scope of a control-flow block: its bits are the instruction's, by position."""
    return _Scope(dict(zip(block.qubits, (scope.qubits[q] for q in instruction.qubits))),
                  dict(zip(block.clbits, (scope.clbits[b] for b in instruction.clbits))),
                  scope.inside_if or inside_if)


def _deferred_measures(circuit: QuantumCircuit) -> list:
    """The circuit's instructions with final measurements moved last, in classical-bit order.

    Then the order in which Braket lists measured elements (c[0], c[1], ...) is also the
    order of the measure statements, whichever of the two a Braket device reports in. Done
    only where it changes nothing: no control flow, each measurement the last operation on
    its qubit and the only write of its bit.
    """
    data = list(circuit.data)
    last_use: dict = {}
    writes: dict = {}
    for position, instruction in enumerate(data):
        if instruction.operation.name in ("if_else", "for_loop", "while_loop", "switch_case", "box"):
            return data
        if instruction.operation.name in _DROPPED:  # not written: no use of its qubits
            continue
        for qubit in instruction.qubits:
            last_use[qubit] = position
        if instruction.operation.name == "measure":
            writes[instruction.clbits[0]] = writes.get(instruction.clbits[0], 0) + 1
    measures, others = [], []
    for position, instruction in enumerate(data):
        if instruction.operation.name == "measure":
            if last_use[instruction.qubits[0]] != position or writes[instruction.clbits[0]] > 1:
                return data
            measures.append(instruction)
        else:
            others.append(instruction)
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    return others + sorted(measures, key=lambda i: clbit_index[i.clbits[0]])


class _Condition:
    """A Qiskit classical condition written with what Braket's interpreter evaluates right:
    bit comparisons (``c[3] == 1``) joined by ``&&``, ``||``, ``!`` and ``==``/``!=``.

    (Braket 1.41.2 refuses ``!``, ``^``, ``&``, ``||`` on bits themselves, gets
    ``bool(c[0]) && bool(c[1])`` wrong and fails on ``c == 3`` for a register.)
    """

    def __init__(self, clbits: dict):
        self.clbits = clbits

    def boolean(self, node) -> str:
        if node.type.kind is types.Uint:  # `if (c)`: any bit set
            return self._join(self._bits(node, None), "||", "false")
        if isinstance(node, expr.Var):
            return self._bit(node.var)
        if isinstance(node, expr.Value):
            return "true" if node.value else "false"
        if isinstance(node, expr.Index):
            return self._bits(node.target, None)[self._constant(node.index)]
        if isinstance(node, expr.Cast):
            return self.boolean(node.operand)
        if isinstance(node, expr.Unary) and node.op in (expr.Unary.Op.LOGIC_NOT, expr.Unary.Op.BIT_NOT):
            return f"!({self.boolean(node.operand)})"
        if isinstance(node, expr.Binary):
            return self._binary(node)
        raise Untranslatable(f"condition {node} cannot be written for Braket")

    def _binary(self, node: expr.Binary) -> str:
        op = expr.Binary.Op
        if node.op in (op.LOGIC_AND, op.BIT_AND, op.LOGIC_OR, op.BIT_OR) and node.left.type.kind is types.Bool:
            joiner = "&&" if node.op in (op.LOGIC_AND, op.BIT_AND) else "||"
            return f"({self.boolean(node.left)} {joiner} {self.boolean(node.right)})"
        if node.op is op.BIT_XOR and node.left.type.kind is types.Bool:
            return f"({self.boolean(node.left)} != {self.boolean(node.right)})"
        if node.op in (op.EQUAL, op.NOT_EQUAL):
            if node.left.type.kind is types.Bool:
                same = f"({self.boolean(node.left)} == {self.boolean(node.right)})"
            else:
                same = self._equal_bits(node.left, node.right)
            return same if node.op is op.EQUAL else f"!({same})"
        raise Untranslatable(f"condition {node} cannot be written for Braket (only bit and "
                             "register equality, and/or/not)")

    def _equal_bits(self, left, right) -> str:
        width = max(left.type.width, right.type.width)
        terms = []
        for a, b in zip(self._bits(left, width), self._bits(right, width)):
            if a in ("true", "false") and b in ("true", "false"):
                if a != b:
                    return "false"
                continue
            if a in ("true", "false"):
                a, b = b, a
            terms.append(a if b == "true" else f"!({a})" if b == "false" else f"({a} == {b})")
        return self._join(terms, "&&", "true")

    def _bits(self, node, width: int | None) -> list:
        """Per bit (least significant first) of an unsigned value: a boolean text or a constant."""
        if isinstance(node, expr.Cast):
            return self._bits(node.operand, width)
        if isinstance(node, expr.Var) and isinstance(node.var, ClassicalRegister):
            bits = [self._bit(b) for b in node.var]
        elif isinstance(node, expr.Var) and node.type.kind is types.Bool:
            bits = [self._bit(node.var)]
        elif isinstance(node, expr.Value):
            size = width or max(1, int(node.value).bit_length())
            return ["true" if (int(node.value) >> k) & 1 else "false" for k in range(size)]
        else:
            raise Untranslatable(f"condition on {node} cannot be written for Braket")
        if width is not None:
            bits += ["false"] * (width - len(bits))
        return bits

    def _bit(self, bit) -> str:
        if bit not in self.clbits:
            raise Untranslatable(f"condition on {bit}, which this block cannot see")
        return f"(c[{self.clbits[bit]}] == 1)"

    @staticmethod
    def _constant(node) -> int:
        if not isinstance(node, expr.Value):
            raise Untranslatable(f"condition indexes a register with {node}, not a constant")
        return int(node.value)

    @staticmethod
    def _join(terms: list, joiner: str, empty: str) -> str:
        if not terms:
            return empty
        return terms[0] if len(terms) == 1 else "(" + f" {joiner} ".join(terms) + ")"


def _what(name: str) -> str:
    return {"while_loop": "a while loop", "switch_case": "a switch statement",
            "store": "assignment to classical variables"}.get(name, f"instruction {name!r}")
