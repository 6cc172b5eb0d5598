"""Devices and limits of a provider whose adapter lists them, cached per SDK version.

A spec with ``devices=None`` and no device pattern (qiskit.ibm-local: the runtime's fake
backends) learns its device names and their limits from its adapter module, which imports
the SDK: 0.5-4 s for qiskit-ibm-runtime. What the adapter answers changes only with the
installed software, so it is kept in ``devices-<provider id>.json`` of qrun's cache folder
(qrun/caches.py), keyed by the provider id, the versions of its SDK distributions and of
the package that registered it, and a digest of its adapter module's code. The first
validation builds it by importing; later ones read it. A device's limits are asked of the
adapter the first time that device is named, and added to the file.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from importlib.util import find_spec

from qrun import caches
from qrun.providers.spec import Limits, ProviderSpec

_LIMIT_FIELDS = frozenset(f.name for f in fields(Limits))
_loaded: dict = {}  # provider id -> (key, payload) read or written by this process


def known_devices(spec: ProviderSpec) -> list[str]:
    if not caches.enabled():  # QRUN_NO_CACHE: the adapter is asked, as without a cache
        return list(spec.adapter_module().known_devices())
    key, payload = _entry(spec)
    devices = payload.get("devices")
    if isinstance(devices, list) and all(isinstance(d, str) for d in devices):
        return list(devices)
    devices = [str(d) for d in spec.adapter_module().known_devices()]
    payload["devices"] = devices
    _save(spec, key, payload)
    return list(devices)


def device_limits(spec: ProviderSpec, device: str) -> Limits:
    if not caches.enabled():
        return spec.adapter_module().device_limits(device)
    key, payload = _entry(spec)
    limits = payload.setdefault("limits", {})
    cached = _limits_from(limits.get(device)) if isinstance(limits, dict) else None
    if cached is not None:
        return cached
    found = spec.adapter_module().device_limits(device)
    if not isinstance(limits, dict):
        limits = payload["limits"] = {}
    limits[device] = asdict(found)
    _save(spec, key, payload)
    return found


def _entry(spec: ProviderSpec) -> tuple[dict | None, dict]:
    """(key, payload) for ``spec``: the key is None when it cannot be made (an SDK missing:
    the adapter's import then says what to install, as without a cache)."""
    if spec.id in _loaded:
        return _loaded[spec.id]
    key = cache_key(spec)
    payload = (caches.read(_file_name(spec), key) if key is not None else None) or {}
    _loaded[spec.id] = key, payload
    return key, payload


def cache_key(spec: ProviderSpec) -> dict | None:
    distributions = list(spec.sdk_packages) + [spec.distribution or "qrun"]
    versions = caches.versions(distributions)
    if any(version is None for version in versions.values()):
        return None
    try:
        module = find_spec(spec.adapter)  # imports its SDK-free package, not the adapter
    except (ImportError, ValueError):
        return None
    if module is None or not module.origin:
        return None
    return {"provider": spec.id, "versions": versions,
            "adapter": caches.code_digest([module.origin])}


def _limits_from(value) -> Limits | None:
    if not isinstance(value, dict) or set(value) != _LIMIT_FIELDS:
        return None
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in value.values()):
        return None
    return Limits(**value)


def _save(spec: ProviderSpec, key: dict | None, payload: dict) -> None:
    if key is not None:
        caches.write(_file_name(spec), key, payload)


def _file_name(spec: ProviderSpec) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.id)
    return f"devices-{safe}.json"


def forget() -> None:
    """Drop what this process read (tests: the next question reads the file again)."""
    _loaded.clear()
