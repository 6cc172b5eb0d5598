"""What changed between a stored experiment and the one of the manifest that replaces it.

An experiment's key hashes its program, bound parameters, backend identity, shots and seed
(planner.experiment_key). When a key changes, `plan` pairs the new experiment with the
stored one of the same circuit, backend and sweep point (store/diffs.py) and this module
names each difference, before -> after. Pure functions over what the store recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

NOT_RECORDED = "not recorded"  # stored by a qrun older than schema 5 (store/migrations.py)


@dataclass(frozen=True)
class Change:
    field: str  # source, params.<name>, shots, seed, provider, device, options.<name>, endpoint
    before: Any
    after: Any

    def as_dict(self) -> dict:
        return asdict(self)


def between(before, after, identities: dict, origins: dict) -> list[Change]:
    """The differences of two store.diffs.Facts. ``identities``: backend digest -> identity
    (the backend's provider, device, options); ``origins``: program digest -> its file.

    Facts an older qrun did not record are named only when nothing recorded explains the
    new key (they would otherwise be noise on every change)."""
    known: list[Change] = []
    if before.program != after.program:
        known.append(Change("source", _source(before.program, origins),
                            _source(after.program, origins)))
    known += _params(before.params, after.params)
    if before.shots != after.shots:
        known.append(Change("shots", before.shots, after.shots))
    unknown: list[Change] = []
    if before.seed is None:
        unknown.append(Change("seed", NOT_RECORDED, json.loads(after.seed) if after.seed else None))
    elif before.seed != after.seed:
        known.append(Change("seed", json.loads(before.seed), json.loads(after.seed or "null")))
    if before.backend_identity != after.backend_identity:
        old, new = identities.get(before.backend_identity), identities.get(after.backend_identity)
        if old is None or new is None:
            unknown.append(Change("backend", NOT_RECORDED if old is None else old,
                                  NOT_RECORDED if new is None else new))
        else:
            known += _backend(old, new)
    return known or unknown


def _source(digest: str, origins: dict) -> str:
    origin = origins.get(digest)
    short = f"sha256 {digest[:12]}"
    return f"{origin} ({short})" if origin else short


def _params(before_json: str, after_json: str) -> list[Change]:
    if before_json == after_json:
        return []
    before, after = json.loads(before_json), json.loads(after_json)
    return [Change(f"params.{name}", before.get(name), after.get(name))
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]


def _backend(before: dict, after: dict) -> list[Change]:
    found = [Change(name, before.get(name), after.get(name)) for name in ("provider", "device")
             if before.get(name) != after.get(name)]
    old, new = before.get("options") or {}, after.get("options") or {}
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            # A cloud endpoint is an option of its adapter; it is named as what it is.
            label = "endpoint" if name == "endpoint" else f"options.{name}"
            found.append(Change(label, old.get(name), new.get(name)))
    return found


def shown(value: Any) -> str:
    """A before/after value as text (numbers as given, absent as 'none')."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
