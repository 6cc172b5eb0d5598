"""Ctrl-C stays qrun's, whatever an SDK does when it is imported.

Quandela's C++ extension (exqalibur, imported by every Perceval import) installs its own
C handler for SIGINT and swallows the signal: after a .pcvl file was parsed or the Quandela
adapter loaded, Ctrl-C no longer stopped `qrun apply` (it ran on, polling, until killed).
Python still believes its own handler is installed, so installing it again (one sigaction)
gives the signal back to Python. Only the main thread may install a handler, and only a
first import can take the signal over, so this runs after qrun's lazy SDK imports.
"""

from __future__ import annotations

import importlib
import signal
import threading
from types import ModuleType


def keep_ctrl_c() -> None:
    """Install Python's own SIGINT handler again, if an extension has replaced it."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    if handler is not None:  # None: installed from outside Python, left alone
        signal.signal(signal.SIGINT, handler)


def import_sdk(name: str) -> ModuleType:
    """``importlib.import_module(name)`` that leaves Ctrl-C working."""
    module = importlib.import_module(name)
    keep_ctrl_c()
    return module
