"""The job state machine: the states a job passes through, the legal moves between them, and
the one function that changes a job's state.

Local work goes pending -> running -> done | failed; remote work passes through submitting
(intent recorded, provider not yet answered) and submitted (handle known). Waiting is not a
state: a job waiting for its backoff, or for the next apply (``NEXT_APPLY``), keeps its state
and a ``not_before`` time. Every state change is appended to the events table, in the same
transaction as the change (see DESIGN.md, crash safety).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import StateError
from .connection import Connection, now
from .events import record_event
from .rows import PENDING

SUBMITTING, SUBMITTED, RUNNING = "submitting", "submitted", "running"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
UNFINISHED_JOB_STATES = (PENDING, SUBMITTING, SUBMITTED, RUNNING)
FINISHED_JOB_STATES = (DONE, FAILED, CANCELLED)
JOB_STATES = UNFINISHED_JOB_STATES + FINISHED_JOB_STATES
NEXT_APPLY = 1e18  # a job's not_before meaning "not in this run: when apply runs again"

# Every legal change of a job's state, and why it happens. A state moving to itself is a
# change of what is known about the job (a new attempt, the provider's word, a new handle).
TRANSITIONS: Mapping[str, Mapping[str, str]] = {
    PENDING: {
        RUNNING: "a local attempt starts",
        SUBMITTING: "a remote attempt starts: intent and tag recorded before the provider is called",
        CANCELLED: "qrun cancel",
    },
    SUBMITTING: {
        SUBMITTING: "a new attempt of a job whose earlier submission's fate is unknown",
        SUBMITTED: "the provider accepted it, or a lookup by tag found it",
        PENDING: "refused or lost, to be tried again; or its unknown fate forgotten at the user's word",
        FAILED: "refused for good, or out of attempts",
        CANCELLED: "qrun cancel",
    },
    SUBMITTED: {
        SUBMITTED: "the provider's word changed, or a lookup by tag named another handle",
        RUNNING: "the provider reports it running or done",
        PENDING: "it failed at the provider, to be tried again",
        FAILED: "it failed at the provider for good",
        CANCELLED: "qrun cancel",
    },
    RUNNING: {
        RUNNING: "the provider's word changed",
        SUBMITTED: "the provider reports it queued again, or a lookup by tag named another handle",
        DONE: "its results are stored (in the same transaction)",
        FAILED: "some of its work failed, or it failed for good",
        PENDING: "interrupted (a local run that died with its process), or to be tried again",
        CANCELLED: "qrun cancel",
    },
    DONE: {},
    FAILED: {
        PENDING: "qrun retry: it runs again whole",
        DONE: "qrun retry: its finished slices are kept, its failed ones split off",
    },
    CANCELLED: {
        PENDING: "qrun retry: it runs again whole",
        DONE: "qrun retry: its finished slices are kept, its failed ones split off",
    },
}

# The columns a state change may set beside the state.
_COLUMNS = frozenset({"error", "remote_id", "not_before", "attempts", "provider_state"})
_NO_EVENT = object()


class IllegalTransition(StateError):
    """A job was asked to move between states the state machine does not join: a bug."""


def is_legal(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, {})


def check_transition(job_id: int, current: str, new: str) -> None:
    if not is_legal(current, new):
        allowed = ", ".join(TRANSITIONS.get(current, {})) or "none: it is final"
        raise IllegalTransition(f"job {job_id} cannot go from {current} to {new} "
                                f"(from {current}: {allowed})")


def move_job(conn: Connection, apply_id: int | None, job_id: int, new: str,
             detail: Any = _NO_EVENT, **columns: Any) -> str:
    """Change a job's state (and ``columns`` with it), the only place that writes
    ``jobs.state`` after a job is created; raise :class:`IllegalTransition` for a move the
    table forbids. ``detail`` goes with the job's event (none when left out: a change that
    is recorded as one event for many jobs). Returns the state it left."""
    unknown = set(columns) - _COLUMNS
    if unknown:
        raise ValueError(f"move_job cannot set {sorted(unknown)}")
    row = conn.one("SELECT state FROM jobs WHERE id=?", (job_id,))
    if row is None:
        raise StateError(f"job {job_id} is missing from {conn.path}")
    current = row[0]
    check_transition(job_id, current, new)
    sets = "".join(f", {name}=?" for name in columns)
    conn.execute(f"UPDATE jobs SET state=?{sets}, updated_at=? WHERE id=?",
                 (new, *columns.values(), now(), job_id))
    if detail is not _NO_EVENT:
        record_event(conn, apply_id, "job", job_id, new, detail)
    return current
