"""Circuit sources: read a circuit file once, learn what it declares, keep its exact bytes.

A :class:`Program` is what every later stage works with: the file's bytes (so the state
database records exactly what ran), a digest of them (part of every experiment key), and
what validation needs to know: the parameters it declares and its qubit count.

Parsing OpenQASM and QPY needs Qiskit's parsers, the reference implementations of those
formats. They are imported here lazily, on the first source read, never at CLI start.
Backends decide how to turn a Program into their own circuit objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GATE_FORMATS = ("qasm2", "qasm3", "qpy")

# Circuit files larger than this are refused rather than parsed: no sane circuit needs it
# and a parser fed gigabytes would hang the validation.
MAX_SOURCE_BYTES = 64 * 1024 * 1024


class SourceError(Exception):
    """A circuit file that cannot be used; the message says why, without a traceback."""


@dataclass(frozen=True)
class Program:
    format: str  # one of GATE_FORMATS
    content: bytes
    digest: str  # sha256 of format, index and content: identity of the program
    parameters: tuple  # names of the free parameters, sorted
    num_qubits: int
    num_clbits: int
    origin: str  # the path as written in the manifest, for provenance
    index: int = 0  # which circuit of a multi-circuit QPY file

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


def guess_format(path: Path, content: bytes) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".qpy":
        return "qpy"
    if suffix in (".qasm2",):
        return "qasm2"
    if suffix in (".qasm3",):
        return "qasm3"
    if suffix in (".qasm", ".inc", ".txt", ""):
        head = content[:4096].decode("utf-8", errors="replace")
        for line in head.splitlines():
            stripped = line.split("//", 1)[0].strip()
            if stripped.upper().startswith("OPENQASM"):
                return "qasm2" if stripped.split()[1].startswith("2") else "qasm3"
        return "qasm3" if suffix == ".qasm" else None
    return None


def load_program(path: Path, origin: str, fmt: str | None = None, index: int | None = None) -> Program:
    """Read and parse one circuit file; raise :class:`SourceError` when it is unusable."""
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise SourceError(f"{origin} is {size} bytes; circuit files are limited to "
                              f"{MAX_SOURCE_BYTES} bytes")
        content = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"source file {origin} not found") from None
    except IsADirectoryError:
        raise SourceError(f"source {origin} is a folder, not a file") from None
    except OSError as exc:
        raise SourceError(f"cannot read {origin}: {exc.strerror}") from None
    fmt = fmt or guess_format(path, content)
    if fmt is None:
        raise SourceError(f"cannot tell the format of {origin}; set format: qasm2, qasm3 or qpy")
    circuit = parse_circuit(fmt, content, origin, index, include_dir=path.parent)
    params = tuple(sorted(p.name for p in circuit.parameters))
    digest = hashlib.sha256(f"{fmt}\0{index or 0}\0".encode() + content).hexdigest()
    return Program(format=fmt, content=content, digest=digest, parameters=params,
                   num_qubits=circuit.num_qubits, num_clbits=circuit.num_clbits,
                   origin=origin, index=index or 0)


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
        raise SourceError(f"{origin} is not valid OpenQASM 2: {_one_line(exc)}") from None


def _parse_qasm3(text: str, origin: str):
    import qiskit.qasm3

    try:
        return qiskit.qasm3.loads(text)
    except Exception as exc:
        raise SourceError(f"{origin} is not valid OpenQASM 3: {_one_line(exc)}") from None


def _parse_qpy(content: bytes, origin: str, index: int | None):
    import io

    import qiskit.qpy

    try:
        circuits = qiskit.qpy.load(io.BytesIO(content))
    except Exception as exc:
        raise SourceError(f"{origin} is not a readable QPY file: {_one_line(exc)}") from None
    if index is None:
        if len(circuits) != 1:
            raise SourceError(f"{origin} holds {len(circuits)} circuits; choose one with index:")
        index = 0
    if index >= len(circuits):
        raise SourceError(f"{origin} holds {len(circuits)} circuits; index {index} is out of range")
    return circuits[index]


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
