"""Circuit sources: read a circuit once, learn what it declares, keep what will run.

A :class:`Program` is what every later stage works with: the exact bytes that will run (so
the state database records them), their digest (part of every experiment key), and what
validation needs: the parameters the program declares, its size, its family.

One module per kind of program, each parsing with its own SDK's reference parser, imported
lazily on first use (never at CLI start):
    gate      OpenQASM 2 and 3 and Qiskit QPY, parsed by Qiskit; Braket circuits
    pulser    Pulser sequences in their abstract JSON representation
    perceval  Perceval circuits and experiments in Perceval's serialization
    factory   Python functions that build any of the above
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

# Circuit files larger than this are refused rather than parsed: no sane circuit needs it
# (a 100,000-gate OpenQASM file is 2 MB) and a parser fed gigabytes would hang the validation.
MAX_SOURCE_BYTES = 16 * 1024 * 1024

# The kind of hardware a format describes; a backend runs one family.
FAMILY = {"qasm2": "gate", "qasm3": "gate", "qpy": "gate", "braket": "gate",
          "pulser": "pulser", "perceval": "photonic"}
FORMATS = tuple(FAMILY)
FILE_FORMATS = ("qasm2", "qasm3", "qpy", "pulser", "perceval")


class SourceError(Exception):
    """A circuit that cannot be used; the message says why, without a traceback."""


@dataclass(frozen=True)
class Facts:
    """What a format module learns by parsing a program."""

    parameters: tuple  # every free parameter that may be swept, sorted
    required: tuple  # those that have no value yet: the sweep must give them one
    width: int  # qubits, atoms or modes
    clbits: int | None = None  # gate programs: classical bits measured into
    photons: int | None = None  # photonic programs: photons in the input state
    device: dict | None = None  # pulser programs: the device the sequence targets
    # pulser programs: whether the sequence is measured, and the bases it addresses (what
    # the Pasqal check needs, so that it needs no Pulser: providers/pasqal_cloud/check.py)
    measured: bool | None = None
    addressed_bases: tuple | None = None


@dataclass(frozen=True)
class Program:
    format: str  # one of FORMATS
    content: bytes  # what runs; a file's exact bytes, or what a factory built
    digest: str  # identity of the program: sha256 of format, index and content
    facts: Facts
    origin: str  # where it came from (path or factory), for provenance and messages
    index: int = 0  # which circuit of a multi-circuit QPY file
    extra: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return FAMILY[self.format]

    @property
    def parameters(self) -> tuple:
        return self.facts.parameters


def make_program(fmt: str, content: bytes, origin: str, index: int | None = None,
                 include_dir: Path | None = None) -> Program:
    from . import facts_cache  # facts are a function of the digest (see facts_cache)

    digest = hashlib.sha256(f"{fmt}\0{index or 0}\0".encode() + content).hexdigest()
    # No index and index 0 share a digest, not a verdict: a QPY file of two circuits
    # needs an index.
    cached_as = digest if index is None else f"{digest}/{index}"
    facts = facts_cache.lookup(cached_as)
    if facts is None:
        facts = _module(fmt).inspect(fmt, content, origin, index, include_dir)
        facts_cache.remember(cached_as, facts)
    return Program(format=fmt, content=content, digest=digest, facts=facts, origin=origin,
                   index=index or 0)


def load_file(path: Path, origin: str, fmt: str | None = None, index: int | None = None,
              photonic_input: str | None = None) -> Program:
    """Read and parse one circuit file; raise :class:`SourceError` when it is unusable."""
    content = _read(path, origin)
    fmt = fmt or guess_format(path, content)
    if fmt is None:
        raise SourceError(f"cannot tell the format of {origin}; set format: "
                          f"{', '.join(FILE_FORMATS)}")
    if index is not None and fmt != "qpy":
        raise SourceError(f"index: applies to QPY files only; {origin} is {fmt}")
    if fmt == "perceval":
        content = wrap_photonic(content, photonic_input)
    elif photonic_input is not None:
        raise SourceError(f"input: applies to Perceval circuits only; {origin} is {fmt}")
    return make_program(fmt, content, origin, index, include_dir=path.parent)


def wrap_photonic(serialized: bytes, photonic_input: str | None) -> bytes:
    """A Perceval program is its serialization plus the input state given in the manifest."""
    try:
        text = serialized.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"a Perceval serialization is text; byte {exc.start} is not UTF-8") from None
    return json.dumps({"serialized": text, "input": photonic_input}, sort_keys=True).encode()


def guess_format(path: Path, content: bytes) -> str | None:
    suffix = path.suffix.lower()
    by_suffix = {".qpy": "qpy", ".qasm2": "qasm2", ".qasm3": "qasm3", ".pcvl": "perceval"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if _PERCEVAL_START.match(content):
        return "perceval"
    if suffix == ".json":
        return "pulser" if b'"register"' in content else None
    if suffix in (".qasm", ".inc", ".txt", ""):
        return qasm_version(content) or ("qasm3" if suffix == ".qasm" else None)
    return None


def qasm_version(content: bytes) -> str | None:
    """"qasm2" or "qasm3", as the program's OPENQASM statement says; None without one."""
    version = _QASM_VERSION.match(content)
    if version is None:
        return None
    return "qasm2" if version.group(1) == b"2" else "qasm3"


_PERCEVAL_START = re.compile(rb"\s*:PCVL")
# The OpenQASM version statement opens a program, after any whitespace and comments
# (`//` to the end of the line, `/* ... */`), as many as there are: a long licence header
# is no reason to read an OpenQASM 2 file as OpenQASM 3. Possessive repeats (nothing to
# give back) keep the match linear in the file's size; a UTF-8 byte order mark may lead.
_QASM_VERSION = re.compile(rb"(?:\xef\xbb\xbf)?(?:\s++|//[^\n]*+|/\*.*?\*/)*+OPENQASM\s*+([0-9]*)",
                           re.DOTALL)


def _read(path: Path, origin: str) -> bytes:
    # Names are quoted: `source: " "` or a trailing space would otherwise be invisible.
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise SourceError(f"source {origin!r} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise SourceError(f"source {origin!r} is not a regular file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise SourceError(f"{origin!r} is {info.st_size} bytes; circuit files are limited "
                              f"to {MAX_SOURCE_BYTES} bytes")
        with path.open("rb") as stream:  # at most one byte past the limit, should it grow
            content = stream.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise SourceError(f"source file {origin!r} not found") from None
    except OSError as exc:
        raise SourceError(f"cannot read {origin!r}: {exc.strerror}") from None
    if len(content) > MAX_SOURCE_BYTES:
        raise SourceError(f"{origin!r} is over {MAX_SOURCE_BYTES} bytes; circuit files are "
                          "limited to that")
    return content


def _module(fmt: str):
    if FAMILY[fmt] == "gate":
        from . import gate
        return gate
    if fmt == "pulser":
        from . import pulser
        return pulser
    from . import perceval
    return perceval


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
