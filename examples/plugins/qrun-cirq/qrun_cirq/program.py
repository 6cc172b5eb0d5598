"""A qrun program as the OpenQASM 2 that Cirq's importer reads, without importing Cirq.

qrun parses every gate-model program (OpenQASM 2 or 3, QPY) with Qiskit, its reference
parser. This module binds a circuit's parameters, writes it out with Qiskit's OpenQASM 2
exporter, and names, for each classical bit, the measurement key Cirq will give it: Cirq's
importer keys a measurement into bit i of register c as "c_i".

What would not run faithfully is refused (Unsupported), and validation asks the same
question through check_program, so a manifest learns it before anything runs:
- what OpenQASM 2 cannot say: `if` on a single bit, `else`, loops, several statements in
  one `if`, classical bits in two registers;
- what Cirq computes differently: a condition reading a bit not yet measured (OpenQASM
  reads it as 0; Cirq fails the run), a measurement or reset inside an `if` (its importer
  does not parse them);
- instructions without a definition (`opaque`).
Barriers and delays are dropped: they do not change what an ideal simulator computes, and
Cirq's importer knows neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVES = frozenset({"barrier", "delay"})
# Gates Cirq's importer knows under these names with qelib1.inc's meaning (checked against
# Qiskit's matrices by tests/test_plugin_cirq.py). Any other gate (Qiskit's 4-parameter
# `cu`, a user's own `gate` definition, which Cirq's importer may read under a built-in's
# name) is decomposed by Qiskit into these before the text is written.
CIRQ_GATES = frozenset({
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg", "rx", "ry", "rz", "u1",
    "u2", "u3", "p", "u", "cx", "cy", "cz", "ch", "swap", "crx", "cry", "crz", "cu1", "cp",
    "cu3", "rzz", "rxx", "csx", "ccx", "cswap",
})
_KEPT = CIRQ_GATES | {"measure", "reset", "if_else"}
_CREG = re.compile(r"^creg (\w+)\[(\d+)\];$", re.MULTILINE)


class Unsupported(Exception):
    """A program cirq.simulator cannot run faithfully; the message says why."""


@dataclass(frozen=True)
class CirqProgram:
    qasm: str  # OpenQASM 2, for cirq.contrib.qasm_import.circuit_from_qasm
    keys: tuple[str, ...]  # the Cirq measurement key of each classical bit, in qrun's order


def parse(fmt: str, content: bytes, origin: str = "<circuit>", index: int = 0):
    """The program as a Qiskit circuit, read by qrun's own source loader."""
    from qrun.sources.gate import parse_circuit

    return parse_circuit(fmt, content, origin, index=index)


def bind(circuit, params: dict):
    if not params:
        return circuit
    by_name = {p.name: p for p in circuit.parameters}
    return circuit.assign_parameters({by_name[name]: value for name, value in params.items()})


def for_cirq(circuit) -> CirqProgram:
    """OpenQASM 2 for Cirq, and each classical bit's key; Unsupported if it would not be faithful."""
    from qiskit.qasm2 import QASM2ExportError, dumps

    circuit = _in_cirq_gates(_without_directives(circuit))
    _give_loose_bits_a_register(circuit)
    _check_classical_flow(circuit)
    try:
        text = dumps(circuit)
    except QASM2ExportError as exc:
        raise Unsupported(f"not expressible in OpenQASM 2, which Cirq's importer reads: {str(exc).strip(chr(39))}") from None
    opaque = re.search(r"^opaque (\w+)", text, re.MULTILINE)
    if opaque:
        raise Unsupported(f"instruction {opaque.group(1)!r} has no gate definition")
    return CirqProgram(text, _keys(circuit, text))


def check_program(program, device: str, options: dict) -> str | None:
    """Why cirq.simulator cannot run ``program`` (a qrun.sources.Program), or None.

    Asked at validation. Free parameters are bound to 0: their values do not change what
    can be translated.
    """
    circuit = parse(program.format, program.content, program.origin, program.index)
    try:
        for_cirq(bind(circuit, {p.name: 0.0 for p in circuit.parameters}))
    except Unsupported as exc:
        return f"{program.origin}: cirq.simulator cannot run it: {exc}"
    return None


def _without_directives(circuit):
    kept = circuit.copy_empty_like()
    for instruction in circuit.data:
        if instruction.operation.name not in _DIRECTIVES:
            kept.append(instruction)
    return kept


def _in_cirq_gates(circuit, rounds: int = 8):
    """The circuit with every gate outside CIRQ_GATES decomposed (Qiskit's definitions)."""
    for _ in range(rounds):
        others = {i.operation.name for i in circuit.data} - _KEPT
        if not others:
            return circuit
        circuit = circuit.decompose(gates_to_decompose=sorted(others))
    left = sorted({i.operation.name for i in circuit.data} - _KEPT)
    raise Unsupported(f"gates {', '.join(left)} do not decompose into gates Cirq reads")


def _give_loose_bits_a_register(circuit) -> None:
    """OpenQASM 3's `bit a;` is in no register; OpenQASM 2 needs one to name it."""
    from qiskit.circuit import ClassicalRegister

    loose = [bit for bit in circuit.clbits if not circuit.find_bit(bit).registers]
    if loose:
        taken = {register.name for register in circuit.cregs}
        name = next(f"bits{n}" for n in range(len(taken) + 1) if f"bits{n}" not in taken)
        circuit.add_register(ClassicalRegister(name=name, bits=loose))


def _check_classical_flow(circuit) -> None:
    """Refuse what Cirq would read differently: conditions on bits not yet measured, and
    measurements or resets inside an `if` (a register in a condition, a bit in two registers)."""
    from qiskit.circuit import ClassicalRegister, IfElseOp

    for bit in circuit.clbits:
        if len(circuit.find_bit(bit).registers) > 1:
            raise Unsupported("a classical bit belongs to two registers (an alias), "
                              "which OpenQASM 2 cannot declare")
    measured: set = set()
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name == "measure":
            measured.add(instruction.clbits[0])
        elif isinstance(operation, IfElseOp) and isinstance(operation.condition, tuple) \
                and isinstance(operation.condition[0], ClassicalRegister):
            register = operation.condition[0]
            unread = [i for i, bit in enumerate(register) if bit not in measured]
            if unread:
                raise Unsupported(f"the condition on {register.name} reads bits not measured "
                                  f"before it ({', '.join(f'{register.name}[{i}]' for i in unread)}): "
                                  "OpenQASM reads them as 0, Cirq cannot read them")
            inner = {i.operation.name for block in operation.blocks for i in block.data}
            if inner & {"measure", "reset"}:
                raise Unsupported("a measurement or reset inside an `if`: "
                                  "Cirq's OpenQASM importer takes only gates there")


def _keys(circuit, text: str) -> tuple[str, ...]:
    """Cirq's key for each classical bit. The exporter declares the registers in the
    circuit's order, under names it may have escaped, so the names are read from its text."""
    declared = _CREG.findall(text)
    if [int(size) for _, size in declared] != [register.size for register in circuit.cregs]:
        raise Unsupported("the exported registers do not match the circuit's")  # never expected
    name_of = {register: name for register, (name, _) in zip(circuit.cregs, declared)}
    keys = []
    for bit in circuit.clbits:
        register, index = circuit.find_bit(bit).registers[0]
        keys.append(f"{name_of[register]}_{index}")
    return tuple(keys)
