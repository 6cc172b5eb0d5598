"""The :class:`Store` facade: one open state database, with the methods the engine and the
API call, each handed to the module of its concern."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StateError
from . import diffs, lock, migrations, plans, queue, reports, running
from .connection import Connection
from .jobs import RUNNING
from .rows import JobRow, LeftRemoteJob, OpenAttempt, PlanCounts, Program, SliceWork, UnfinishedJob

if TYPE_CHECKING:
    import sqlite3
def open_connection(path: Path, create: bool = True, readonly: bool = False) -> Connection:
    """Open a state database and check it is ours; a writable one is migrated up to date.

    ``readonly`` never changes the database. Status and export open it so, and so they
    also work in a read-only folder (an archived campaign), where SQLite cannot create
    its shared-memory file.
    """
    conn = Connection.open(path, create=create, readonly=readonly)
    if not readonly:
        conn.prepare(True, migrations.migrate)
        return conn
    try:
        conn.prepare(False, migrations.check_version)
    except StateError:
        # SQLite reads a WAL database through a shared-memory file it must create; in a
        # read-only folder it cannot: a database closed cleanly is then read as immutable.
        if not conn.reopen_immutable():
            raise
        conn.prepare(False, migrations.check_version)
    return conn


class Store:
    """An open state database. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, conn: Connection):
        self._conn = conn
        self.path = conn.path
        self._lock_token: str | None = None

    @classmethod
    def open(cls, path: Path, create: bool = True, readonly: bool = False) -> Store:
        """Open (or create) a campaign's state database; see :func:`open_connection`."""
        return cls(open_connection(Path(path), create=create, readonly=readonly))

    @property
    def conn(self) -> sqlite3.Connection:
        """The raw SQLite connection, for tests that check pragmas or plant rows."""
        return self._conn.raw

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, nesting; see :meth:`Connection.transaction`."""
        return self._conn.transaction()

    # -- applies and provenance

    def begin_apply(self, command: str, manifest_path: str, manifest_sha256: str,
                    git_commit: str | None, git_dirty: bool | None, qrun_version: str) -> int:
        return plans.begin_apply(self._conn, command, manifest_path, manifest_sha256, git_commit,
                                 git_dirty, qrun_version)

    def finish_apply(self, apply_id: int, outcome: str) -> None:
        plans.finish_apply(self._conn, apply_id, outcome)

    def set_meta(self, key: str, value: str) -> None:
        plans.set_meta(self._conn, key, value)

    def meta(self, key: str) -> str | None:
        return plans.meta(self._conn, key)

    def delete_meta(self, key: str) -> None:
        plans.delete_meta(self._conn, key)

    # -- the campaign lock

    def acquire_lock(self, name: str, command: str) -> None:
        """Take the campaign lock, or raise LockedError naming its live holder."""
        self._lock_token = lock.acquire(self._conn, name, command)

    def release_lock(self, name: str) -> None:
        if self._lock_token is None:
            return
        lock.release(self._conn, name, self._lock_token)
        self._lock_token = None

    def lock_holder(self, name: str) -> lock.LockHolder | None:
        return lock.holder(self._conn, name)

    def break_lock(self, name: str, force: bool = False) -> lock.LockHolder | None:
        return lock.break_lock(self._conn, name, force)

    # -- storing a plan

    def save_plan(self, apply_id: int, programs: Iterable, experiments: Iterable,
                  backend_configs: dict, cut_jobs: Callable, seed_of: Callable,
                  backend_identities: dict | None = None) -> PlanCounts:
        return plans.save_plan(self._conn, apply_id, programs, experiments, backend_configs,
                               cut_jobs, seed_of, backend_identities)

    def experiment_states(self, keys: list[str]) -> dict:
        return plans.experiment_states(self._conn, keys)

    def diff_plan(self, experiments: Iterable, last_apply: int | None, listed: int,
                  keep_run_keys: bool = False) -> diffs.PlanDiff:
        """Why each experiment is in the plan (diffs.py); writes nothing to the database."""
        return diffs.diff_plan(self._conn, experiments, last_apply, listed, keep_run_keys)

    def state_digest(self) -> str:
        return diffs.state_digest(self._conn)

    # -- running: what to start, and when

    def ready_jobs(self, apply_id: int, limit: int) -> list[JobRow]:
        return queue.ready_jobs(self._conn, apply_id, limit)

    def unfinished_jobs(self, apply_id: int) -> list[UnfinishedJob]:
        return queue.unfinished_jobs(self._conn, apply_id)

    def jobs_to_send(self, apply_id: int, backend: str) -> int:
        return queue.jobs_to_send(self._conn, apply_id, backend)

    def unfinished_remote_jobs(self, apply_id: int) -> list[LeftRemoteJob]:
        return queue.unfinished_remote_jobs(self._conn, apply_id)

    def unresolved_tags(self, job_id: int) -> list[tuple[int, str]]:
        return queue.unresolved_tags(self._conn, job_id)

    def open_attempt(self, job_id: int) -> OpenAttempt | None:
        return queue.open_attempt(self._conn, job_id)

    def job_work(self, job_id: int) -> list[SliceWork]:
        return queue.job_work(self._conn, job_id)

    def program(self, digest: str) -> Program:
        return queue.program(self._conn, digest)

    def next_retry_time(self, apply_id: int) -> float | None:
        return queue.next_retry_time(self._conn, apply_id)

    def wake_deferred(self, apply_id: int) -> int:
        return queue.wake_deferred(self._conn, apply_id)

    def leave_backend(self, apply_id: int, backend: str, reason: str) -> int:
        return queue.leave_backend(self._conn, apply_id, backend, reason)

    def note_job_error(self, apply_id: int, job_id: int, reason: str) -> None:
        queue.note_job_error(self._conn, apply_id, job_id, reason)

    def hold_for_next_apply(self, apply_id: int, job_id: int, reason: str) -> None:
        queue.hold_for_next_apply(self._conn, apply_id, job_id, reason)

    def defer_submission(self, apply_id: int, job_id: int, retry_at: float, error: str) -> None:
        queue.defer_submission(self._conn, apply_id, job_id, retry_at, error)

    # -- running: state changes (each through jobs.move_job)

    def start_attempt(self, apply_id: int, job: JobRow, state: str = RUNNING) -> int:
        return running.start_attempt(self._conn, apply_id, job, state)

    def recover_interrupted(self, apply_id: int, local_providers: Iterable[str]) -> int:
        return running.recover_interrupted(self._conn, apply_id, local_providers)

    def release_attempt(self, apply_id: int, job_id: int, attempt_id: int) -> None:
        """Put back a job whose attempt never ran (cancelled before a worker took it)."""
        with self._conn.transaction():
            running.release(self._conn, apply_id, job_id, attempt_id)

    def wait_for_room(self, apply_id: int, job_id: int, attempt_id: int, until: float,
                      reason: str) -> None:
        running.wait_for_room(self._conn, apply_id, job_id, attempt_id, until, reason)

    def mark_tags_absent(self, attempt_ids: Iterable[int]) -> None:
        with self._conn.transaction():
            running.mark_tags_absent(self._conn, attempt_ids)

    def record_submission(self, apply_id: int, job_id: int, attempt_id: int, handle: str) -> None:
        running.record_submission(self._conn, apply_id, job_id, attempt_id, handle)

    def adopt_attempt(self, apply_id: int, job_id: int, found: int, handle: str,
                      superseded: int | None) -> None:
        running.adopt_attempt(self._conn, apply_id, job_id, found, handle, superseded)

    def note_provider_state(self, apply_id: int, job_id: int, state: str, provider_state: str) -> None:
        running.note_provider_state(self._conn, apply_id, job_id, state, provider_state)

    def complete_job(self, apply_id: int, job_id: int, attempt_id: int, results: list,
                     failures: list, metadata: dict, report: dict | None = None) -> tuple[list, list]:
        return running.complete_job(self._conn, apply_id, job_id, attempt_id, results, failures,
                                    metadata, report)

    def fail_attempt(self, apply_id: int, job_id: int, attempt_id: int, error: str,
                     retry_at: float | None, tag_absent: bool = False) -> list[str]:
        return running.fail_attempt(self._conn, apply_id, job_id, attempt_id, error, retry_at,
                                    tag_absent)

    def cancel_job(self, apply_id: int, job_id: int, attempt_id: int | None, reason: str) -> list[str]:
        return running.cancel_job(self._conn, apply_id, job_id, attempt_id, reason)

    def forget_unresolved(self, apply_id: int | None) -> int:
        return running.forget_unresolved(self._conn, apply_id)

    def reset_failed(self, apply_id: int) -> int:
        return running.reset_failed(self._conn, apply_id)

    # -- reports

    def latest_plan_apply(self) -> int | None:
        return plans.latest_plan_apply(self._conn)

    def apply_info(self, apply_id: int) -> dict | None:
        return plans.apply_info(self._conn, apply_id)

    def state_counts(self, apply_id: int) -> dict[str, int]:
        return reports.state_counts(self._conn, apply_id)

    def job_counts(self, apply_id: int) -> dict[str, int]:
        return reports.job_counts(self._conn, apply_id)

    def backend_summary(self, apply_id: int) -> list[reports.BackendSummary]:
        return reports.backend_summary(self._conn, apply_id)

    def failures(self, apply_id: int, limit: int = 50) -> list[reports.Failure]:
        return reports.failures(self._conn, apply_id, limit)

    def failure_causes(self, apply_id: int, limit: int = 20) -> list[reports.FailureCause]:
        return reports.failure_causes(self._conn, apply_id, limit)

    def pending_causes(self, apply_id: int, limit: int = 20) -> list[reports.PendingCause]:
        return reports.pending_causes(self._conn, apply_id, limit)

    def sent_work(self) -> list[reports.BackendWork]:
        return reports.sent_work(self._conn)

    def unfinal_reports(self, limit: int = 100) -> list[tuple[int, str, dict, str, dict]]:
        return reports.unfinal_reports(self._conn, limit)

    def replace_report(self, attempt_id: int, report: dict) -> None:
        running.replace_report(self._conn, attempt_id, report)

    def reported_usage(self) -> list[reports.ReportedUsage]:
        return reports.reported_usage(self._conn)

    def unsent_work(self, apply_id: int) -> list[reports.BackendWork]:
        return reports.unsent_work(self._conn, apply_id)

    def remote_jobs(self, apply_id: int, limit: int = 50) -> list[reports.RemoteJob]:
        return reports.remote_jobs(self._conn, apply_id, limit)

    def export_rows(self, apply_id: int) -> Iterator[reports.ExportRow]:
        return reports.export_rows(self._conn, apply_id)

    def param_types(self, apply_id: int) -> dict[str, str]:
        return reports.param_types(self._conn, apply_id)

    def export_rows_of(self, keys: list[str]) -> list[reports.ExportRow]:
        return reports.export_rows_of(self._conn, keys)

    # -- the HTML report's reads (qrun/report.py)

    def result_points(self, apply_id: int) -> Iterator[reports.ResultPoint]:
        return reports.result_points(self._conn, apply_id)

    def leading_outcomes(self, apply_id: int, per_circuit: int) -> dict[str, list[str]]:
        return reports.leading_outcomes(self._conn, apply_id, per_circuit)

    def backend_provenance(self, apply_id: int) -> list[reports.BackendProvenance]:
        return reports.backend_provenance(self._conn, apply_id)

    def remote_job_count(self, apply_id: int) -> int:
        return reports.remote_job_count(self._conn, apply_id)
