"""Python factories: `source: {python: "pkg.module:function", args: {...}}`.

The function is imported from the manifest's folder (which is put first on the import path,
as Hydra and Snakemake do with a project's code) and called with ``args``. It returns a
Qiskit ``QuantumCircuit``, a Braket ``Circuit``, a Pulser ``Sequence`` or a Perceval
``Circuit``, component (``pcvl.BS()``, any ``ACircuit``) or ``Experiment``; what it returns
is serialized, and that serialization is the program: its digest is the key's, and the
state database keeps it. So the factory runs at validation time only, in the coordinator,
never in workers.

This runs code from the repository holding the manifest: review factories as you would
any code you run. A factory must be deterministic (same args, same circuit), or every apply
would see new experiments.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..interrupts import keep_ctrl_c
from . import SourceError, make_program, one_line, wrap_photonic


def load_factory(spec: dict, folder: Path, photonic_input: str | None = None):
    target = spec["python"]
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name or not function_name.isidentifier():
        raise SourceError(f"python: {target!r} must read 'package.module:function'")
    function = _import(module_name, function_name, folder, target)
    try:
        built = function(**spec.get("args", {}))
    except Exception as exc:  # the user's code: report its error, not ours
        raise SourceError(f"{target} raised {type(exc).__name__}: {one_line(exc)}") from None
    keep_ctrl_c()  # the factory may have imported an SDK that takes SIGINT over
    fmt, content = _serialize(built, target)
    if fmt == "perceval":
        content = wrap_photonic(content, photonic_input)
    elif photonic_input is not None:
        raise SourceError(f"input: applies to Perceval circuits only; {target} built {fmt}")
    return make_program(fmt, content, f"python:{target}")


def _import(module_name: str, function_name: str, folder: Path, target: str):
    _forget_foreign(module_name, folder)
    sys.path.insert(0, str(folder))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SourceError(f"cannot import {module_name} for {target}: "
                          f"{type(exc).__name__}: {one_line(exc)}") from None
    finally:
        sys.path.remove(str(folder))
    function = getattr(module, function_name, None)
    if not callable(function):
        raise SourceError(f"{module_name} has no function {function_name}")
    return function


def _forget_foreign(module_name: str, folder: Path) -> None:
    """Drop a same-named module imported from another folder (another manifest's code)."""
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    location = getattr(loaded, "__file__", None)
    if loaded is None or location is None or Path(location).resolve().is_relative_to(folder.resolve()):
        return
    if "site-packages" in location or "dist-packages" in location:
        return  # an installed package: the user means that one
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _serialize(built, target: str) -> tuple:
    from . import gate, perceval, pulser

    for module in (gate, pulser, perceval):
        result = module.serialize(built)
        if result is not None:
            return result
    raise SourceError(f"{target} returned a {type(built).__name__}; expected a Qiskit "
                      "QuantumCircuit, a Braket Circuit, a Pulser Sequence or a Perceval "
                      "circuit, component or Experiment")
