"""Gate-model programs: OpenQASM 2 and 3 and QPY (parsed by Qiskit), and Braket circuits.

Qiskit's parsers are the reference implementations of OpenQASM and QPY; every gate-model
backend reads these programs through :func:`parse_circuit`. Braket circuits (built by a
Python factory) keep Braket's own OpenQASM dialect and are read by the Braket SDK.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import warnings
from pathlib import Path

from . import Facts, SourceError, _rust, one_line

# The standard gate library of each version, which Qiskit has built in. A program reaches
# backends as its own text, without the files it includes, so no other include can work.
# The other version's library is refused too: each parser looks for it on disk (Qiskit's
# native OpenQASM 3 importer reads a qelib1.inc in the current folder, its OpenQASM 2
# parser a stdgates.inc beside the circuit), and the complete importer refuses qelib1.inc.
STANDARD_INCLUDE = {"qasm2": "qelib1.inc", "qasm3": "stdgates.inc"}
_VERSION = {"qasm2": ("OpenQASM 2", "2.0"), "qasm3": ("OpenQASM 3", "3.0")}
_INCLUDE = re.compile(r'\binclude\s*"([^"\n]*)"')

# Registers are refused past this many qubits or bits in all, before a parser sees them:
# Qiskit builds a register bit by bit, and a typo such as `qubit[100000000] q;` took minutes
# and tens of GB before it could be refused (10**6 qubits: 1 s and 400 MB). No backend qrun
# drives has a thousandth of it.
MAX_DECLARED_BITS = 100_000
_INTEGER = r"(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)"
# A size is a literal or a constant expression (`qubit[100000*100000] q;`, which Qiskit's
# complete importer evaluates); what is not one is left to the parsers.
_DECLARATION = re.compile(r"\b(?:(qubit|bit)\s*|(qreg|creg)\s+[A-Za-z_][A-Za-z0-9_]*\s*)"
                          r"\[([^\[\]\n]+)\]")
_PHYSICAL_QUBIT = re.compile(rf"\${_INTEGER}")
# `ctrl(n) @` makes Qiskit build an n-control gate before it counts the operands:
# `ctrl(2147483648) @ x q[0], q[1];` took all 24 GB of memory. n must be below the number
# of operands the statement lists, as in any valid program.
_CONTROLS = re.compile(r"\b(?:neg)?ctrl\s*\(((?:[^()\n]|\([^()\n]*\))*)\)")
# A for loop's range past this is refused: Qiskit then builds the range whole (`for int i in
# [0:18446744073709551616]` asked for gigabytes, and the process was killed), and no program
# runs a quintillion iterations.
MAX_LOOP_BOUND = 2**62
_LOOP_RANGE = re.compile(r"\bin\s*\[([^\]\n]*)\]")
_LITERAL = re.compile(rf"(?<![\w.]){_INTEGER}(?![\w.])")


def inspect(fmt: str, content: bytes, origin: str, index: int | None,
            include_dir: Path | None) -> Facts:
    if fmt == "braket":
        return _inspect_braket(content, origin)
    if fmt in ("qasm2", "qasm3"):
        _check_text(fmt, content, origin)
    if fmt == "qasm2":
        return _qasm2_facts(_text(content, origin), origin, include_dir)
    circuit = parse_circuit(fmt, content, origin, index, include_dir)
    return _facts(circuit)


def _facts(circuit) -> Facts:
    names = tuple(sorted(p.name for p in circuit.parameters))
    return Facts(parameters=names, required=names, width=circuit.num_qubits,
                 clbits=circuit.num_clbits)


def _check_text(fmt: str, content: bytes, origin: str) -> None:
    """What is refused before a parser reads the program: the other version, other files,
    huge registers and, in OpenQASM 3, huge control counts and loop ranges, and directives."""
    _check_version(fmt, content, origin)
    text = _text(content, origin)
    _check_includes(fmt, blank_comments(text), origin)
    code = blank_comments(text, strings=True)
    _check_sizes(code, origin)
    if fmt == "qasm3":  # modifiers, loops and directives are OpenQASM 3's
        from . import qasm3

        _check_controls(code, origin)
        _check_loop_ranges(code, origin)
        qasm3.refuse_directives(text, code, origin)


_LEXEME = re.compile(r'"[^"\n]*"|//[^\n]*|/\*')
_LEXEME_WITHOUT_BLOCKS = re.compile(r'"[^"\n]*"|//[^\n]*')


def blank_comments(text: str, strings: bool = False) -> str:
    """``text`` with its comments (and, with ``strings``, its strings) turned to spaces,
    newlines kept so that lines stay where they are; a string is kept whole otherwise, as a
    file name may hold "//".

    One pass: a regular expression for `/* ... */` took 9 s on 60 kB of `/* ` without a
    `*/`, trying every start to the end. A `/*` never closed is left as code (what follows
    it is checked as code; the parsers refuse it), and no later `/*` can close either.
    """
    pieces, position, lexeme = [], 0, _LEXEME
    while (found := lexeme.search(text, position)) is not None:
        start, end = found.span()
        if found.group() == "/*":
            close = text.find("*/", end)
            if close < 0:
                lexeme = _LEXEME_WITHOUT_BLOCKS
                pieces.append(text[position:end])
                position = end
                continue
            end = close + 2
        elif found.group().startswith('"') and not strings:
            pieces.append(text[position:end])
            position = end
            continue
        pieces.append(text[position:start])
        pieces.append(re.sub(r"[^\n]", " ", text[start:end]))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _check_version(fmt: str, content: bytes, origin: str) -> None:
    """A program read as the other version than it declares is named as such, before its
    include or a parser's first complaint hides why."""
    from . import qasm_version

    declared = qasm_version(content)
    if declared in _VERSION and declared != fmt:
        raise SourceError(f"{origin} declares OPENQASM {_VERSION[declared][1]} but is read as "
                          f"{_VERSION[fmt][0]} (format: {fmt}); set format: {declared}, or "
                          "leave format out")


def _check_includes(fmt: str, code: str, origin: str) -> None:
    """Refuse an include of any file but the version's standard library before a parser
    opens it.

    Qiskit's OpenQASM 2 parser opens any path (`include "/etc/hostname";` showed the file's
    first word in its error), and its native OpenQASM 3 importer reads `include "/dev/zero";`
    forever; neither include could reach a backend anyway.
    """
    for name in _INCLUDE.findall(code):
        if name == STANDARD_INCLUDE[fmt]:
            continue
        other = next((f for f, library in STANDARD_INCLUDE.items() if library == name), None)
        if other is not None:
            raise SourceError(f"{origin} includes {name!r}, {_VERSION[other][0]}'s gate library, "
                              f"but is read as {_VERSION[fmt][0]}, whose library is "
                              f"{STANDARD_INCLUDE[fmt]!r}")
        shown = repr(name) if len(name) <= 80 else repr(name[:77] + "...")
        raise SourceError(f"{origin} includes {shown}; a program reaches backends as its "
                          "own text, so only the standard qelib1.inc (OpenQASM 2) or "
                          "stdgates.inc (OpenQASM 3) may be included: copy the definitions "
                          "into the file")


def _check_sizes(code: str, origin: str) -> None:
    totals = {"qubits": 0, "bits": 0}
    for match in _DECLARATION.finditer(code):
        kind = "qubits" if (match.group(1) or match.group(2)) in ("qubit", "qreg") else "bits"
        totals[kind] += _size(match.group(3), origin) or 0
    physical = [_integer(m.group(1), origin) for m in _PHYSICAL_QUBIT.finditer(code)]
    if physical:
        totals["qubits"] = max(totals["qubits"], max(physical) + 1)
    for kind, total in totals.items():
        if total > MAX_DECLARED_BITS:
            raise SourceError(f"{origin} declares {total:,} {kind}; qrun takes programs of at "
                              f"most {MAX_DECLARED_BITS:,} {kind}")


def _check_controls(code: str, origin: str) -> None:
    for match in _CONTROLS.finditer(code):
        controls = _size(match.group(1), origin)
        if controls is None:
            continue
        end = code.find(";", match.end())
        operands = _top_level_items(code[match.end():end if end >= 0 else len(code)])
        if controls >= operands or controls > MAX_DECLARED_BITS:
            line = code.count("\n", 0, match.start()) + 1
            raise SourceError(f"{origin}:{line}: {match.group().strip()} asks for {controls:,} "
                              f"controls, but the statement lists {operands:,} operands")


def _top_level_items(statement: str) -> int:
    """How many comma-separated items ``statement`` holds outside brackets and braces."""
    depth, items = 0, 1
    for char in statement:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items += 1
    return items


def _size(expression: str, origin: str) -> int | None:
    """The integer a size or count designates: a literal, or a constant expression of
    literals (+, -, *, /, parentheses), as Qiskit evaluates them; None for anything else."""
    text = expression.strip()
    if re.fullmatch(_INTEGER, text):
        return _integer(text, origin)
    if len(text) > 200 or not re.fullmatch(r"[0-9a-fA-FxXoObB_+\-*/() \t]+", text):
        return None
    try:
        tree = ast.parse(re.sub(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])", "", text), mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a literal past int()'s 4,300 digits
        return None
    return _evaluated(tree.body)


_OPERATIONS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
               ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a // b if b else None,
               ast.FloorDiv: lambda a, b: a // b if b else None}
_BEYOND_ANY_SIZE = 10**30  # results are capped here, so that 200 characters stay cheap


def _evaluated(node) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return min(node.value, _BEYOND_ANY_SIZE)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluated(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS:
        left, right = _evaluated(node.left), _evaluated(node.right)
        if left is None or right is None:
            return None
        value = _OPERATIONS[type(node.op)](left, right)
        return None if value is None else max(min(value, _BEYOND_ANY_SIZE), -_BEYOND_ANY_SIZE)
    return None


def _check_loop_ranges(code: str, origin: str) -> None:
    for loop in _LOOP_RANGE.finditer(code):
        for literal in _LITERAL.finditer(loop.group(1)):
            value = _integer(literal.group(1), origin)
            if value > MAX_LOOP_BOUND:
                line = code.count("\n", 0, loop.start()) + 1
                raise SourceError(f"{origin}:{line}: a for loop's range reaches {value:,}, past "
                                  f"what Qiskit can hold (2^62); no program runs that many "
                                  "iterations")


def _integer(literal: str, origin: str) -> int:
    digits = literal.replace("_", "")
    if len(digits) > 20:  # past 64 bits, and int() refuses 4,300 digits and more
        raise SourceError(f"{origin} declares a register size or qubit index of {len(digits)} "
                          f"digits; qrun takes programs of at most {MAX_DECLARED_BITS:,} qubits")
    try:
        return int(digits, 0)
    except ValueError:  # a decimal with leading zeros, which base 0 refuses
        return int(digits, 10) if digits.isdigit() else 0


def _text(content: bytes, origin: str) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{origin} is not UTF-8 text (byte {exc.start})") from None


def parse_circuit(fmt: str, content: bytes, origin: str = "<circuit>", index: int | None = None,
                  include_dir: Path | None = None):
    """Parse program bytes into a Qiskit ``QuantumCircuit`` (free parameters unbound)."""
    if fmt == "qpy":
        return _parse_qpy(content, origin, index)
    text = _text(content, origin)
    if fmt == "qasm2":
        return _parse_qasm2(text, origin, include_dir)
    return _parse_qasm3(text, origin)


def _parse_qasm2(text: str, origin: str, include_dir: Path | None):
    import qiskit.qasm2

    try:
        return _rust.call(qiskit.qasm2.loads, text,
                          include_path=[str(include_dir)] if include_dir else (),
                          custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except _rust.RustPanic as exc:  # `x q[99999999999999999999];` overflowed its lexer
        raise SourceError(f"{origin} is not readable by Qiskit's OpenQASM 2 parser, which "
                          f"failed on it: {_panic_words(exc)}") from None
    except Exception as exc:  # qiskit raises several types; all mean "does not parse"
        raise SourceError(f"{origin} is not valid OpenQASM 2: {one_line(exc)}") from None


class _NeedsCircuit(Exception):
    """A program the counting pass leaves to the full parse (conditions, or bytecode it does
    not know)."""


def _qasm2_facts(text: str, origin: str, include_dir: Path | None) -> Facts:
    """What ``_facts(_parse_qasm2(...))`` gives, without building the circuit.

    Qiskit's OpenQASM 2 parser is two passes: Rust checks the whole program and emits
    bytecode, then Python (qiskit/qasm2/parse.py, ``from_bytecode``) builds a QuantumCircuit
    from it, 70 % of the time (0.36 of 0.5 ms for a 5-qubit circuit of 30 gates). Validation
    needs only the qubit and bit counts, the sums of the registers' sizes; OpenQASM 2 has
    no free parameters. So the bytecode is read here as from_bytecode reads it, and what
    can raise there is still done: every gate that is not one of Qiskit's library gates
    (``delay`` and ``u0`` refuse non-integers, the program's own gates) is constructed with
    its parameters; conditioned operations go to the full parse. tests/test_validation_speed
    compares the two on every corpus and on fuzzed programs.
    """
    try:
        return _rust.call(_count_qasm2, text, include_dir)
    except _NeedsCircuit:
        return _facts(_parse_qasm2(text, origin, include_dir))
    except _rust.RustPanic as exc:
        raise SourceError(f"{origin} is not readable by Qiskit's OpenQASM 2 parser, which "
                          f"failed on it: {_panic_words(exc)}") from None
    except Exception as exc:  # as _parse_qasm2: every error means "does not parse"
        raise SourceError(f"{origin} is not valid OpenQASM 2: {one_line(exc)}") from None


def _count_qasm2(text: str, include_dir: Path | None) -> Facts:
    """Qiskit's parse errors (the Rust pass's, and delay's and u0's) are the program's;
    anything else (another Qiskit's insides, a constructor failing otherwise) is left to
    the full build, which then says what it would have said."""
    from qiskit.qasm2 import QASM2ParseError

    try:
        return _counted_qasm2(text, include_dir)
    except (QASM2ParseError, _NeedsCircuit):
        raise
    except Exception:
        raise _NeedsCircuit() from None


def _counted_qasm2(text: str, include_dir: Path | None) -> Facts:
    import qiskit.qasm2
    from qiskit._accelerate import qasm2 as native  # Qiskit's own pass, as loads calls it
    from qiskit.circuit import library
    from qiskit.qasm2 import parse

    opcode_of, normalize = native.OpCode, qiskit.qasm2._normalize_path
    builders = parse._gate_builder, parse._opaque_builder, parse.QELIB1
    customs = qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS
    bytecode = native.bytecode_from_string(
        text, [normalize(include_dir)] if include_dir else [],
        [native.CustomInstruction(c.name, c.num_params, c.num_qubits, c.builtin) for c in customs],
        (), False)
    gates = [c.constructor for c in customs]  # from_bytecode's table of gate ids
    names = {c.name for c in customs}
    gates += [g for name, g in (("U", library.UGate), ("CX", library.CXGate)) if name not in names]
    qubits = clbits = 0
    stream = iter(bytecode)
    for op in stream:
        opcode = op.opcode
        if opcode == opcode_of.Gate:
            constructor = gates[op.operands[0]]
            if not _library_gate(constructor):
                constructor(*op.operands[1])
        elif opcode in (opcode_of.Measure, opcode_of.Reset, opcode_of.Barrier):
            pass
        elif opcode == opcode_of.DeclareQreg:
            qubits += op.operands[1]
        elif opcode == opcode_of.DeclareCreg:
            clbits += op.operands[1]
        elif opcode == opcode_of.SpecialInclude:
            gates += [builders[2][index] for index in op.operands[0]]
        elif opcode == opcode_of.DeclareGate:
            body = []
            for inner in stream:
                if inner.opcode == opcode_of.EndDeclareGate:
                    break
                body.append(inner)
            gates.append(builders[0](op.operands[0], op.operands[1], tuple(gates), body))
        elif opcode == opcode_of.DeclareOpaque:
            gates.append(builders[1](op.operands[0], op.operands[1]))
        else:
            raise _NeedsCircuit()
    return Facts(parameters=(), required=(), width=qubits, clbits=clbits)


def _library_gate(constructor) -> bool:
    """One of Qiskit's gate classes, whose construction from numbers never fails."""
    return isinstance(constructor, type) and constructor.__module__.startswith("qiskit.circuit.library")


def _panic_words(exc: Exception) -> str:
    if "Overflow" in str(exc):
        return "an integer too large (over 64 bits)"
    return f"internal error ({one_line(exc)})"


def _parse_qasm3(text: str, origin: str):
    from . import qasm3

    return qasm3.parse(text, origin)


def _parse_qpy(content: bytes, origin: str, index: int | None):
    import qiskit.qpy

    _check_qpy_sizes(content, origin)
    try:
        with warnings.catch_warnings():  # "written by a newer Qiskit": any error says more
            warnings.simplefilter("ignore")
            circuits = _rust.call(qiskit.qpy.load, io.BytesIO(content))
    except Exception as exc:  # RustPanic included
        raise SourceError(f"{origin} is not a readable QPY file: {_qpy_message(exc)}") from None
    if index is None:
        if len(circuits) != 1:
            raise SourceError(f"{origin} holds {len(circuits)} circuits; choose one with index:")
        index = 0
    if index >= len(circuits):
        raise SourceError(f"{origin} holds {len(circuits)} circuits; index {index} is out of range")
    return circuits[index]


# QPY's layout (qiskit/qpy/formats.py): a file header (19 bytes from version 10, 18 before),
# a program type byte (from version 5), a table of 8-byte offsets, one per program (from
# version 16), then each circuit, whose header holds its qubit and clbit counts.
_QPY_CIRCUIT = b"q"
_QPY_COUNTS_AT = {1: 10, 2: 5}  # where the two counts start in a circuit header, by version


def _check_qpy_sizes(content: bytes, origin: str) -> None:
    """Refuse a QPY file whose circuits declare more than MAX_DECLARED_BITS qubits or clbits,
    before Qiskit reads it.

    Qiskit's reader (Rust, past any Ctrl-C) builds the declared bits first: one byte changed
    in a 342-byte file declared 335 million qubits and kept it busy for minutes (3 million:
    3 s and 800 MB). Only the counts are read here; all the rest is Qiskit's to judge, and a
    file too damaged to find them in is left to it.
    """
    if len(content) < 19 or not content.startswith(b"QISKIT"):
        return
    version = content[6]
    position = 19 if version >= 10 else 18
    if version >= 5:
        if content[position:position + 1] != _QPY_CIRCUIT:
            return
        position += 1
    programs = struct.unpack_from("!Q", content, 10)[0]
    starts = [position]
    if version >= 16:  # the table gives every circuit's start; the first follows the table
        entries = min(programs, (len(content) - position) // 8)
        starts = [struct.unpack_from("!Q", content, position + 8 * i)[0] for i in range(entries)]
        starts.append(position + 8 * programs)
    counts_at = _QPY_COUNTS_AT[1 if version < 2 else 2]
    for start in starts:
        if start + counts_at + 8 > len(content):
            continue
        qubits, clbits = struct.unpack_from("!II", content, start + counts_at)
        for count, kind in ((qubits, "qubits"), (clbits, "clbits")):
            if count > MAX_DECLARED_BITS:
                raise SourceError(f"{origin} declares a circuit of {count:,} {kind}; qrun takes "
                                  f"programs of at most {MAX_DECLARED_BITS:,} {kind}")


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _qpy_message(exc: Exception) -> str:
    """Qiskit's QPY error, without the Rust backtrace frame (box drawing, ANSI colours and
    source locations) that its message carries."""
    message = getattr(exc, "message", None)  # QiskitError's str() is its message's repr
    text = _ANSI_ESCAPE.sub("", message if isinstance(message, str) else str(exc))
    kept = []
    for line in text.splitlines():
        line = line.strip(" \"'")
        if not line or "Backtrace" in line or line.startswith(("╺", "at crates/")):
            continue
        kept.append(re.sub(r"^\d+: (Error: )?", "", line))
    joined = ""
    for line in kept:  # "binary parsing error:" leads what it found, the rest is a list
        joined += (" " if joined.endswith(":") else "; ") + line if joined else line
    return " ".join(joined.split())[:300] if joined else one_line(exc)


def _inspect_braket(content: bytes, origin: str) -> Facts:
    circuit = parse_braket(content, origin)
    names = tuple(sorted(p.name for p in circuit.parameters))
    return Facts(parameters=names, required=names, width=circuit.qubit_count,
                 clbits=circuit.qubit_count)


def parse_braket(content: bytes, origin: str = "<circuit>"):
    """A Braket ``Circuit`` from Braket's OpenQASM 3 (as its ``to_ir`` writes it)."""
    from braket.circuits import Circuit

    try:
        return Circuit.from_ir(content.decode("utf-8"))
    except Exception as exc:
        raise SourceError(f"{origin} is not a Braket circuit: {one_line(exc)}") from None


def serialize(obj) -> tuple | None:
    """(format, bytes) for a circuit object a Python factory returned, or None if not ours."""
    module = type(obj).__module__
    if module.startswith("qiskit"):
        import qiskit.qasm3
        from qiskit import QuantumCircuit

        if isinstance(obj, QuantumCircuit):
            # OpenQASM 3, not QPY: QPY stores each parameter's random UUID, so the same
            # circuit built twice would get two digests, and every apply would rerun it.
            try:
                return "qasm3", _rust.call(qiskit.qasm3.dumps, obj).encode()
            except Exception as exc:  # RustPanic included
                raise SourceError(f"the circuit cannot be written as OpenQASM 3: "
                                  f"{one_line(exc)}") from None
    if module.startswith("braket"):
        from braket.circuits import Circuit
        from braket.circuits.serialization import IRType

        if isinstance(obj, Circuit):
            return "braket", obj.to_ir(IRType.OPENQASM).source.encode()
    return None
