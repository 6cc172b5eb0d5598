"""Rows the store hands out: frozen dataclasses with named fields, never positional tuples.

A :class:`NamedRow` also reads like the mapping it replaced (``row["backend"]``,
``row.get("error")``), so scripts written against the dicts of earlier versions keep
working, and :meth:`NamedRow.as_dict` gives the plain mapping JSON output needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

PENDING = "pending"  # a new job's state; the full set is in jobs.py


class NamedRow:
    """Mixin of the store's row dataclasses: field access by name, or as a mapping.

    The field names are read once per class: an export asks for every field of 100,000
    rows, and ``dataclasses.fields`` each time cost a third of its time."""

    def as_dict(self) -> dict[str, Any]:
        # A (non-slots) dataclass keeps exactly its fields in __dict__: copying it is what
        # building the mapping field by field cost, without the Python loop.
        return dict(self.__dict__)

    def keys(self) -> list[str]:
        return list(_names(type(self)))

    def __getitem__(self, name: str) -> Any:
        if name not in _name_set(type(self)):
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in _name_set(type(self)) else default


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_FIELD_SETS: dict[type, frozenset[str]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return names


def _name_set(cls: type) -> frozenset[str]:
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(_names(cls))
    return names


@dataclass(frozen=True)
class JobRow(NamedRow):
    id: int
    key: str
    backend: str
    provider: str
    backend_config: dict
    seed: int | None
    attempts: int
    state: str = PENDING


@dataclass(frozen=True)
class SliceWork(NamedRow):
    experiment: str
    index: int
    shots: int
    program: str
    params: dict


@dataclass(frozen=True)
class PlanCounts(NamedRow):
    new: int = 0
    cached: int = 0
    failed: int = 0
    pending: int = 0  # stored earlier, not finished yet: resumes
    jobs_created: int = 0


# Rows the engine unpacks where it reads them: named tuples, read by name or unpacked.

class Program(NamedTuple):
    format: str
    content: bytes
    item: int | None


class OpenAttempt(NamedTuple):
    """The attempt of a job in progress, with its idempotency tag."""
    id: int
    tag: str


class UnfinishedJob(NamedTuple):
    """A job of the plan not finished yet: its open attempt and remote handle, if any."""
    job: JobRow
    attempt_id: int | None
    handle: str | None


class LeftRemoteJob(NamedTuple):
    """A remote job an earlier run left behind, with its open attempt."""
    job: JobRow
    attempt_id: int
    tag: str
    handle: str | None
    state: str
