"""Store stage: the campaign's SQLite state database. The only package that touches SQLite.

Split by concern; :class:`Store` composes the parts behind the methods the engine and the
API call:
- ``connection``: opening (read-only, immutable), pragmas, WAL, transactions; every SQLite
  error becomes a :class:`~qrun.errors.StateError` there.
- ``migrations``: schema versions and upgrades.
- ``lock``: the campaign lock.
- ``jobs``: the job state machine (the transition table, and ``move_job``, the one place a
  job's state changes); ``running`` and ``queue``: the writes and reads of a run.
- ``plans``: applies and the plans they store; ``reports``: named rows for status and export.
- ``diffs``: a plan against the stored state (why each experiment runs, what changed).
- ``readonly``: :func:`read`, a small read-only API for tests and users.

Rules (see DESIGN.md, crash safety):
- WAL journal, ``synchronous=FULL``: a committed transaction survives a power cut.
- Every read-then-write runs in ``BEGIN IMMEDIATE``, so two processes never interleave.
- One writer: the coordinator. Workers hand results back; only it calls this package.
- A result and its job's ``done`` state are committed in one transaction.
- Every state change of a job, and every experiment reaching done or failed, is appended to
  the ``events`` table.
"""

from __future__ import annotations

from .connection import APPLICATION_ID, DAMAGED_ADVICE, Connection
from .diffs import TO_RUN, Facts, Listed, PlanDiff, keys_digest, state_digest
from .facade import Store, open_connection
from .jobs import (
    CANCELLED,
    DONE,
    FAILED,
    JOB_STATES,
    NEXT_APPLY,
    PENDING,
    RUNNING,
    SUBMITTED,
    SUBMITTING,
    TRANSITIONS,
    UNFINISHED_JOB_STATES,
    IllegalTransition,
)
from .lock import LockHolder, holder_alive, lock_message
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .plans import BATCH
from .readonly import StateReader, read
from .reports import BackendSummary, ExportRow, Failure, FailureCause, PendingCause, RemoteJob
from .rows import JobRow, NamedRow, PlanCounts, SliceWork
from .running import TAG_ABSENT, TAG_FOUND, TAG_UNKNOWN

__all__ = [
    "APPLICATION_ID", "BATCH", "CANCELLED", "DAMAGED_ADVICE", "DONE", "FAILED", "JOB_STATES",
    "MIGRATIONS", "NEXT_APPLY", "PENDING", "RUNNING", "SCHEMA_VERSION", "SUBMITTED", "SUBMITTING",
    "TAG_ABSENT", "TAG_FOUND", "TAG_UNKNOWN", "TRANSITIONS", "UNFINISHED_JOB_STATES",
    "BackendSummary", "Connection", "ExportRow", "Failure", "FailureCause", "IllegalTransition",
    "JobRow", "LockHolder", "NamedRow", "PendingCause", "PlanCounts", "RemoteJob", "SliceWork",
    "StateReader", "Store", "holder_alive", "lock_message", "open_connection", "read",
    "TO_RUN", "Facts", "Listed", "PlanDiff", "keys_digest", "state_digest",
]

