"""Writes of a run: attempts started and closed, results stored, jobs released, cancelled or
given new chances. Every change of a job's state goes through :func:`jobs.move_job`.

Crash-safety rules kept here (DESIGN.md):
- The intent to run or submit (a new attempt, with its idempotency tag) is committed before
  any work starts or any provider is called; the handle is recorded right after.
- A result and its job's ``done`` state are committed in one transaction.
- An attempt whose fate at the provider is unknown keeps an unknown tag until a lookup by
  that tag answers; nothing turns it into a new submission first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from ..tags import new_tag
from .connection import Connection, now, to_json
from .events import record_event, record_events
from .jobs import CANCELLED, DONE, FAILED, PENDING, RUNNING, SUBMITTED, SUBMITTING, move_job
from .rows import JobRow

# What a provider holds under an attempt's idempotency tag (see migrations._migration_3).
TAG_UNKNOWN, TAG_FOUND, TAG_ABSENT = "unknown", "found", "absent"


# ---------------------------------------------------------------- starting and releasing

def start_attempt(conn: Connection, apply_id: int, job: JobRow, state: str = RUNNING) -> int:
    """Record the intent to run a job (a new attempt, with its idempotency tag) before any
    work starts or any provider is called."""
    with conn.transaction():
        number = job.attempts + 1
        stamp = now()
        tag = new_tag(job.key, stamp)  # names this one attempt at the provider (qrun/tags.py)
        tag_state = TAG_UNKNOWN if state == SUBMITTING else None  # local work has no provider
        cur = conn.execute(
            "INSERT INTO attempts(job_id, number, apply_id, state, tag, started_at, tag_state) "
            "VALUES (?,?,?,?,?,?,?)", (job.id, number, apply_id, state, tag, stamp, tag_state))
        move_job(conn, apply_id, job.id, state, {"attempt": number}, attempts=number)
        return int(cur.lastrowid or 0)


def recover_interrupted(conn: Connection, apply_id: int, local_providers: Iterable[str]) -> int:
    """Local jobs that were running when their process died go back to pending.

    Their attempt is closed as ``interrupted``: it does not count against the retry
    policy, since the work itself did not fail.
    """
    providers = list(local_providers)
    if not providers:
        return 0
    marks = ",".join("?" * len(providers))
    with conn.transaction():
        rows = conn.all(f"SELECT id FROM jobs WHERE state=? AND provider IN ({marks})",
                        (RUNNING, *providers))
        for (job_id,) in rows:
            release(conn, apply_id, job_id, None)
    return len(rows)


def release(conn: Connection, apply_id: int, job_id: int, attempt_id: int | None) -> None:
    """Put back a job whose attempt never ran, or died with its process: that attempt does
    not count against the retry policy."""
    conn.execute("UPDATE attempts SET state='interrupted', finished_at=? WHERE job_id=? "
                 "AND finished_at IS NULL AND (? IS NULL OR id=?)",
                 (now(), job_id, attempt_id, attempt_id))
    attempts = conn.value("SELECT attempts FROM jobs WHERE id=?", (job_id,)) or 0
    move_job(conn, apply_id, job_id, PENDING, "interrupted; will run again",
             attempts=max(attempts - 1, 0))


# ---------------------------------------------------------------- remote submissions

def wait_for_room(conn: Connection, apply_id: int, job_id: int, attempt_id: int, until: float,
                  reason: str) -> None:
    """A submission the provider turned away before any work, by an account limit: its tag
    is absent, the attempt does not count against the retry policy, and the job waits
    until ``until`` (NEXT_APPLY: a later apply), with why."""
    with conn.transaction():
        mark_tags_absent(conn, [attempt_id])
        release(conn, apply_id, job_id, attempt_id)
        conn.execute("UPDATE jobs SET not_before=?, error=?, updated_at=? WHERE id=?",
                     (until, reason, now(), job_id))

def mark_tags_absent(conn: Connection, attempt_ids: Iterable[int]) -> None:
    """The provider answered that it holds no job under these attempts' tags."""
    conn.executemany("UPDATE attempts SET tag_state=? WHERE id=? AND tag_state=?",
                     [(TAG_ABSENT, a, TAG_UNKNOWN) for a in attempt_ids])


def record_submission(conn: Connection, apply_id: int, job_id: int, attempt_id: int,
                      handle: str) -> None:
    """The provider accepted the job: keep its handle, so any later run can re-attach."""
    with conn.transaction():
        conn.execute("UPDATE attempts SET remote_id=?, tag_state=? WHERE id=?",
                     (handle, TAG_FOUND, attempt_id))
        move_job(conn, apply_id, job_id, SUBMITTED, {"remote_id": handle},
                 remote_id=handle, error=None)


def adopt_attempt(conn: Connection, apply_id: int, job_id: int, found: int, handle: str,
                  superseded: int | None) -> None:
    """An earlier attempt's tag found the job at the provider: that attempt is the job's
    again (open, with its handle), and ``superseded``, the attempt opened to submit anew,
    is closed unsent."""
    with conn.transaction():
        if superseded is not None and superseded != found:
            conn.execute("UPDATE attempts SET state='superseded', finished_at=?, tag_state=?, "
                         "error=? WHERE id=?",
                         (now(), TAG_ABSENT, f"not sent: attempt {found} was found at the provider",
                          superseded))
        conn.execute("UPDATE attempts SET state=?, finished_at=NULL, error=NULL, remote_id=?, "
                     "tag_state=? WHERE id=?", (SUBMITTED, handle, TAG_FOUND, found))
        move_job(conn, apply_id, job_id, SUBMITTED,
                 {"remote_id": handle, "found_by_tag_of_attempt": found},
                 remote_id=handle, error=None)


def note_provider_state(conn: Connection, apply_id: int, job_id: int, state: str,
                        provider_state: str) -> None:
    """Record the provider's word for a job, when it changed."""
    row = conn.one("SELECT state, provider_state FROM jobs WHERE id=?", (job_id,))
    if row == (state, provider_state):
        return
    with conn.transaction():
        move_job(conn, apply_id, job_id, state, {"provider_state": provider_state},
                 provider_state=provider_state)


# ---------------------------------------------------------------- finishing

def replace_report(conn: Connection, attempt_id: int, report: dict) -> None:
    """What the provider says of a finished job, read again (its usage became final)."""
    with conn.transaction():
        conn.execute("UPDATE attempts SET report=? WHERE id=? AND report IS NOT NULL",
                     (to_json(report), attempt_id))


def complete_job(conn: Connection, apply_id: int, job_id: int, attempt_id: int, results: list,
                 failures: list, metadata: dict, report: dict | None = None) -> tuple[list, list]:
    """Store what a job returned, in one transaction with its state.

    ``results`` holds (experiment key, slice index, counts); ``failures`` holds
    (experiment key, error) for tasks that failed on their own: those experiments fail,
    the job's others still finish. The job is done when nothing failed, failed otherwise.
    ``report`` is what the provider said of the job (its usage, its calibration), kept
    with the attempt. Returns (keys of experiments finished now, keys failed now).
    """
    finished: list[str] = []
    stamp = now()
    state = FAILED if failures else DONE
    error = failures[0][1] if failures else None
    with conn.transaction():
        conn.executemany(
            "UPDATE slices SET counts=?, metadata=? WHERE experiment=? AND idx=? AND job_id=?",
            [(to_json(counts), to_json(metadata), key, index, job_id)
             for key, index, counts in results])
        conn.execute("UPDATE attempts SET state=?, finished_at=?, error=?, report=? WHERE id=?",
                     (state, stamp, error, to_json(report) if report else None, attempt_id))
        move_job(conn, apply_id, job_id, state,
                 {"failed_experiments": len(failures)} if failures else None, error=error)
        whole, sliced = _whole_experiments(conn, job_id, results)
        _store_whole(conn, apply_id, whole, metadata, stamp)
        finished.extend(key for key, _, _ in whole)
        for key in sliced:
            if _merge_if_complete(conn, apply_id, key, stamp):
                finished.append(key)
        for key, why in failures:
            _fail_experiment(conn, apply_id, key, why, stamp)
    return finished, [key for key, _ in failures]


def _fail_experiment(conn: Connection, apply_id: int, key: str, error: str, stamp: float) -> None:
    conn.execute("UPDATE experiments SET state=?, error=?, updated_at=? WHERE key=?",
                 (FAILED, error, stamp, key))
    record_event(conn, apply_id, "experiment", key, FAILED, error)


def _whole_experiments(conn: Connection, job_id: int, results: list) -> tuple[list, list]:
    """The job's results split into experiments held whole by it, as (key, counts), and the
    keys of experiments cut into slices (merged when all their slices are in)."""
    slices = {key: (count, shots) for key, shots, count in conn.all(
        "SELECT s.experiment, s.shots, (SELECT count(*) FROM slices t WHERE t.experiment=s.experiment) "
        "FROM slices s WHERE s.job_id=?", (job_id,))}
    whole, sliced = [], []
    for key, _, counts in results:
        count, shots = slices.get(key, (0, 0))
        if count == 1:
            whole.append((key, counts, shots))
        elif key not in sliced:
            sliced.append(key)
    return whole, sliced


def _store_whole(conn: Connection, apply_id: int, whole: list, metadata: dict, stamp: float) -> None:
    """Results of experiments a job held whole, as (key, counts, planned shots), stored at
    once: many per job on a cloud that takes many circuits in one (a Braket program set)."""
    if not whole:
        return
    conn.executemany(
        "INSERT INTO results(experiment, counts, shots, metadata, apply_id, completed_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(experiment) DO UPDATE SET counts=excluded.counts, "
        "shots=excluded.shots, metadata=excluded.metadata, apply_id=excluded.apply_id, "
        "completed_at=excluded.completed_at",
        [(key, to_json(dict(sorted(counts.items()))), shots, to_json(metadata), apply_id, stamp)
         for key, counts, shots in whole])
    conn.executemany("UPDATE experiments SET state=?, error=NULL, updated_at=? WHERE key=?",
                     [(DONE, stamp, key) for key, _, _ in whole])
    record_events(conn, apply_id, "experiment", [key for key, _, _ in whole], DONE)


def _merge_if_complete(conn: Connection, apply_id: int, key: str, stamp: float) -> bool:
    slices = conn.all("SELECT counts, metadata, shots FROM slices WHERE experiment=? ORDER BY idx",
                      (key,))
    if any(counts is None for counts, _, _ in slices):
        return False
    merged: Counter = Counter()
    for counts, _, _ in slices:
        merged.update(json.loads(counts))
    metadata = json.loads(slices[-1][1]) if slices[-1][1] else {}
    if len(slices) > 1:
        metadata["slices"] = [shots for _, _, shots in slices]
    conn.execute(
        "INSERT INTO results(experiment, counts, shots, metadata, apply_id, completed_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(experiment) DO UPDATE SET counts=excluded.counts, "
        "shots=excluded.shots, metadata=excluded.metadata, apply_id=excluded.apply_id, "
        "completed_at=excluded.completed_at",
        (key, to_json(dict(sorted(merged.items()))), sum(s for _, _, s in slices),
         to_json(metadata), apply_id, stamp))
    conn.execute("UPDATE experiments SET state=?, error=NULL, updated_at=? WHERE key=?",
                 (DONE, stamp, key))
    record_event(conn, apply_id, "experiment", key, DONE)
    return True


def _fail_unfinished_experiments(conn: Connection, apply_id: int, job_id: int, error: str,
                                 stamp: float) -> list[str]:
    keys = [k for (k,) in conn.all(
        "SELECT DISTINCT s.experiment FROM slices s JOIN experiments e ON e.key=s.experiment "
        "WHERE s.job_id=? AND e.state!=?", (job_id, DONE))]
    for key in keys:
        _fail_experiment(conn, apply_id, key, error, stamp)
    return keys


def fail_attempt(conn: Connection, apply_id: int, job_id: int, attempt_id: int, error: str,
                 retry_at: float | None, tag_absent: bool = False) -> list[str]:
    """Close a failed attempt: the job waits for ``retry_at`` or, if None, fails for good.

    ``tag_absent``: the provider is known to hold no job under the attempt's tag (its
    submission was refused, or its job is gone and a lookup found none). A remote attempt
    closed without it keeps an unknown tag, which is looked up before the job is sent again.
    Returns the keys of experiments that failed for good with it.
    """
    stamp = now()
    with conn.transaction():
        conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE id=?",
                     (FAILED, stamp, error, attempt_id))
        if tag_absent:
            mark_tags_absent(conn, [attempt_id])
        if retry_at is not None:
            move_job(conn, apply_id, job_id, PENDING, {"retry_at": retry_at, "error": error},
                     not_before=retry_at, error=error)
            return []
        move_job(conn, apply_id, job_id, FAILED, error, error=error)
        return _fail_unfinished_experiments(conn, apply_id, job_id, error, stamp)


def cancel_job(conn: Connection, apply_id: int, job_id: int, attempt_id: int | None,
               reason: str) -> list[str]:
    """Record a job as cancelled; its unfinished experiments fail with ``reason``."""
    stamp = now()
    with conn.transaction():
        if attempt_id is not None:
            conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE id=?",
                         (CANCELLED, stamp, reason, attempt_id))
        move_job(conn, apply_id, job_id, CANCELLED, reason, error=reason)
        return _fail_unfinished_experiments(conn, apply_id, job_id, reason, stamp)


# ---------------------------------------------------------------- new chances

def forget_unresolved(conn: Connection, apply_id: int | None) -> int:
    """Declare every unknown tag absent, at the user's word (`qrun retry
    --resubmit-unresolved`, after checking at the provider): jobs left submitting go back
    to pending, to be submitted anew. Returns how many jobs that frees."""
    stamp = now()
    with conn.transaction():
        jobs = [j for (j,) in conn.all("SELECT id FROM jobs WHERE state=?", (SUBMITTING,))]
        for job_id in jobs:
            conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE job_id=? "
                         "AND finished_at IS NULL",
                         (FAILED, stamp, "its fate was unknown; given up by qrun retry "
                                         "--resubmit-unresolved", job_id))
            move_job(conn, apply_id, job_id, PENDING, not_before=0, error=None)  # one event for all
        cur = conn.execute("UPDATE attempts SET tag_state=? WHERE tag_state=?",
                           (TAG_ABSENT, TAG_UNKNOWN))
        record_event(conn, apply_id, "attempts", "unresolved", "forgotten",
                     {"jobs": len(jobs), "tags": cur.rowcount})
        return len(jobs)


def reset_failed(conn: Connection, apply_id: int) -> int:
    """Give every failed experiment a new chance; return how many there were.

    A failed job none of whose slices finished runs again whole, its retry budget
    afresh (its attempt history stays). From a job that finished part of its work, only
    the failed slices are taken out, to be cut into new jobs by the next plan: finished
    work is never run again.
    """
    with conn.transaction():
        failed_jobs = conn.all(
            "SELECT j.id, count(s.counts) FROM jobs j JOIN slices s ON s.job_id=j.id "
            "WHERE j.state IN (?, ?) GROUP BY j.id", (FAILED, CANCELLED))
        for job_id, finished_slices in failed_jobs:
            if finished_slices:
                conn.execute("DELETE FROM slices WHERE job_id=? AND counts IS NULL", (job_id,))
                move_job(conn, apply_id, job_id, DONE, "failed slices split off for retry")
            else:
                move_job(conn, apply_id, job_id, PENDING, "retry requested",
                         attempts=0, not_before=0, error=None)
        cur = conn.execute("UPDATE experiments SET state=?, error=NULL, updated_at=? "
                           "WHERE state=?", (PENDING, now(), FAILED))
        return cur.rowcount
