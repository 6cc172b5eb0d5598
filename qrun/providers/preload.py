"""Imported once by the worker pool's fork server, so every worker starts with its SDKs loaded.

Qiskit always (nearly every gate-model job needs it), then the adapter modules the apply's
local backends use, named by the coordinator in QRUN_PRELOAD_ADAPTERS when it started the
server (executors.start_fork_server): each SDK is imported once here, on a core the
coordinator is not using while it validates, instead of once in every worker.
The fork server also asks to die with the coordinator that started it (its workers ask to
die with it in turn, see executors.py): no worker may outlive a killed apply.
"""

import importlib
import os
import signal

# Ctrl-C reaches the whole process group; the server ignores it only once this preload is
# over, and a second of SDK imports is long enough to be hit (the coordinator decides).
signal.signal(signal.SIGINT, signal.SIG_IGN)

from qrun.executors import PRELOAD_VARIABLE, die_with_parent  # noqa: E402

die_with_parent()

try:
    import qiskit  # noqa: F401
    import qiskit.qasm2  # noqa: F401
    import qiskit.qasm3  # noqa: F401
except ImportError:  # a qrun installed without Qiskit still runs other providers
    pass

for _module in filter(None, os.environ.get(PRELOAD_VARIABLE, "").split(",")):
    try:
        importlib.import_module(_module)
    except Exception:  # noqa: BLE001 (the worker that needs it meets and reports the error)
        pass
