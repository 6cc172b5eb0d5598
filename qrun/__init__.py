"""qrun: declarative, crash-safe batch runs of quantum experiments from YAML manifests.

The Python API mirrors the CLI: ``qrun.validate``, ``qrun.plan``, ``qrun.apply``,
``qrun.status``, ``qrun.export``, ``qrun.unlock``, and ``qrun.results`` (the results as
a pandas DataFrame). Attributes load lazily, so importing qrun (and running ``qrun --help``)
stays fast.
"""

__version__ = "0.1.0"

_API = ("validate", "plan", "apply", "status", "export", "results", "unlock", "state_path", "ExecutorChoice")


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'qrun' has no attribute {name!r}")
