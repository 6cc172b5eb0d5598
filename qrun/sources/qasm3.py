"""OpenQASM 3 through Qiskit: its native importer when it can, its complete one otherwise.

Qiskit has two OpenQASM 3 importers. The native one (Rust) is 30x faster (0.7 ms against
21 ms a circuit in bench/peer_braket.py's circuits) but handles only part of the language;
on what it does not handle it raises an error, prints to the process's file descriptors,
or panics (Qiskit 2.6 on `include "qelib1.inc"`, `def` subroutines, `defcalgrammar`, `^`
or `!` in a condition): see _rust.py. Whatever the native importer refuses, however it
refuses it, goes to the complete importer (qiskit-qasm3-import), whose verdict counts and
whose messages are turned here into `file:line: what` for the manifest's reader.

Directives (pragmas and annotations) are refused before either importer runs, wherever
they are: see :func:`refuse_directives`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings

from . import SourceError, _rust, one_line


def parse(text: str, origin: str):
    """A ``QuantumCircuit`` from OpenQASM 3 text; raises :class:`SourceError`."""
    circuit = _native_import(text)
    if circuit is not None:
        return circuit
    return _complete_import(text, origin)


# ---------------------------------------------------------------- directives

# A directive starts a statement: at a line's start or after `;`, `{` or `}`. It runs to
# the end of the line (the grammar's RemainingLineContent). `ctrl @ x` is no annotation:
# its `@` follows a modifier.
_DIRECTIVE = re.compile(r"(?:^|(?<=[;{}]))[ \t]*(#?pragma\b|@[A-Za-z_][A-Za-z0-9_.]*)",
                        re.MULTILINE)

# What dropping a pragma that tools are known to write would do, said where it helps.
_PRAGMA_LOSSES = {
    "braket verbatim": "its box would not run verbatim (qrun compiles each program for its "
                       "backend)",
    "braket noise": "its noise channel would be left out",
    "braket unitary": "the gate it applies would be left out",
    "braket result": "its result type would not be computed (qrun returns counts)",
}


def refuse_directives(text: str, code: str, origin: str) -> None:
    """Refuse a program holding a pragma or an annotation, naming the first one and its line.

    Both are valid OpenQASM 3. The specification lets a reader ignore directives it does not
    support, "ideally" without changing the program's meaning, but the directives tools
    write do change it: Braket's `#pragma braket noise ...` adds a noise channel and
    `#pragma braket unitary(...)` a gate. Qiskit's importers take none (the complete one
    refuses pragmas and drops annotations on gates without a word), so a program reaches
    every backend without them; the same program must give the same counts everywhere, and
    dropping a directive silently could change them. So each is refused, with its place.

    ``code`` is ``text`` with comments and strings blanked (gate.blank_comments), which may
    hold "@" or "pragma".
    """
    found = list(_DIRECTIVE.finditer(code))
    if not found:
        return
    start = found[0].start(1)
    line = code.count("\n", 0, start) + 1
    end = text.find("\n", start)
    directive = text[start:end if end >= 0 else len(text)].strip()
    more = ""
    if len(found) > 1:
        later = code.count("\n", 0, found[1].start(1)) + 1
        count = len(found) - 1
        more = f" ({count} more directive{'s follow' if count > 1 else ' follows'}, from line " \
               f"{later})"
    if directive.startswith("@"):
        raise SourceError(
            f"{origin}:{line}: annotation {_quoted(directive)} cannot be honoured: qrun reads "
            "OpenQASM 3 with Qiskit, which would drop it, and dropping a directive may change "
            f"what runs; remove it{more}")
    content = " ".join(directive.split(None, 1)[1:])
    loss = next((why for name, why in _PRAGMA_LOSSES.items() if content.startswith(name)),
                "dropping it may change what runs")
    raise SourceError(
        f"{origin}:{line}: pragma {_quoted(directive)} cannot be honoured: qrun reads "
        f"OpenQASM 3 with Qiskit, which takes no pragmas, so {loss}; remove it{more}")


# The importer quotes names whole: a 5,000-character identifier would fill the terminal.
_LONG_WORD = re.compile(r"\S{81,}")


def _quoted(source_line: str) -> str:
    return repr(source_line if len(source_line) <= 80 else source_line[:77] + "...")


# ---------------------------------------------------------------- the native importer

def _native_import(text: str):
    """The circuit, or None when the native importer does not take the program (however it
    says so: an error, a panic), silently."""
    import qiskit.qasm3

    try:
        return _rust.call(qiskit.qasm3.loads_experimental, text)
    except Exception:  # RustPanic included
        return None


# qrun uses the native importer on purpose, and falls back to the complete one: its
# "experimental" warning says nothing to qrun's users. A filter for that one message, set
# once (catch_warnings around each call swapped the process's filters under other threads,
# and the warning reached the terminal in the middle of an apply).
warnings.filterwarnings("ignore", message="This is an experimental native version of the OpenQASM 3 importer")


# ---------------------------------------------------------------- the complete importer

def _complete_import(text: str, origin: str):
    import qiskit.qasm3

    try:
        with _antlr_console_quiet():
            return qiskit.qasm3.loads(text)
    except Exception as exc:
        raise SourceError(_refusal(exc, text, origin)) from None


# ANTLR's lexer prints each error it meets to sys.stderr before the parser raises (its
# default ConsoleErrorListener, shared by every parser). Swapping sys.stderr for the parse
# silenced every thread's messages too, a notice the main thread printed meanwhile among
# them; this silences only the parsing thread's ANTLR messages.
_quiet = threading.local()
_install_lock = threading.Lock()


@contextlib.contextmanager
def _antlr_console_quiet():
    _quiet_the_console_listener()
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def _quiet_the_console_listener() -> None:
    from antlr4.error.ErrorListener import ConsoleErrorListener

    with _install_lock:
        listener = ConsoleErrorListener.INSTANCE
        if getattr(listener, "_qrun_quiet_in_parsing_threads", False):
            return
        loud = listener.syntaxError

        def syntax_error(*args):
            if not getattr(_quiet, "on", False):
                loud(*args)

        listener.syntaxError = syntax_error  # the instance's, ahead of its class's method
        listener._qrun_quiet_in_parsing_threads = True


# The complete importer's names of constructs it does not support, as a reader knows them.
_CONSTRUCTS = {
    "SubroutineDefinition": "subroutine definitions (def)",
    "CalibrationGrammarDeclaration": "calibration grammars (defcalgrammar)",
    "CalibrationDefinition": "calibrations (defcal)",
    "CalibrationStatement": "calibration blocks (cal)",
    "ExternDeclaration": "extern declarations",
    "SwitchStatement": "switch statements",
    "ClassicalAssignment": "classical assignments",
    "ReturnStatement": "return statements",
    "ConstantDeclaration": "constant declarations (const)",
    "Pragma": "pragmas",
}
_UNSUPPORTED_NODE = re.compile(r"node of type (\w+) is not supported")
_LINE_COLUMN = re.compile(r"^(?:L(\d+):C\d+|(\d+),\d+): ", re.DOTALL)


def _refusal(exc: Exception, text: str, origin: str) -> str:
    """`file:line: what`, from what the complete importer raised."""
    message = _LONG_WORD.sub(lambda word: word.group()[:60] + "...", _message(exc))
    line = None
    located = _LINE_COLUMN.match(message)
    if located:
        line = int(located.group(1) or located.group(2))
        message = message[located.end():]
    token = _offending_token(exc)
    if token is not None:  # a syntax error: ANTLR knows the token, the message is empty
        line = token.line
        message = "unexpected end of file" if token.type == -1 else \
            f"unexpected {_quoted(token.text or '')}"
    where = f"{origin}:{line}" if line else origin
    unsupported = _UNSUPPORTED_NODE.search(message)
    if unsupported:
        node = unsupported.group(1)
        if node in _CONSTRUCTS:  # language features, valid wherever the grammar puts them
            return (f"{where}: {_CONSTRUCTS[node]}: valid OpenQASM 3, but not supported by "
                    f"Qiskit's OpenQASM 3 importer, which qrun reads programs with"
                    f"{_excerpt(text, line)}")
        return (f"{where}: {_plural(_words(node))} are not supported by Qiskit's OpenQASM 3 "
                f"importer, which qrun reads programs with{_excerpt(text, line)}")
    if type(exc).__name__ == "QASM3ParsingError":
        return f"{where}: not valid OpenQASM 3: {message or 'syntax error'}{_excerpt(text, line)}"
    return f"{where}: not readable as OpenQASM 3 by Qiskit: {message}{_excerpt(text, line)}"


def _message(exc: Exception) -> str:
    # QiskitError's str() is the repr of its message; the message itself reads better.
    cause = exc.__cause__
    if type(cause).__name__ == "ConversionError":
        return str(getattr(cause, "message", cause))
    message = getattr(exc, "message", None)
    return " ".join(str(message).split()) if isinstance(message, str) else one_line(exc)


def _offending_token(exc: BaseException | None):
    """The token ANTLR stopped at, from the chain of causes of a parse error."""
    seen = 0
    while exc is not None and seen < 5:
        token = getattr(exc, "offendingToken", None)
        if token is not None:
            return token
        nested = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc, seen = exc.__cause__ or nested, seen + 1
    return None


def _excerpt(text: str, line: int | None) -> str:
    lines = text.splitlines()
    if not line or not 1 <= line <= len(lines) or not lines[line - 1].strip():
        return ""
    return f" (at {_quoted(lines[line - 1].strip())})"


def _words(camel_case: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", camel_case).lower()


def _plural(words: str) -> str:
    """'expression statement' -> 'expression statements', 'quantum phase' -> 'quantum phase
    statements'."""
    if words.endswith(("statement", "declaration", "definition", "expression")):
        return words + "s"
    return words + " statements"
