"""Programs a provider's check passed, remembered per SDK version: checked once, not per command.

A provider's check_program (its spec's check_module) may need the SDK for some programs
(braket.local translates a program with conditions or inputs through Qiskit's basis
translator, 1-2 s of imports). Its verdict is a function of the program's digest, the
device, the options, the installed SDKs and qrun's code, so a program that passed is
remembered in ``checks-<provider id>.json`` of qrun's cache folder (qrun/caches.py), keyed
by the versions of the provider's SDK distributions, of the parsers and of the package that
registered it, and by a digest of the check module's folder and of qrun/sources. Only passes
are kept: a refused program is checked again, and says why with its own path.
"""

from __future__ import annotations

import hashlib
import json
from importlib.util import find_spec
from pathlib import Path

from qrun import caches
from qrun.interrupts import import_sdk
from qrun.providers.spec import ProviderSpec

_state: dict = {}  # provider id -> {"key": ..., "passed": set, "new": set}


def check_program(spec: ProviderSpec, program, device: str, options: dict) -> str | None:
    assert spec.check_module is not None
    if not caches.enabled():
        return import_sdk(spec.check_module).check_program(program, device, options)
    entry = _entry(spec)
    token = _token(spec, program, device, options)
    if token in entry["passed"]:
        return None
    verdict = import_sdk(spec.check_module).check_program(program, device, options)
    if verdict is None and entry["key"] is not None:
        entry["passed"].add(token)
        entry["new"].add(token)
    return verdict


def save() -> None:
    """Write the passes learned since the last save, merged with the file's (the oldest
    dropped past as many entries as the sources' cache keeps)."""
    from qrun.sources import facts_cache

    for provider_id, entry in _state.items():
        if not entry["new"]:
            continue
        name = _file_name(provider_id)
        on_disk = caches.read(name, entry["key"]) or {}
        found = on_disk.get("passed")
        passed: list = found if isinstance(found, list) else []
        merged = list(dict.fromkeys([t for t in passed if isinstance(t, str)] + sorted(entry["new"])))
        caches.write(name, entry["key"], {"passed": merged[-facts_cache.MAX_ENTRIES:]})
        entry["new"] = set()


def forget() -> None:
    _state.clear()


def _entry(spec: ProviderSpec) -> dict:
    if spec.id not in _state:
        key = cache_key(spec)
        payload = (caches.read(_file_name(spec.id), key) if key is not None else None) or {}
        passed = payload.get("passed")
        _state[spec.id] = {"key": key, "new": set(),
                           "passed": {t for t in passed if isinstance(t, str)}
                           if isinstance(passed, list) else set()}
    return _state[spec.id]


def cache_key(spec: ProviderSpec) -> dict | None:
    from qrun.sources import facts_cache

    distributions = dict.fromkeys(list(spec.sdk_packages) + list(facts_cache.PARSERS)
                                  + [spec.distribution or "qrun"])
    versions = caches.versions(distributions)
    try:
        module = find_spec(spec.check_module or "")
    except (ImportError, ValueError):
        return None
    if module is None or not module.origin:
        return None
    sources = Path(facts_cache.__file__).resolve().parent
    code = sorted(Path(module.origin).resolve().parent.glob("*.py")) + sorted(sources.glob("*.py"))
    return {"provider": spec.id, "check": spec.check_module, "versions": versions,
            "code": caches.code_digest(code)}


def _token(spec: ProviderSpec, program, device: str, options: dict) -> str:
    shown = json.dumps([spec.id, program.digest, device, options], sort_keys=True, default=repr)
    return hashlib.sha256(shown.encode()).hexdigest()


def _file_name(provider_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in provider_id)
    return f"checks-{safe}.json"
