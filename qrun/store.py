"""Store stage: the campaign's SQLite state database. The only module that touches SQLite.

Rules (see DESIGN.md, crash safety):
- WAL journal, ``synchronous=FULL``: a committed transaction survives a power cut.
- Every read-then-write runs in ``BEGIN IMMEDIATE``, so two processes never interleave.
- One writer: the coordinator. Workers hand results back; only it calls this module.
- A result and its job's ``done`` state are committed in one transaction.
- Every state change of a job, and every experiment reaching done or failed, is appended to
  the ``events`` table.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlite_utils

from .errors import LockedError, StateError

APPLICATION_ID = 0x7172756E  # "qrun": marks a file as ours, tells it from foreign SQLite files
BATCH = 2000  # rows per executemany when streaming a plan in

# Job states. Local work goes pending -> running -> done | failed; remote work passes
# through submitting (intent recorded, provider not yet answered) and submitted (handle known).
PENDING, SUBMITTING, SUBMITTED, RUNNING = "pending", "submitting", "submitted", "running"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
UNFINISHED_JOB_STATES = (PENDING, SUBMITTING, SUBMITTED, RUNNING)
NEXT_APPLY = 1e18  # a job's not_before meaning "not in this run: when apply runs again"
# What a provider holds under an attempt's idempotency tag (see _migration_3).
TAG_UNKNOWN, TAG_FOUND, TAG_ABSENT = "unknown", "found", "absent"


def _now() -> float:
    return time.time()


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- schema and migrations

def _migration_1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["applies"].create({
        "id": int, "command": str, "started_at": float, "finished_at": float,
        "manifest_path": str, "manifest_sha256": str, "git_commit": str, "git_dirty": int,
        "qrun_version": str, "host": str, "pid": int, "outcome": str,
    }, pk="id")
    db["programs"].create({"digest": str, "format": str, "origin": str, "content": bytes,
                           "item": int}, pk="digest")
    db["experiments"].create({
        "key": str, "circuit": str, "backend": str, "provider": str, "program": str,
        "params": str, "shots": int, "state": str, "error": str, "plan_apply": int,
        "created_at": float, "updated_at": float,
    }, pk="key", not_null={"state"})
    db["experiments"].create_index(["plan_apply", "state"])
    db["jobs"].create({
        "id": int, "key": str, "backend": str, "provider": str, "backend_config": str,
        "seed": int, "state": str, "attempts": int, "not_before": float, "remote_id": str,
        "provider_state": str, "error": str, "created_at": float, "updated_at": float,
    }, pk="id", not_null={"state"})
    db["jobs"].create_index(["state", "not_before"])
    db["slices"].create({
        "experiment": str, "idx": int, "shots": int, "job_id": int, "counts": str,
        "metadata": str,
    }, pk=("experiment", "idx"))
    db["slices"].create_index(["job_id"])
    db["attempts"].create({
        "id": int, "job_id": int, "number": int, "apply_id": int, "state": str, "tag": str,
        "remote_id": str, "started_at": float, "finished_at": float, "error": str,
    }, pk="id")
    db["attempts"].create_index(["job_id"])
    db["results"].create({
        "experiment": str, "counts": str, "shots": int, "metadata": str, "apply_id": int,
        "completed_at": float,
    }, pk="experiment")
    db["events"].create({
        "id": int, "ts": float, "apply_id": int, "entity": str, "entity_id": str,
        "state": str, "detail": str,
    }, pk="id")
    db["locks"].create({"name": str, "host": str, "pid": int, "pid_started": float,
                        "since": float, "token": str, "command": str}, pk="name")


def _migration_2(db: sqlite_utils.Database) -> None:
    # ready_jobs() walks each state's jobs in id order and stops at its limit. With only
    # (state, not_before) SQLite gathered and sorted every pending job on each call, and it
    # is called after every finished job: quadratic (a 100,000-experiment apply spent 35 %
    # of py-spy's samples of the coordinator there; 12 ms a call with 3,000 jobs pending,
    # 0.15 ms with this index).
    db["jobs"].create_index(["state", "id"], index_name="idx_jobs_state_id")


def _migration_3(db: sqlite_utils.Database) -> None:
    # Whether a provider may hold a job under an attempt's idempotency tag (DESIGN: an attempt
    # whose fate is unknown stays unknown until the provider answers a lookup by its tag).
    #   unknown  the intent is recorded and the provider may have been called;
    #   found    the provider answered with the job (its handle is remote_id);
    #   absent   the provider holds no job under the tag: a lookup found none, the
    #            submission was refused outright, or it was never sent.
    # NULL for local attempts. Attempts written before this column existed are taken as
    # unknown unless they have a handle: `qrun retry` looks each of them up once before it
    # submits their job again (one of those may have been paid for without qrun knowing).
    db.execute("ALTER TABLE attempts ADD COLUMN tag_state TEXT")
    remote = [p for p, info in _providers().items() if not info.local]
    marks = ",".join("?" * len(remote))
    db.execute(f"UPDATE attempts SET tag_state = CASE WHEN remote_id IS NOT NULL THEN 'found' "
               f"ELSE 'unknown' END WHERE job_id IN (SELECT id FROM jobs WHERE provider IN ({marks}))",
               remote)


MIGRATIONS = [_migration_1, _migration_2, _migration_3]  # append, never edit: index + 1 is the schema version
SCHEMA_VERSION = len(MIGRATIONS)


# ---------------------------------------------------------------- rows handed out

@dataclass(frozen=True)
class JobRow:
    id: int
    key: str
    backend: str
    provider: str
    backend_config: dict
    seed: int | None
    attempts: int
    state: str = PENDING


@dataclass(frozen=True)
class SliceWork:
    experiment: str
    index: int
    shots: int
    program: str
    params: dict


@dataclass(frozen=True)
class PlanCounts:
    new: int = 0
    cached: int = 0
    failed: int = 0
    pending: int = 0  # stored earlier, not finished yet: resumes
    jobs_created: int = 0


class Store:
    """An open state database. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.path = path
        self._lock_token: str | None = None
        self._depth = 0  # nesting of transaction()

    # -- opening

    @classmethod
    def open(cls, path: Path, create: bool = True, readonly: bool = False) -> Store:
        """Open (or create) a campaign's state database.

        ``readonly`` never changes the database. Status and export open it so, and so they
        also work in a read-only folder (an archived campaign), where SQLite cannot create
        its shared-memory file.
        """
        path = Path(path)
        if not path.exists() and (readonly or not create):
            raise StateError(f"no state database at {path}")
        if create and not readonly:
            _make_folder(path.parent)
        if readonly:
            return cls._open_readonly(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(_explain(path, exc, "cannot open")) from None
        return cls._prepared(conn, path, writable=True)

    @classmethod
    def _open_readonly(cls, path: Path) -> Store:
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            return cls._prepared(sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30,
                                                 check_same_thread=False), path, writable=False)
        except StateError:
            # SQLite reads a WAL database through a shared-memory file it must create; in a
            # read-only folder it cannot. A database closed cleanly has no log left to read,
            # so it can then be read as immutable; one with a log cannot be read safely.
            wal = Path(f"{path}-wal")
            if os.access(path.parent, os.W_OK) or (wal.exists() and wal.stat().st_size):
                raise
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
            return cls._prepared(conn, path, writable=False)

    @classmethod
    def _prepared(cls, conn: sqlite3.Connection, path: Path, writable: bool) -> Store:
        store = cls(conn, path)
        try:
            store._prepare(writable)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_access_problem(exc) or _is_disk_problem(exc) or _is_damage(exc):
                raise StateError(_explain(path, exc, "cannot open")) from None
            raise StateError(f"{path} is not a usable qrun state database ({exc}); "
                             "move it aside to start afresh") from None
        except StateError:
            conn.close()
            raise
        return store

    def _prepare(self, writable: bool = True) -> None:
        if _cut_short(self.path):
            raise StateError(f"{self.path} is shorter than its own header says: the file was cut "
                             f"short (a copy or a disk that failed). {DAMAGED_ADVICE}")
        self.conn.execute("PRAGMA busy_timeout = 30000")
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        has_tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if has_tables and app_id != APPLICATION_ID:
            raise StateError(f"{self.path} is an SQLite file, but not a qrun state database; "
                             "refusing to touch it")
        if not writable:
            self._check_version()
            return
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StateError(f"{self.path}: cannot switch to WAL journaling (got {mode})")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _check_version(self) -> int:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path} was written by a newer qrun (schema {version}, this "
                             f"qrun knows up to {SCHEMA_VERSION}); upgrade qrun to use it")
        return version

    def _migrate(self) -> None:
        if self._check_version() == SCHEMA_VERSION:
            return
        with self.transaction():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT; rolled back whole on any error.

        Transactions nest: an inner one joins the outer, which commits everything at once.
        The engine groups the state changes of several jobs that way, since every commit
        waits for the disk (synchronous=FULL) and one per change would pace the whole run.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        if self.conn.in_transaction:
            # A Ctrl-C landed between BEGIN and the guard below (or inside it, before its
            # ROLLBACK ran): that transaction never committed, so its changes are dropped.
            self.conn.execute("ROLLBACK")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(_explain(self.path, exc, "cannot write")) from None
        self._depth = 1
        try:
            yield self.conn
        except BaseException as exc:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StateError(_explain(self.path, exc, "a write failed and was rolled back")) \
                    from None
            raise
        else:
            self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise StateError(_explain(self.path, exc, "a commit failed and was rolled back")) \
                    from None

    def _event(self, apply_id, entity: str, entity_id, state: str, detail=None) -> None:
        self.conn.execute(
            "INSERT INTO events(ts, apply_id, entity, entity_id, state, detail) VALUES (?,?,?,?,?,?)",
            (_now(), apply_id, entity, str(entity_id), state,
             None if detail is None else (detail if isinstance(detail, str) else _json(detail))))

    # -- applies and provenance

    def begin_apply(self, command: str, manifest_path: str, manifest_sha256: str,
                    git_commit: str | None, git_dirty: bool | None, qrun_version: str) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO applies(command, started_at, manifest_path, manifest_sha256, git_commit,"
                " git_dirty, qrun_version, host, pid) VALUES (?,?,?,?,?,?,?,?,?)",
                (command, _now(), manifest_path, manifest_sha256, git_commit,
                 None if git_dirty is None else int(git_dirty), qrun_version,
                 socket.gethostname(), os.getpid()))
            self._event(cur.lastrowid, "apply", cur.lastrowid, "started",
                        {"manifest_sha256": manifest_sha256, "git_commit": git_commit})
            return cur.lastrowid

    def finish_apply(self, apply_id: int, outcome: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE applies SET finished_at=?, outcome=? WHERE id=?",
                              (_now(), outcome, apply_id))
            self._event(apply_id, "apply", apply_id, outcome)

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                              "DO UPDATE SET value=excluded.value", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # -- the campaign lock

    def acquire_lock(self, name: str, command: str) -> None:
        """Take the campaign lock, or raise :class:`LockedError` naming its live holder.

        A lock left by a dead process on this host is taken over (and the takeover logged);
        one held from another host cannot be checked and must be broken with ``qrun unlock``.
        """
        token = uuid.uuid4().hex
        me = (socket.gethostname(), os.getpid(), _process_start(os.getpid()))
        with self.transaction():
            row = self.conn.execute("SELECT host, pid, pid_started, since, command FROM locks "
                                    "WHERE name=?", (name,)).fetchone()
            if row:
                host, pid, started, since, holder_command = row
                if holder_alive(host, pid, started):
                    raise LockedError(_lock_message(name, host, pid, since, holder_command))
                self._event(None, "lock", name, "taken-over",
                            {"host": host, "pid": pid, "since": since, "reason": "holder is gone"})
            self.conn.execute(
                "INSERT INTO locks(name, host, pid, pid_started, since, token, command) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET host=excluded.host, "
                "pid=excluded.pid, pid_started=excluded.pid_started, since=excluded.since, "
                "token=excluded.token, command=excluded.command",
                (name, *me, _now(), token, command))
        self._lock_token = token

    def release_lock(self, name: str) -> None:
        if self._lock_token is None:
            return
        with self.transaction():
            self.conn.execute("DELETE FROM locks WHERE name=? AND token=?", (name, self._lock_token))
        self._lock_token = None

    def lock_holder(self, name: str) -> dict | None:
        row = self.conn.execute("SELECT host, pid, pid_started, since, command FROM locks "
                                "WHERE name=?", (name,)).fetchone()
        if not row:
            return None
        host, pid, started, since, command = row
        return {"host": host, "pid": pid, "since": since, "command": command,
                "alive": holder_alive(host, pid, started)}

    def break_lock(self, name: str, force: bool = False) -> dict | None:
        """Remove the lock if its holder is gone (or ``force``); return who held it."""
        with self.transaction():
            holder = self.lock_holder(name)
            if holder is None:
                return None
            if holder["alive"] and not force:
                raise LockedError(_lock_message(name, holder["host"], holder["pid"],
                                                holder["since"], holder["command"]))
            self.conn.execute("DELETE FROM locks WHERE name=?", (name,))
            self._event(None, "lock", name, "broken", {**holder, "forced": force})
            return holder

    # -- storing a plan

    def save_plan(self, apply_id: int, programs: Iterable, experiments: Iterable,
                  backend_configs: dict, cut_jobs, seed_of) -> PlanCounts:
        """Record the plan of one apply in one transaction, and cut jobs for what must run.

        ``experiments`` is streamed (plan.Experiment objects). Jobs never attempted are
        dissolved and cut again, so they always follow the current manifest's split rules;
        jobs with attempts keep their shape, since a provider may know them.
        """
        counts = Counter()
        with self.transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO programs(digest, format, origin, content, item) VALUES (?,?,?,?,?)",
                [(p.digest, p.format, p.origin, p.content, p.index) for p in programs])
            for batch in _batches(experiments, BATCH):
                self._upsert_experiments(apply_id, batch, counts)
            self._dissolve_unattempted_jobs()
            jobs_created = self._cut_jobs(apply_id, backend_configs, cut_jobs, seed_of)
            self._event(apply_id, "plan", apply_id, "stored", {**counts, "jobs": jobs_created})
        return PlanCounts(new=counts["new"], cached=counts[DONE], failed=counts[FAILED],
                          pending=counts[PENDING], jobs_created=jobs_created)

    def _upsert_experiments(self, apply_id: int, batch: list, counts: Counter) -> None:
        keys = [e.key for e in batch]
        known = self.experiment_states(keys)
        now = _now()
        self.conn.executemany(
            "INSERT INTO experiments(key, circuit, backend, provider, program, params, shots, state,"
            " plan_apply, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET circuit=excluded.circuit, backend=excluded.backend, "
            "plan_apply=excluded.plan_apply",
            [(e.key, e.circuit, e.backend, e.provider, e.program, e.params_json, e.shots,
              PENDING, apply_id, now, now) for e in batch])
        for key in keys:
            counts[known.get(key, "new")] += 1

    def _dissolve_unattempted_jobs(self) -> None:
        # Jobs holding shot slices keep their shape: their experiment's other slices may be
        # done already, and cutting again would lose track of which shares are missing.
        self.conn.execute("DROP TABLE IF EXISTS temp.dissolved")
        self.conn.execute(
            "CREATE TEMP TABLE dissolved AS SELECT j.id FROM jobs j WHERE j.state=? AND j.attempts=0 "
            "AND NOT EXISTS (SELECT 1 FROM slices s JOIN slices other ON other.experiment=s.experiment "
            "                WHERE s.job_id=j.id AND other.idx>0)", (PENDING,))
        self.conn.execute("DELETE FROM slices WHERE job_id IN (SELECT id FROM temp.dissolved)")
        self.conn.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM temp.dissolved)")
        self.conn.execute("DROP TABLE temp.dissolved")

    def _cut_jobs(self, apply_id: int, backend_configs: dict, cut_jobs, seed_of) -> int:
        unassigned = self.conn.execute(
            "SELECT e.backend, e.key, e.shots FROM experiments e WHERE e.plan_apply=? AND e.state=? "
            "AND NOT EXISTS (SELECT 1 FROM slices s WHERE s.experiment=e.key) ORDER BY e.rowid",
            (apply_id, PENDING))
        created = 0
        now = _now()
        for job in cut_jobs(unassigned):
            config = backend_configs[job.backend]
            cur = self.conn.execute(
                "INSERT INTO jobs(key, backend, provider, backend_config, seed, state, attempts,"
                " not_before, created_at, updated_at) VALUES (?,?,?,?,?,?,0,0,?,?)",
                (job.key, job.backend, config["provider"], _json(config), seed_of(job.key),
                 PENDING, now, now))
            self.conn.executemany(
                "INSERT INTO slices(experiment, idx, shots, job_id) VALUES (?,?,?,?)",
                [(s.experiment, s.index, s.shots, cur.lastrowid) for s in job.slices])
            created += 1
        return created

    def experiment_states(self, keys: list[str]) -> dict:
        """key -> state of those of ``keys`` that are stored (a batch of a plan, not all of
        it: a whole campaign's states would be a dict of the campaign)."""
        return dict(self.conn.execute(
            f"SELECT key, state FROM experiments WHERE key IN ({','.join('?' * len(keys))})", keys))

    # -- running

    def recover_interrupted(self, apply_id: int, local_providers: Iterable[str]) -> int:
        """Local jobs that were running when their process died go back to pending.

        Their attempt is closed as ``interrupted``: it does not count against the retry
        policy, since the work itself did not fail.
        """
        providers = list(local_providers)
        if not providers:
            return 0
        marks = ",".join("?" * len(providers))
        with self.transaction():
            rows = self.conn.execute(
                f"SELECT id FROM jobs WHERE state=? AND provider IN ({marks})",
                (RUNNING, *providers)).fetchall()
            for (job_id,) in rows:
                self._release(apply_id, job_id, None)
        return len(rows)

    def release_attempt(self, apply_id: int, job_id: int, attempt_id: int) -> None:
        """Put back a job whose attempt never ran (cancelled before a worker took it)."""
        with self.transaction():
            self._release(apply_id, job_id, attempt_id)

    def _release(self, apply_id: int, job_id: int, attempt_id: int | None) -> None:
        self.conn.execute("UPDATE attempts SET state='interrupted', finished_at=? WHERE job_id=? "
                          "AND finished_at IS NULL AND (? IS NULL OR id=?)",
                          (_now(), job_id, attempt_id, attempt_id))
        self.conn.execute("UPDATE jobs SET state=?, attempts=max(attempts-1, 0), updated_at=? "
                          "WHERE id=?", (PENDING, _now(), job_id))
        self._event(apply_id, "job", job_id, PENDING, "interrupted; will run again")

    def ready_jobs(self, apply_id: int, limit: int) -> list[JobRow]:
        """Jobs of the current plan to start now, oldest first: pending ones, and remote ones
        whose submission failed in a way that leaves it unknown (still submitting), once
        their backoff has passed."""
        now = _now()
        rows = [row for state in (PENDING, SUBMITTING)
                for row in self._ready_in_state(state, apply_id, now, limit)]
        return [_job_row(r) for r in sorted(rows, key=lambda r: r[0])[:limit]]

    def _ready_in_state(self, state: str, apply_id: int, now: float, limit: int) -> list:
        # One state at a time, through the (state, id) index, so SQLite reads jobs already in
        # id order and stops after `limit` of them: the engine asks after every finished
        # job, and a `state IN (...)` query sorted all waiting jobs each time (quadratic).
        # INDEXED BY: left to itself, SQLite picks (state, not_before) and sorts.
        return self.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs j INDEXED BY idx_jobs_state_id "
            "WHERE j.state=? AND j.not_before<=? "
            "AND EXISTS (SELECT 1 FROM slices s JOIN experiments e ON e.key=s.experiment "
            "            WHERE s.job_id=j.id AND e.plan_apply=?) "
            "ORDER BY j.id LIMIT ?",
            (state, now, apply_id, limit)).fetchall()

    def unfinished_remote_jobs(self, apply_id: int) -> list[tuple]:
        """(job, attempt id, tag, handle, state) of remote jobs an earlier run left behind."""
        remote = [p for p, info in _providers().items() if not info.local]
        if not remote:
            return []
        rows = self.conn.execute(
            f"SELECT {_JOB_COLUMNS}, a.id, a.tag, a.remote_id FROM jobs j "
            "JOIN attempts a ON a.job_id=j.id AND a.finished_at IS NULL "
            f"WHERE j.state IN (?, ?, ?) AND j.provider IN ({','.join('?' * len(remote))}) "
            "ORDER BY j.id", (SUBMITTING, SUBMITTED, RUNNING, *remote)).fetchall()
        return [(_job_row(r[:8]), r[8], r[9], r[10], r[7]) for r in rows]

    def unresolved_tags(self, job_id: int) -> list[tuple[int, str]]:
        """(attempt id, tag) of the job's attempts whose fate at the provider is unknown,
        oldest first: each must be looked up before the job is submitted again."""
        return self.conn.execute("SELECT id, tag FROM attempts WHERE job_id=? AND tag_state=? "
                                 "ORDER BY id", (job_id, TAG_UNKNOWN)).fetchall()

    def mark_tags_absent(self, attempt_ids: Iterable[int]) -> None:
        """The provider answered that it holds no job under these attempts' tags."""
        with self.transaction():
            self._tags_absent(attempt_ids)

    def _tags_absent(self, attempt_ids: Iterable[int]) -> None:
        self.conn.executemany("UPDATE attempts SET tag_state=? WHERE id=? AND tag_state=?",
                              [(TAG_ABSENT, a, TAG_UNKNOWN) for a in attempt_ids])

    def adopt_attempt(self, apply_id: int, job_id: int, found: int, handle: str,
                      superseded: int | None) -> None:
        """An earlier attempt's tag found the job at the provider: that attempt is the job's
        again (open, with its handle), and ``superseded``, the attempt opened to submit anew,
        is closed unsent."""
        now = _now()
        with self.transaction():
            if superseded is not None and superseded != found:
                self.conn.execute("UPDATE attempts SET state='superseded', finished_at=?, tag_state=?, "
                                  "error=? WHERE id=?", (now, TAG_ABSENT,
                                                         f"not sent: attempt {found} was found at the "
                                                         "provider", superseded))
            self.conn.execute("UPDATE attempts SET state=?, finished_at=NULL, error=NULL, remote_id=?, "
                              "tag_state=? WHERE id=?", (SUBMITTED, handle, TAG_FOUND, found))
            self.conn.execute("UPDATE jobs SET state=?, remote_id=?, error=NULL, updated_at=? WHERE id=?",
                              (SUBMITTED, handle, now, job_id))
            self._event(apply_id, "job", job_id, SUBMITTED,
                        {"remote_id": handle, "found_by_tag_of_attempt": found})

    def wake_deferred(self, apply_id: int) -> int:
        """At the start of an apply: work left "for the next apply" may start now, and
        submissions whose fate is unknown are looked up at once."""
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE jobs SET not_before=0 WHERE (not_before>=? OR state=?) AND state IN (?, ?)",
                (NEXT_APPLY, SUBMITTING, PENDING, SUBMITTING))
            return cur.rowcount

    def leave_backend(self, apply_id: int, backend: str, reason: str) -> int:
        """A service stopped answering: its unfinished jobs wait for the next apply, with why."""
        with self.transaction():
            plan_jobs = ("SELECT s.job_id FROM slices s JOIN experiments e ON e.key=s.experiment "
                         "WHERE e.plan_apply=?")
            cur = self.conn.execute(
                f"UPDATE jobs SET not_before=CASE WHEN state IN (?, ?) THEN ? ELSE not_before END, "
                f"error=?, updated_at=? WHERE backend=? AND state IN (?, ?, ?, ?) AND id IN ({plan_jobs})",
                (PENDING, SUBMITTING, NEXT_APPLY, reason, _now(), backend, *UNFINISHED_JOB_STATES,
                 apply_id))
            self._event(apply_id, "backend", backend, "left", reason)
            return cur.rowcount

    def note_job_error(self, apply_id: int, job_id: int, reason: str) -> None:
        """Why an unfinished job did not progress in this run (shown as its pending reason)."""
        with self.transaction():
            self.conn.execute("UPDATE jobs SET error=?, updated_at=? WHERE id=?", (reason, _now(), job_id))
            self._event(apply_id, "job", job_id, "noted", reason)

    def open_attempt(self, job_id: int) -> tuple:
        """(id, idempotency tag) of the job's attempt in progress."""
        return self.conn.execute("SELECT id, tag FROM attempts WHERE job_id=? AND finished_at IS "
                                 "NULL ORDER BY id DESC LIMIT 1", (job_id,)).fetchone()

    def record_submission(self, apply_id: int, job_id: int, attempt_id: int, handle: str) -> None:
        """The provider accepted the job: keep its handle, so any later run can re-attach."""
        with self.transaction():
            now = _now()
            self.conn.execute("UPDATE attempts SET remote_id=?, tag_state=? WHERE id=?",
                              (handle, TAG_FOUND, attempt_id))
            self.conn.execute("UPDATE jobs SET state=?, remote_id=?, error=NULL, updated_at=? "
                              "WHERE id=?", (SUBMITTED, handle, now, job_id))
            self._event(apply_id, "job", job_id, SUBMITTED, {"remote_id": handle})

    def defer_submission(self, apply_id: int, job_id: int, retry_at: float, error: str) -> None:
        """A submission whose outcome is unknown: stay submitting, look the tag up later
        (at ``retry_at``, or with ``NEXT_APPLY`` only when apply runs again)."""
        with self.transaction():
            self.conn.execute("UPDATE jobs SET not_before=?, error=?, updated_at=? WHERE id=?",
                              (retry_at, error, _now(), job_id))
            self._event(apply_id, "job", job_id, SUBMITTING, {"retry_at": retry_at, "error": error})

    def note_provider_state(self, apply_id: int, job_id: int, state: str, provider_state: str) -> None:
        """Record the provider's word for a job, when it changed."""
        row = self.conn.execute("SELECT state, provider_state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row == (state, provider_state):
            return
        with self.transaction():
            self.conn.execute("UPDATE jobs SET state=?, provider_state=?, updated_at=? WHERE id=?",
                              (state, provider_state, _now(), job_id))
            self._event(apply_id, "job", job_id, state, {"provider_state": provider_state})

    def next_retry_time(self, apply_id: int) -> float | None:
        """When the next waiting job (pending, or a deferred submission) may start, if any."""
        row = self.conn.execute(
            "SELECT min(j.not_before) FROM jobs j WHERE j.state IN (?, ?) AND j.not_before < ? "
            "AND EXISTS (SELECT 1 FROM slices s JOIN experiments e ON e.key=s.experiment "
            "WHERE s.job_id=j.id AND e.plan_apply=?)",
            (PENDING, SUBMITTING, NEXT_APPLY, apply_id)).fetchone()
        return row[0]

    def job_work(self, job_id: int) -> list[SliceWork]:
        rows = self.conn.execute(
            "SELECT s.experiment, s.idx, s.shots, e.program, e.params FROM slices s "
            "JOIN experiments e ON e.key=s.experiment WHERE s.job_id=? ORDER BY s.rowid",
            (job_id,))
        return [SliceWork(experiment=r[0], index=r[1], shots=r[2], program=r[3],
                          params=json.loads(r[4])) for r in rows]

    def program(self, digest: str) -> tuple:
        """(format, content, item) of a stored program."""
        row = self.conn.execute("SELECT format, content, item FROM programs WHERE digest=?",
                                (digest,)).fetchone()
        if row is None:
            raise StateError(f"program {digest[:12]} is missing from {self.path}")
        return row

    def start_attempt(self, apply_id: int, job: JobRow, state: str = RUNNING) -> int:
        """Record the intent to run a job (a new attempt, with its idempotency tag) before any
        work starts or any provider is called."""
        with self.transaction():
            number = job.attempts + 1
            # The tag names this one attempt at the provider, for ever: not only its number,
            # which starts again after `qrun retry`, and not only the job's content key, which
            # another campaign with the same job shares. A lookup by tag must never find a
            # job some other attempt submitted.
            tag = f"qrun-{job.key[:16]}-{uuid.uuid4().hex[:12]}"
            tag_state = TAG_UNKNOWN if state == SUBMITTING else None  # local work has no provider
            cur = self.conn.execute(
                "INSERT INTO attempts(job_id, number, apply_id, state, tag, started_at, tag_state) "
                "VALUES (?,?,?,?,?,?,?)", (job.id, number, apply_id, state, tag, _now(), tag_state))
            self.conn.execute("UPDATE jobs SET state=?, attempts=?, updated_at=? WHERE id=?",
                              (state, number, _now(), job.id))
            self._event(apply_id, "job", job.id, state, {"attempt": number})
            return cur.lastrowid

    def complete_job(self, apply_id: int, job_id: int, attempt_id: int, results: list,
                     failures: list, metadata: dict) -> tuple[list, list]:
        """Store what a job returned, in one transaction with its state.

        ``results`` holds (experiment key, slice index, counts); ``failures`` holds
        (experiment key, error) for tasks that failed on their own: those experiments fail,
        the job's others still finish. The job is done when nothing failed, failed otherwise.
        Returns (keys of experiments finished now, keys of experiments failed now).
        """
        finished = []
        now = _now()
        state = FAILED if failures else DONE
        with self.transaction():
            self.conn.executemany(
                "UPDATE slices SET counts=?, metadata=? WHERE experiment=? AND idx=? AND job_id=?",
                [(_json(counts), _json(metadata), key, index, job_id)
                 for key, index, counts in results])
            self.conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE id=?",
                              (state, now, failures[0][1] if failures else None, attempt_id))
            self.conn.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE id=?",
                              (state, failures[0][1] if failures else None, now, job_id))
            self._event(apply_id, "job", job_id, state,
                        {"failed_experiments": len(failures)} if failures else None)
            for key in dict.fromkeys(key for key, _, _ in results):
                if self._merge_if_complete(apply_id, key, now):
                    finished.append(key)
            for key, error in failures:
                self._fail_experiment(apply_id, key, error, now)
        return finished, [key for key, _ in failures]

    def _fail_experiment(self, apply_id: int, key: str, error: str, now: float) -> None:
        self.conn.execute("UPDATE experiments SET state=?, error=?, updated_at=? WHERE key=?",
                          (FAILED, error, now, key))
        self._event(apply_id, "experiment", key, FAILED, error)

    def _merge_if_complete(self, apply_id: int, key: str, now: float) -> bool:
        slices = self.conn.execute("SELECT counts, metadata, shots FROM slices WHERE experiment=? "
                                   "ORDER BY idx", (key,)).fetchall()
        if any(counts is None for counts, _, _ in slices):
            return False
        merged: Counter = Counter()
        for counts, _, _ in slices:
            merged.update(json.loads(counts))
        metadata = json.loads(slices[-1][1]) if slices[-1][1] else {}
        if len(slices) > 1:
            metadata["slices"] = [shots for _, _, shots in slices]
        self.conn.execute(
            "INSERT INTO results(experiment, counts, shots, metadata, apply_id, completed_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(experiment) DO UPDATE SET counts=excluded.counts, "
            "shots=excluded.shots, metadata=excluded.metadata, apply_id=excluded.apply_id, "
            "completed_at=excluded.completed_at",
            (key, _json(dict(sorted(merged.items()))), sum(s for _, _, s in slices),
             _json(metadata), apply_id, now))
        self.conn.execute("UPDATE experiments SET state=?, error=NULL, updated_at=? WHERE key=?",
                          (DONE, now, key))
        self._event(apply_id, "experiment", key, DONE)
        return True

    def fail_attempt(self, apply_id: int, job_id: int, attempt_id: int, error: str,
                     retry_at: float | None, tag_absent: bool = False) -> list[str]:
        """Close a failed attempt: the job waits for ``retry_at`` or, if None, fails for good.

        ``tag_absent``: the provider is known to hold no job under the attempt's tag (its
        submission was refused, or its job is gone and a lookup found none). A remote attempt
        closed without it keeps an unknown tag, which is looked up before the job is sent again.
        Returns the keys of experiments that failed for good with it.
        """
        now = _now()
        with self.transaction():
            self.conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE id=?",
                              (FAILED, now, error, attempt_id))
            if tag_absent:
                self._tags_absent([attempt_id])
            if retry_at is not None:
                self.conn.execute("UPDATE jobs SET state=?, not_before=?, error=?, updated_at=? "
                                  "WHERE id=?", (PENDING, retry_at, error, now, job_id))
                self._event(apply_id, "job", job_id, PENDING, {"retry_at": retry_at, "error": error})
                return []
            self.conn.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE id=?",
                              (FAILED, error, now, job_id))
            self._event(apply_id, "job", job_id, FAILED, error)
            keys = [k for (k,) in self.conn.execute(
                "SELECT DISTINCT s.experiment FROM slices s JOIN experiments e ON e.key=s.experiment "
                "WHERE s.job_id=? AND e.state!=?", (job_id, DONE))]
            for key in keys:
                self._fail_experiment(apply_id, key, error, now)
            return keys

    def forget_unresolved(self, apply_id: int) -> int:
        """Declare every unknown tag absent, at the user's word (`qrun retry
        --resubmit-unresolved`, after checking at the provider): jobs left submitting go back
        to pending, to be submitted anew. Returns how many jobs that frees."""
        now = _now()
        with self.transaction():
            jobs = [j for (j,) in self.conn.execute("SELECT id FROM jobs WHERE state=?", (SUBMITTING,))]
            for job_id in jobs:
                self.conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE job_id=? "
                                  "AND finished_at IS NULL",
                                  (FAILED, now, "its fate was unknown; given up by qrun retry "
                                                "--resubmit-unresolved", job_id))
                self.conn.execute("UPDATE jobs SET state=?, not_before=0, error=NULL, updated_at=? "
                                  "WHERE id=?", (PENDING, now, job_id))
            cur = self.conn.execute("UPDATE attempts SET tag_state=? WHERE tag_state=?",
                                    (TAG_ABSENT, TAG_UNKNOWN))
            self._event(apply_id, "attempts", "unresolved", "forgotten",
                        {"jobs": len(jobs), "tags": cur.rowcount})
            return len(jobs)

    def reset_failed(self, apply_id: int) -> int:
        """Give every failed experiment a new chance; return how many there were.

        A failed job none of whose slices finished runs again whole, its retry budget
        afresh (its attempt history stays). From a job that finished part of its work, only
        the failed slices are taken out, to be cut into new jobs by the next plan: finished
        work is never run again.
        """
        now = _now()
        with self.transaction():
            failed_jobs = self.conn.execute(
                "SELECT j.id, count(s.counts) FROM jobs j JOIN slices s ON s.job_id=j.id "
                "WHERE j.state IN (?, ?) GROUP BY j.id", (FAILED, CANCELLED)).fetchall()
            for job_id, finished_slices in failed_jobs:
                if finished_slices:
                    self.conn.execute("DELETE FROM slices WHERE job_id=? AND counts IS NULL", (job_id,))
                    self.conn.execute("UPDATE jobs SET state=?, updated_at=? WHERE id=?",
                                      (DONE, now, job_id))
                    self._event(apply_id, "job", job_id, DONE, "failed slices split off for retry")
                else:
                    self.conn.execute("UPDATE jobs SET state=?, attempts=0, not_before=0, error=NULL, "
                                      "updated_at=? WHERE id=?", (PENDING, now, job_id))
                    self._event(apply_id, "job", job_id, PENDING, "retry requested")
            cur = self.conn.execute("UPDATE experiments SET state=?, error=NULL, updated_at=? "
                                    "WHERE state=?", (PENDING, now, FAILED))
            return cur.rowcount

    def cancel_job(self, apply_id: int, job_id: int, attempt_id: int | None, reason: str) -> list[str]:
        """Record a job as cancelled; its unfinished experiments fail with ``reason``."""
        now = _now()
        with self.transaction():
            if attempt_id is not None:
                self.conn.execute("UPDATE attempts SET state=?, finished_at=?, error=? WHERE id=?",
                                  (CANCELLED, now, reason, attempt_id))
            self.conn.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE id=?",
                              (CANCELLED, reason, now, job_id))
            self._event(apply_id, "job", job_id, CANCELLED, reason)
            keys = [k for (k,) in self.conn.execute(
                "SELECT DISTINCT s.experiment FROM slices s JOIN experiments e ON e.key=s.experiment "
                "WHERE s.job_id=? AND e.state!=?", (job_id, DONE))]
            for key in keys:
                self._fail_experiment(apply_id, key, reason, now)
            return keys

    def unfinished_jobs(self, apply_id: int) -> list[tuple]:
        """(job, open attempt id or None, remote handle or None) of the plan's unfinished jobs."""
        rows = self.conn.execute(
            f"SELECT {_JOB_COLUMNS}, (SELECT a.id FROM attempts a WHERE a.job_id=j.id AND "
            "a.finished_at IS NULL ORDER BY a.id DESC LIMIT 1), j.remote_id FROM jobs j "
            f"WHERE j.state IN ({','.join('?' * len(UNFINISHED_JOB_STATES))}) AND EXISTS "
            "(SELECT 1 FROM slices s JOIN experiments e ON e.key=s.experiment "
            " WHERE s.job_id=j.id AND e.plan_apply=?) ORDER BY j.id",
            (*UNFINISHED_JOB_STATES, apply_id)).fetchall()
        return [(_job_row(r[:8]), r[8], r[9]) for r in rows]

    def remote_jobs(self, apply_id: int, limit: int = 50) -> list[dict]:
        """The plan's jobs known to a provider: remote id, provider state, qrun state."""
        rows = self.conn.execute(
            "SELECT j.id, j.backend, j.state, j.remote_id, j.provider_state, j.error FROM jobs j "
            "WHERE j.remote_id IS NOT NULL AND EXISTS (SELECT 1 FROM slices s JOIN experiments e "
            "ON e.key=s.experiment WHERE s.job_id=j.id AND e.plan_apply=?) "
            "ORDER BY (j.state IN ('done', 'failed', 'cancelled')), j.id DESC LIMIT ?",
            (apply_id, limit))
        return [{"job": r[0], "backend": r[1], "state": r[2], "remote_id": r[3],
                 "provider_state": r[4], "error": r[5]} for r in rows]

    # -- reading

    def latest_plan_apply(self) -> int | None:
        row = self.conn.execute("SELECT max(plan_apply) FROM experiments").fetchone()
        return row[0]

    def apply_info(self, apply_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM applies WHERE id=?", [apply_id])
        columns = [d[0] for d in row.description]
        values = row.fetchone()
        return dict(zip(columns, values)) if values else None

    def state_counts(self, apply_id: int) -> dict:
        counts = {state: 0 for state in (PENDING, DONE, FAILED)}
        counts.update(self.conn.execute("SELECT state, count(*) FROM experiments WHERE plan_apply=? "
                                        "GROUP BY state", (apply_id,)))
        return counts

    def backend_summary(self, apply_id: int) -> list[dict]:
        """Per circuit and backend: how many experiments are in each state."""
        rows = self.conn.execute(
            "SELECT backend, provider, circuit, state, count(*) FROM experiments "
            "WHERE plan_apply=? GROUP BY backend, provider, circuit, state "
            "ORDER BY backend, circuit", (apply_id,))
        table: dict = {}
        for backend, provider, circuit, state, count in rows:
            row = table.setdefault((backend, circuit), {"backend": backend, "provider": provider,
                                                       "circuit": circuit, PENDING: 0, DONE: 0,
                                                       FAILED: 0})
            row[state] = count
        return list(table.values())

    def failures(self, apply_id: int, limit: int = 50) -> list[dict]:
        rows = self.conn.execute(
            "SELECT circuit, backend, params, error FROM experiments WHERE plan_apply=? AND state=? "
            "ORDER BY rowid LIMIT ?", (apply_id, FAILED, limit))
        return [{"circuit": c, "backend": b, "params": json.loads(p), "error": e}
                for c, b, p, e in rows]

    def failure_causes(self, apply_id: int, limit: int = 20) -> list[dict]:
        """Why experiments failed: one row per backend and error, the most frequent first."""
        rows = self.conn.execute(
            "SELECT backend, error, count(*) AS n FROM experiments WHERE plan_apply=? AND state=? "
            "GROUP BY backend, error ORDER BY n DESC, backend LIMIT ?", (apply_id, FAILED, limit))
        return [{"backend": b, "error": e, "experiments": n} for b, e, n in rows]

    def pending_causes(self, apply_id: int, limit: int = 20) -> list[dict]:
        """Why experiments are not finished: one row per backend, job state and reason."""
        rows = self.conn.execute(
            "SELECT j.backend, j.state, j.error, count(DISTINCT e.key) AS n FROM experiments e "
            "JOIN slices s ON s.experiment=e.key JOIN jobs j ON j.id=s.job_id "
            f"WHERE e.plan_apply=? AND e.state=? AND j.state IN ({','.join('?' * len(UNFINISHED_JOB_STATES))}) "
            "GROUP BY j.backend, j.state, j.error ORDER BY n DESC, j.backend LIMIT ?",
            (apply_id, PENDING, *UNFINISHED_JOB_STATES, limit))
        return [{"backend": b, "job_state": s, "reason": e, "experiments": n} for b, s, e, n in rows]

    def job_counts(self, apply_id: int) -> dict:
        rows = self.conn.execute(
            "SELECT j.state, count(*) FROM jobs j WHERE EXISTS (SELECT 1 FROM slices s JOIN "
            "experiments e ON e.key=s.experiment WHERE s.job_id=j.id AND e.plan_apply=?) "
            "GROUP BY j.state", (apply_id,))
        return dict(rows.fetchall())

    def export_rows(self, apply_id: int) -> Iterator[dict]:
        """One row per experiment of the plan, with its result and provenance; streamed."""
        cursor = self.conn.execute(
            """
            SELECT e.key, e.circuit, e.backend, e.provider, e.params, e.shots, e.state, e.error,
                   r.counts, r.metadata, r.completed_at,
                   (SELECT count(*) FROM attempts a WHERE a.job_id IN
                        (SELECT s.job_id FROM slices s WHERE s.experiment = e.key)) AS attempts,
                   (SELECT json_group_array(a.remote_id) FROM attempts a WHERE a.remote_id IS NOT NULL
                        AND a.job_id IN (SELECT s.job_id FROM slices s WHERE s.experiment = e.key))
                        AS remote_ids,
                   coalesce(ra.manifest_sha256, pa.manifest_sha256), coalesce(ra.git_commit, pa.git_commit),
                   coalesce(ra.git_dirty, pa.git_dirty)
            FROM experiments e
            LEFT JOIN results r ON r.experiment = e.key
            LEFT JOIN applies ra ON ra.id = r.apply_id
            LEFT JOIN applies pa ON pa.id = e.plan_apply
            WHERE e.plan_apply = ?
            ORDER BY e.rowid
            """, (apply_id,))
        for row in cursor:
            yield {
                "key": row[0], "circuit": row[1], "backend": row[2], "provider": row[3],
                "params": json.loads(row[4]), "shots": row[5], "state": row[6], "error": row[7],
                "counts": json.loads(row[8]) if row[8] else None,
                "metadata": json.loads(row[9]) if row[9] else None,
                "completed_at": row[10], "attempts": row[11], "remote_ids": json.loads(row[12]),
                "manifest_sha256": row[13], "git_commit": row[14],
                "git_dirty": None if row[15] is None else bool(row[15]),
            }


# ---------------------------------------------------------------- helpers

_JOB_COLUMNS = "j.id, j.key, j.backend, j.provider, j.backend_config, j.seed, j.attempts, j.state"


def _job_row(r) -> JobRow:
    return JobRow(id=r[0], key=r[1], backend=r[2], provider=r[3], backend_config=json.loads(r[4]),
                  seed=r[5], attempts=r[6], state=r[7])


def _providers() -> dict:
    from .providers import PROVIDERS

    return PROVIDERS


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _primary_code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # SQLITE_IOERR_WRITE -> SQLITE_IOERR


def _is_disk_problem(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) \
        or "disk is full" in str(exc) or "disk I/O error" in str(exc)


def _is_damage(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc)


def _is_access_problem(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) \
        or "readonly" in str(exc) or "unable to open" in str(exc)


def _explain(path: Path, exc: sqlite3.Error, what: str) -> str:
    """The error, what it likely means, and what to do; committed work is never lost."""
    message = f"{path}: {what} ({exc})"
    if _is_damage(exc):
        return f"{message}. {DAMAGED_ADVICE}"
    if _is_disk_problem(exc):
        return (f"{message}: the disk is full or failing. Everything committed before is kept; "
                "free some space and run the command again to carry on")
    if _is_access_problem(exc):
        return (f"{message}: its folder {path.parent} or the file is not writable. Make it "
                "writable, or choose another folder with --state-dir or QRUN_STATE_DIR "
                "(status and export can read a read-only campaign)")
    return message


DAMAGED_ADVICE = ("The file is damaged and qrun will not write to it. Restore it from a backup, "
                  "or move it aside and apply again to start afresh (finished experiments then "
                  "run again)")


def _cut_short(path: Path) -> bool:
    """Whether the database file is shorter than the size its header records.

    SQLite itself would only notice on reading a missing page, deep inside some later query.
    The header's size is trusted only when SQLite marked it valid (change counter equal to
    version-valid-for) and no write-ahead log holds newer pages.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(100)
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            return False
        size = path.stat().st_size
    except OSError:
        return False  # unreadable: opening it reports why
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0") or header[24:28] != header[92:96]:
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    return size < page_size * int.from_bytes(header[28:32], "big")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create state folder {folder}: {exc.strerror}") from None


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_alive(host: str, pid: int, started: float | None) -> bool:
    """Whether a lock holder still runs. One on another host is assumed alive."""
    if host != socket.gethostname():
        return True
    now_started = _process_start(pid)
    if now_started is None:
        return False
    # A reused pid belongs to a process started later than the holder.
    return started is None or abs(now_started - started) < 1.0


def lock_message(name: str, holder: dict) -> str:
    return _lock_message(name, holder["host"], holder["pid"], holder["since"], holder["command"])


def _lock_message(name, host, pid, since, command) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return (f"campaign {name} is locked by {command or 'qrun'} (pid {pid} on host {host}, since "
            f"{when}); wait for it to finish, or run `qrun unlock` if that process is gone")
