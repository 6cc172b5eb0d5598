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
    """Mixin of the store's row dataclasses: field access by name, or as a mapping."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default) if name in self.keys() else default


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
