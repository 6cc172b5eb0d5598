"""The queue of work: which jobs may start now, what they run, and when waiting ones wake.

Waiting is a time, not a state: a job held back (a backoff, a silent service, the next
apply) keeps its state and gets a ``not_before``; these writes never change a job's state.
"""

from __future__ import annotations

import json

from ..errors import StateError
from .connection import Connection, now
from .events import record_event
from .jobs import NEXT_APPLY, PENDING, RUNNING, SUBMITTED, SUBMITTING, UNFINISHED_JOB_STATES
from .migrations import remote_providers
from .rows import JobRow, LeftRemoteJob, OpenAttempt, Program, SliceWork, UnfinishedJob

JOB_COLUMNS = "j.id, j.key, j.backend, j.provider, j.backend_config, j.seed, j.attempts, j.state"
_IN_PLAN = ("EXISTS (SELECT 1 FROM slices s JOIN experiments e ON e.key=s.experiment "
            "WHERE s.job_id=j.id AND e.plan_apply=?)")
TAG_UNKNOWN = "unknown"


def job_row(r) -> JobRow:
    return JobRow(id=r[0], key=r[1], backend=r[2], provider=r[3], backend_config=json.loads(r[4]),
                  seed=r[5], attempts=r[6], state=r[7])


def _marks(values) -> str:
    return ",".join("?" * len(values))


# ---------------------------------------------------------------- what to start

def ready_jobs(conn: Connection, apply_id: int, limit: int) -> list[JobRow]:
    """Jobs of the current plan to start now, oldest first: pending ones, and remote ones
    whose submission failed in a way that leaves it unknown (still submitting), once
    their backoff has passed."""
    stamp = now()
    rows = [row for state in (PENDING, SUBMITTING)
            for row in _ready_in_state(conn, state, apply_id, stamp, limit)]
    return [job_row(r) for r in sorted(rows, key=lambda r: r[0])[:limit]]


def _ready_in_state(conn: Connection, state: str, apply_id: int, stamp: float, limit: int) -> list:
    # One state at a time, through the (state, id) index, so SQLite reads jobs already in
    # id order and stops after `limit` of them: the engine asks after every finished
    # job, and a `state IN (...)` query sorted all waiting jobs each time (quadratic).
    # INDEXED BY: left to itself, SQLite picks (state, not_before) and sorts.
    return conn.all(
        f"SELECT {JOB_COLUMNS} FROM jobs j INDEXED BY idx_jobs_state_id "
        f"WHERE j.state=? AND j.not_before<=? AND {_IN_PLAN} ORDER BY j.id LIMIT ?",
        (state, stamp, apply_id, limit))


def jobs_to_send(conn: Connection, apply_id: int, backend: str) -> int:
    """How many of the plan's jobs on ``backend`` may still be sent: pending ones (never
    sent, waiting for a retry or for room) and submitting ones (sent, fate unknown)."""
    return conn.value(
        f"SELECT count(*) FROM jobs j WHERE j.backend=? AND j.state IN (?, ?) AND {_IN_PLAN}",
        (backend, PENDING, SUBMITTING, apply_id)) or 0


def unfinished_jobs(conn: Connection, apply_id: int) -> list[UnfinishedJob]:
    """The plan's unfinished jobs, with their open attempt and remote handle, if any."""
    rows = conn.all(
        f"SELECT {JOB_COLUMNS}, (SELECT a.id FROM attempts a WHERE a.job_id=j.id AND "
        "a.finished_at IS NULL ORDER BY a.id DESC LIMIT 1), j.remote_id FROM jobs j "
        f"WHERE j.state IN ({_marks(UNFINISHED_JOB_STATES)}) AND {_IN_PLAN} ORDER BY j.id",
        (*UNFINISHED_JOB_STATES, apply_id))
    return [UnfinishedJob(job_row(r[:8]), r[8], r[9]) for r in rows]


def unfinished_remote_jobs(conn: Connection, apply_id: int) -> list[LeftRemoteJob]:
    """Remote jobs an earlier run left behind, with their open attempt, tag and handle."""
    remote = remote_providers()
    if not remote:
        return []
    rows = conn.all(
        f"SELECT {JOB_COLUMNS}, a.id, a.tag, a.remote_id FROM jobs j "
        "JOIN attempts a ON a.job_id=j.id AND a.finished_at IS NULL "
        f"WHERE j.state IN (?, ?, ?) AND j.provider IN ({_marks(remote)}) ORDER BY j.id",
        (SUBMITTING, SUBMITTED, RUNNING, *remote))
    return [LeftRemoteJob(job_row(r[:8]), r[8], r[9], r[10], r[7]) for r in rows]


def unresolved_tags(conn: Connection, job_id: int) -> list[tuple[int, str]]:
    """(attempt id, tag) of the job's attempts whose fate at the provider is unknown,
    oldest first: each must be looked up before the job is submitted again."""
    return [(a, t) for a, t in conn.all(
        "SELECT id, tag FROM attempts WHERE job_id=? AND tag_state=? ORDER BY id",
        (job_id, TAG_UNKNOWN))]


def open_attempt(conn: Connection, job_id: int) -> OpenAttempt | None:
    """The job's attempt in progress, with its idempotency tag."""
    row = conn.one("SELECT id, tag FROM attempts WHERE job_id=? AND finished_at IS NULL "
                   "ORDER BY id DESC LIMIT 1", (job_id,))
    return OpenAttempt(*row) if row else None


def job_work(conn: Connection, job_id: int) -> list[SliceWork]:
    rows = conn.all(
        "SELECT s.experiment, s.idx, s.shots, e.program, e.params FROM slices s "
        "JOIN experiments e ON e.key=s.experiment WHERE s.job_id=? ORDER BY s.rowid", (job_id,))
    return [SliceWork(experiment=r[0], index=r[1], shots=r[2], program=r[3],
                      params=json.loads(r[4])) for r in rows]


def program(conn: Connection, digest: str) -> Program:
    row = conn.one("SELECT format, content, item FROM programs WHERE digest=?", (digest,))
    if row is None:
        raise StateError(f"program {digest[:12]} is missing from {conn.path}")
    return Program(*row)


def next_retry_time(conn: Connection, apply_id: int) -> float | None:
    """When the next waiting job (pending, or a deferred submission) may start, if any."""
    return conn.value(
        f"SELECT min(j.not_before) FROM jobs j WHERE j.state IN (?, ?) AND j.not_before < ? "
        f"AND {_IN_PLAN}", (PENDING, SUBMITTING, NEXT_APPLY, apply_id))


# ---------------------------------------------------------------- waiting (no state change)

def wake_deferred(conn: Connection, apply_id: int) -> int:
    """At the start of an apply: work left "for the next apply" may start now, and
    submissions whose fate is unknown are looked up at once."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE jobs SET not_before=0 WHERE (not_before>=? OR state=?) AND state IN (?, ?)",
            (NEXT_APPLY, SUBMITTING, PENDING, SUBMITTING))
        return cur.rowcount


def leave_backend(conn: Connection, apply_id: int, backend: str, reason: str) -> int:
    """A service stopped answering: its unfinished jobs wait for the next apply, with why."""
    with conn.transaction():
        plan_jobs = ("SELECT s.job_id FROM slices s JOIN experiments e ON e.key=s.experiment "
                     "WHERE e.plan_apply=?")
        cur = conn.execute(
            "UPDATE jobs SET not_before=CASE WHEN state IN (?, ?) THEN ? ELSE not_before END, "
            f"error=?, updated_at=? WHERE backend=? AND state IN ({_marks(UNFINISHED_JOB_STATES)}) "
            f"AND id IN ({plan_jobs})",
            (PENDING, SUBMITTING, NEXT_APPLY, reason, now(), backend, *UNFINISHED_JOB_STATES,
             apply_id))
        record_event(conn, apply_id, "backend", backend, "left", reason)
        return cur.rowcount


def note_job_error(conn: Connection, apply_id: int, job_id: int, reason: str) -> None:
    """Why an unfinished job did not progress in this run (shown as its pending reason)."""
    with conn.transaction():
        conn.execute("UPDATE jobs SET error=?, updated_at=? WHERE id=?", (reason, now(), job_id))
        record_event(conn, apply_id, "job", job_id, "noted", reason)


def hold_for_next_apply(conn: Connection, apply_id: int, job_id: int, reason: str) -> None:
    """A pending job this run will not send (its cost does not fit the budget): it waits for
    the next apply, with why."""
    with conn.transaction():
        conn.execute("UPDATE jobs SET not_before=?, error=?, updated_at=? WHERE id=? AND state=?",
                     (NEXT_APPLY, reason, now(), job_id, PENDING))
        record_event(conn, apply_id, "job", job_id, "held", reason)


def defer_submission(conn: Connection, apply_id: int, job_id: int, retry_at: float,
                     error: str) -> None:
    """A submission whose outcome is unknown: stay submitting, look the tag up later
    (at ``retry_at``, or with ``NEXT_APPLY`` only when apply runs again)."""
    with conn.transaction():
        conn.execute("UPDATE jobs SET not_before=?, error=?, updated_at=? WHERE id=?",
                     (retry_at, error, now(), job_id))
        record_event(conn, apply_id, "job", job_id, SUBMITTING,
                     {"retry_at": retry_at, "error": error})
