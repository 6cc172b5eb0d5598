"""Imported once by the worker pool's fork server, so every worker starts with Qiskit loaded.

Only what nearly every gate-model job needs; heavier SDKs load on first use in a worker.
"""

try:
    import qiskit  # noqa: F401
    import qiskit.qasm2  # noqa: F401
    import qiskit.qasm3  # noqa: F401
except ImportError:  # a qrun installed without Qiskit still runs other providers
    pass
