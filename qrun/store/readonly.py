"""A small read-only API over a campaign's state, for tests, scripts and notebooks:

    from qrun import store
    with store.read("runs/ghz-sweep.sqlite") as state:
        done = [r.experiment for r in state.results()]
        running = state.jobs(state="running")

It never writes (not even a lock), works while an apply runs (WAL readers never block the
writer), and on an archived campaign in a read-only folder. Rows are named: whole table
rows, JSON columns decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .connection import Connection
from .rows import NamedRow


@dataclass(frozen=True)
class ResultRow(NamedRow):
    experiment: str
    counts: dict
    shots: int
    metadata: dict | None
    apply_id: int | None
    completed_at: float


@dataclass(frozen=True)
class ExperimentRow(NamedRow):
    key: str
    circuit: str
    backend: str
    provider: str
    program: str
    params: dict
    shots: int
    state: str
    error: str | None
    plan_apply: int | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class JobStateRow(NamedRow):
    id: int
    key: str
    backend: str
    provider: str
    backend_config: dict
    seed: int | None
    state: str
    attempts: int
    not_before: float | None
    remote_id: str | None
    provider_state: str | None
    error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class SliceRow(NamedRow):
    """A share of an experiment's shots, run by one job (most experiments have one)."""
    experiment: str
    idx: int
    shots: int
    job_id: int
    counts: dict | None
    metadata: dict | None


@dataclass(frozen=True)
class AttemptRow(NamedRow):
    id: int
    job_id: int
    number: int
    apply_id: int | None
    state: str
    tag: str
    remote_id: str | None
    started_at: float
    finished_at: float | None
    error: str | None
    tag_state: str | None


@dataclass(frozen=True)
class EventRow(NamedRow):
    id: int
    ts: float
    apply_id: int | None
    entity: str
    entity_id: str
    state: str
    detail: str | None


@dataclass(frozen=True)
class ApplyRow(NamedRow):
    id: int
    command: str
    started_at: float
    finished_at: float | None
    manifest_path: str
    manifest_sha256: str
    git_commit: str | None
    git_dirty: int | None
    qrun_version: str
    host: str
    pid: int
    outcome: str | None


Row = TypeVar("Row", bound=NamedRow)
_JSON_COLUMNS = {"counts", "metadata", "params", "backend_config"}


class StateReader:
    """A read-only view of one state database; use :func:`read`."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def results(self) -> list[ResultRow]:
        return self._rows(ResultRow, "results", "rowid")

    def experiments(self, state: str | None = None) -> list[ExperimentRow]:
        return self._rows(ExperimentRow, "experiments", "rowid", state=state)

    def jobs(self, state: str | None = None) -> list[JobStateRow]:
        return self._rows(JobStateRow, "jobs", "id", state=state)

    def attempts(self, state: str | None = None) -> list[AttemptRow]:
        return self._rows(AttemptRow, "attempts", "id", state=state)

    def slices(self) -> list[SliceRow]:
        return self._rows(SliceRow, "slices", "rowid")

    def events(self, entity: str | None = None) -> list[EventRow]:
        return self._rows(EventRow, "events", "id", entity=entity)

    def applies(self) -> list[ApplyRow]:
        return self._rows(ApplyRow, "applies", "id")

    def locks(self) -> list[dict[str, Any]]:
        """The lock rows (none while no command holds the campaign)."""
        return [dict(zip(("name", "host", "pid", "since", "command"), row)) for row in
                self._conn.all("SELECT name, host, pid, since, command FROM locks ORDER BY name")]

    def _rows(self, kind: type[Row], table: str, order: str, **where: str | None) -> list[Row]:
        names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
        tests = {column: value for column, value in where.items() if value is not None}
        clause = " AND ".join(f"{column}=?" for column in tests)
        sql = (f"SELECT {', '.join(names)} FROM {table}" + (f" WHERE {clause}" if clause else "")
               + f" ORDER BY {order}")
        return [kind(**{name: _decoded(name, value) for name, value in zip(names, row)})
                for row in self._conn.all(sql, tuple(tests.values()))]


def _decoded(column: str, value: Any) -> Any:
    return json.loads(value) if column in _JSON_COLUMNS and value is not None else value


def read(path: str | Path) -> StateReader:
    """Open a campaign's state database read-only (StateError when it is missing or unusable)."""
    from .facade import open_connection

    return StateReader(open_connection(Path(path), create=False, readonly=True))
