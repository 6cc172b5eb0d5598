"""Imported once by the worker pool's fork server, so every worker starts with Qiskit loaded.

Only what nearly every gate-model job needs; heavier SDKs load on first use in a worker.
The fork server also asks to die with the coordinator that started it (its workers ask to
die with it in turn, see executors.py): no worker may outlive a killed apply.
"""

from qrun.executors import die_with_parent

die_with_parent()

try:
    import qiskit  # noqa: F401
    import qiskit.qasm2  # noqa: F401
    import qiskit.qasm3  # noqa: F401
except ImportError:  # a qrun installed without Qiskit still runs other providers
    pass
