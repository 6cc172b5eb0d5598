"""Calling Qiskit's parsers written in Rust: their panics, and what they print.

Qiskit's OpenQASM 2 parser, its native OpenQASM 3 importer and its QPY reader are Rust.
A Rust panic reaches Python as ``pyo3_runtime.PanicException``, which derives from
BaseException (so that ``except Exception`` does not swallow it): the OpenQASM 2 parser
panics on an integer literal too large for 64 bits, the native OpenQASM 3 importer on
`def` subroutines, `defcalgrammar` and `^` in a condition. The panic also prints its
message (with RUST_BACKTRACE, a backtrace) on file descriptor 2, and the native importer
prints each error it finds on descriptor 1, both past sys.stdout and sys.stderr: lines
that broke `qrun validate`'s output (nothing on stdout, one line per problem on stderr).

:func:`call` runs such a parser with both descriptors hidden and turns a panic into
:class:`RustPanic`, an ordinary Exception; KeyboardInterrupt and SystemExit go on as ever.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading


class RustPanic(Exception):
    """Qiskit's Rust code panicked: an internal error of Qiskit's, on this input."""


def call(function, *args, **kwargs):
    """``function(*args, **kwargs)``, silent, a panic raised as :class:`RustPanic`."""
    try:
        with output_hidden():
            return function(*args, **kwargs)
    except Exception:
        raise
    except BaseException as exc:
        if is_panic(exc):
            raise RustPanic(" ".join(str(exc).split()) or "panic") from None
        raise


def is_panic(exc: BaseException) -> bool:
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


_OUTPUT_LOCK = threading.Lock()


@contextlib.contextmanager
def output_hidden():
    """Hide what is written to file descriptors 1 and 2 meanwhile.

    What other threads print meanwhile is written out afterwards if the call succeeds, and
    lost with the noise if it fails.
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
