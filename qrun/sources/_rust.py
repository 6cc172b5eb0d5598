"""Calling Qiskit's parsers written in Rust: their panics, and what they print.

Qiskit's OpenQASM 2 parser, its native OpenQASM 3 importer and its QPY reader are Rust.
A Rust panic reaches Python as ``pyo3_runtime.PanicException``, which derives from
BaseException (so that ``except Exception`` does not swallow it): the OpenQASM 2 parser
panics on an integer literal too large for 64 bits, the native OpenQASM 3 importer on
`def` subroutines, `defcalgrammar` and `^` in a condition. A panic prints its message
(with RUST_BACKTRACE, a backtrace) on file descriptor 2, and the native importer prints
every error it finds on descriptor 1, past sys.stdout and sys.stderr: lines that broke
`qrun validate`'s output (nothing on stdout, one line per problem on stderr).

Printing those errors is also what makes the native importer slow on a bad program: 46 s
for 20,000 `measure q[0] -> c[0];` lines (valid OpenQASM 3 it does not parse), 11 s for a
20 kB line of stray `$`, the time growing with the square of the errors. So its
descriptors 1 and 2 are pointed at a file that refuses every write: the first error it
prints fails, it panics, and the program goes at once to the complete importer.

:func:`call` runs a Rust parser so, and turns a panic into :class:`RustPanic`, an ordinary
Exception; KeyboardInterrupt and SystemExit go on as ever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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
_streams_owned = False


@contextlib.contextmanager
def output_hidden():
    """Descriptors 1 and 2 refuse every write meanwhile. What Python code prints, in any
    thread (the progress bar, a notice), goes on: sys.stdout and sys.stderr were moved, once,
    onto copies of the two descriptors (_own_streams)."""
    with _OUTPUT_LOCK, contextlib.ExitStack() as stack:
        _own_streams()
        refusing = stack.enter_context(_refusing_descriptor())
        for fd in (1, 2):
            stack.enter_context(_descriptor_replaced(fd, refusing))
        yield


def _own_streams() -> None:
    """Once per process (under the lock): point sys.stdout and sys.stderr, where they write
    to descriptors 1 and 2, at copies of them, for good.

    Swapping the streams around each parse instead lost other threads' lines: a thread that
    had looked sys.stderr up just before the swap wrote into the refusing descriptor, and a
    swapped-in stream used after the swap back wrote to its closed copy's number, which the
    process may have given to another file by then (the state database). A stream that is
    not on descriptor 1 or 2 (a test's capture, an embedding's) is left as it is: hiding the
    descriptors does not touch it."""
    global _streams_owned
    if _streams_owned:
        return
    _streams_owned = True
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if _fileno(stream) != fd:
            continue
        try:
            stream.flush()
            copy = open(os.dup(fd), "w", encoding=stream.encoding, errors=stream.errors,
                        closefd=True)
            copy.reconfigure(line_buffering=stream.line_buffering)
        except (OSError, ValueError, AttributeError):
            continue
        setattr(sys, name, copy)


@contextlib.contextmanager
def _refusing_descriptor():
    """A descriptor every write to fails: /dev/full (ENOSPC), else a pipe without reader
    (EPIPE, which CPython's ignored SIGPIPE turns into an error), else /dev/null."""
    if os.path.exists("/dev/full"):
        fd = os.open("/dev/full", os.O_WRONLY)
    elif signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN:
        reader, fd = os.pipe()
        os.close(reader)
    else:  # an embedding that keeps SIGPIPE fatal: writes succeed, unseen
        fd = os.open(os.devnull, os.O_WRONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _descriptor_replaced(fd: int, replacement: int):
    try:
        saved = os.dup(fd)
    except OSError:  # nothing to replace (closed)
        yield
        return
    os.dup2(replacement, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None
