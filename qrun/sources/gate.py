"""Gate-model programs: OpenQASM 2 and 3 and QPY (parsed by Qiskit), and Braket circuits.

Qiskit's parsers are the reference implementations of OpenQASM and QPY; every gate-model
backend reads these programs through :func:`parse_circuit`. Braket circuits (built by a
Python factory) keep Braket's own OpenQASM dialect and are read by the Braket SDK.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from . import Facts, SourceError, one_line

# The standard gate libraries, which Qiskit has built in (each parser judges the other
# version's). A program is its own text, sent to backends without the files it includes,
# so no other include can work.
STANDARD_INCLUDES = ("qelib1.inc", "stdgates.inc")
# Comments (skipped) and strings (kept whole: a file name may hold "//").
_COMMENT_OR_STRING = re.compile(r'"[^"\n]*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_INCLUDE = re.compile(r'\binclude\s*"([^"\n]*)"')


def inspect(fmt: str, content: bytes, origin: str, index: int | None,
            include_dir: Path | None) -> Facts:
    if fmt == "braket":
        return _inspect_braket(content, origin)
    if fmt in ("qasm2", "qasm3"):
        _check_includes(content, origin)
    circuit = parse_circuit(fmt, content, origin, index, include_dir)
    names = tuple(sorted(p.name for p in circuit.parameters))
    return Facts(parameters=names, required=names, width=circuit.num_qubits,
                 clbits=circuit.num_clbits)


def _check_includes(content: bytes, origin: str) -> None:
    """Refuse an include of any other file before a parser opens it.

    Qiskit's OpenQASM 2 parser opens any path (`include "/etc/hostname";` showed the file's
    first word in its error), and its native OpenQASM 3 importer reads `include "/dev/zero";`
    forever; neither include could reach a backend anyway.
    """
    text = content.decode("utf-8", errors="replace")
    code = _COMMENT_OR_STRING.sub(lambda m: m.group() if m.group().startswith('"') else " ", text)
    for name in _INCLUDE.findall(code):
        if name not in STANDARD_INCLUDES:
            raise SourceError(f"{origin} includes {name!r}; a program reaches backends as its "
                              "own text, so only the standard qelib1.inc (OpenQASM 2) or "
                              "stdgates.inc (OpenQASM 3) may be included: copy the definitions "
                              "into the file")


def parse_circuit(fmt: str, content: bytes, origin: str = "<circuit>", index: int | None = None,
                  include_dir: Path | None = None):
    """Parse program bytes into a Qiskit ``QuantumCircuit`` (free parameters unbound)."""
    if fmt == "qpy":
        return _parse_qpy(content, origin, index)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{origin} is not UTF-8 text (byte {exc.start})") from None
    if fmt == "qasm2":
        return _parse_qasm2(text, origin, include_dir)
    return _parse_qasm3(text, origin)


def _parse_qasm2(text: str, origin: str, include_dir: Path | None):
    import qiskit.qasm2

    try:
        return qiskit.qasm2.loads(
            text,
            include_path=[str(include_dir)] if include_dir else (),
            custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS,
        )
    except Exception as exc:  # qiskit raises several types; all mean "does not parse"
        raise SourceError(f"{origin} is not valid OpenQASM 2: {one_line(exc)}") from None


def _parse_qasm3(text: str, origin: str):
    """Qiskit's native importer when it can (30x faster: 0.7 ms against 21 ms a circuit in
    bench/peer_braket.py's circuits), else its complete one (inputs, and whatever the native
    one does not handle yet), whose verdict and messages count."""
    import warnings

    import qiskit.qasm3

    try:
        with warnings.catch_warnings(), _native_output_hidden():
            warnings.simplefilter("ignore")  # "experimental native version of the importer"
            return qiskit.qasm3.loads_experimental(text)
    except Exception:
        pass
    try:
        return qiskit.qasm3.loads(text)
    except Exception as exc:
        raise SourceError(f"{origin} is not valid OpenQASM 3: {one_line(exc)}") from None


_OUTPUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_output_hidden():
    """Hide what the native importer prints while it runs.

    It prints each error it finds (a framed excerpt of the program) straight to file
    descriptor 1, past sys.stdout; its verdict is not the one that counts, and the lines
    broke `qrun validate`'s output (nothing on stdout, one line per problem on stderr).
    Both descriptors are hidden. What other threads print meanwhile is written out
    afterwards if the import succeeds, and lost with the noise if it fails.
    """
    with _OUTPUT_LOCK, contextlib.ExitStack() as stack:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stack.enter_context(_descriptor_hidden(fd, stream))
        yield


@contextlib.contextmanager
def _descriptor_hidden(fd: int, stream):
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # nothing to hide (closed, or no stream)
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
            sink.seek(0)
            os.write(fd, sink.read())  # reached only on success
    finally:
        os.close(saved)


def _parse_qpy(content: bytes, origin: str, index: int | None):
    import qiskit.qpy

    try:
        circuits = qiskit.qpy.load(io.BytesIO(content))
    except Exception as exc:
        raise SourceError(f"{origin} is not a readable QPY file: {one_line(exc)}") from None
    if index is None:
        if len(circuits) != 1:
            raise SourceError(f"{origin} holds {len(circuits)} circuits; choose one with index:")
        index = 0
    if index >= len(circuits):
        raise SourceError(f"{origin} holds {len(circuits)} circuits; index {index} is out of range")
    return circuits[index]


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
                return "qasm3", qiskit.qasm3.dumps(obj).encode()
            except Exception as exc:
                raise SourceError(f"the circuit cannot be written as OpenQASM 3: "
                                  f"{one_line(exc)}") from None
    if module.startswith("braket"):
        from braket.circuits import Circuit
        from braket.circuits.serialization import IRType

        if isinstance(obj, Circuit):
            return "braket", obj.to_ir(IRType.OPENQASM).source.encode()
    return None
