"""The state database's schema: its versions, and the upgrades between them.

A migration is appended, never edited: its index + 1 is the schema version it brings, kept
in ``PRAGMA user_version``. A database written by a newer qrun is refused, never downgraded.
"""

from __future__ import annotations

import sqlite_utils

from ..errors import StateError
from .connection import APPLICATION_ID, Connection


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("applies").create({
        "id": int, "command": str, "started_at": float, "finished_at": float,
        "manifest_path": str, "manifest_sha256": str, "git_commit": str, "git_dirty": int,
        "qrun_version": str, "host": str, "pid": int, "outcome": str,
    }, pk="id")
    db.table("programs").create({"digest": str, "format": str, "origin": str, "content": bytes,
                           "item": int}, pk="digest")
    db.table("experiments").create({
        "key": str, "circuit": str, "backend": str, "provider": str, "program": str,
        "params": str, "shots": int, "state": str, "error": str, "plan_apply": int,
        "created_at": float, "updated_at": float,
    }, pk="key", not_null={"state"})
    db.table("experiments").create_index(["plan_apply", "state"])
    db.table("jobs").create({
        "id": int, "key": str, "backend": str, "provider": str, "backend_config": str,
        "seed": int, "state": str, "attempts": int, "not_before": float, "remote_id": str,
        "provider_state": str, "error": str, "created_at": float, "updated_at": float,
    }, pk="id", not_null={"state"})
    db.table("jobs").create_index(["state", "not_before"])
    db.table("slices").create({
        "experiment": str, "idx": int, "shots": int, "job_id": int, "counts": str,
        "metadata": str,
    }, pk=("experiment", "idx"))
    db.table("slices").create_index(["job_id"])
    db.table("attempts").create({
        "id": int, "job_id": int, "number": int, "apply_id": int, "state": str, "tag": str,
        "remote_id": str, "started_at": float, "finished_at": float, "error": str,
    }, pk="id")
    db.table("attempts").create_index(["job_id"])
    db.table("results").create({
        "experiment": str, "counts": str, "shots": int, "metadata": str, "apply_id": int,
        "completed_at": float,
    }, pk="experiment")
    db.table("events").create({
        "id": int, "ts": float, "apply_id": int, "entity": str, "entity_id": str,
        "state": str, "detail": str,
    }, pk="id")
    db.table("locks").create({"name": str, "host": str, "pid": int, "pid_started": float,
                        "since": float, "token": str, "command": str}, pk="name")


def _migration_2(db: sqlite_utils.Database) -> None:
    # ready_jobs() walks each state's jobs in id order and stops at its limit. With only
    # (state, not_before) SQLite gathered and sorted every pending job on each call, and it
    # is called after every finished job: quadratic (a 100,000-experiment apply spent 35 %
    # of py-spy's samples of the coordinator there; 12 ms a call with 3,000 jobs pending,
    # 0.15 ms with this index).
    db.table("jobs").create_index(["state", "id"], index_name="idx_jobs_state_id")


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
    remote = remote_providers()
    marks = ",".join("?" * len(remote))
    db.execute(f"UPDATE attempts SET tag_state = CASE WHEN remote_id IS NOT NULL THEN 'found' "
               f"ELSE 'unknown' END WHERE job_id IN (SELECT id FROM jobs WHERE provider IN ({marks}))",
               remote)


def _migration_4(db: sqlite_utils.Database) -> None:
    # What the provider reported about a remote attempt once it was done (base.JobReport):
    # its usage (tasks, shots, seconds billed, and its own fields) and the calibration it
    # ran under, as JSON. NULL: nothing reported (a local run, a provider that says nothing).
    db.execute("ALTER TABLE attempts ADD COLUMN report TEXT")


def _migration_5(db: sqlite_utils.Database) -> None:
    # What an experiment's key hashes besides its program, params and shots, so that `plan`
    # can name what changed when a key does (DESIGN: plans explain themselves): its point's
    # index in the circuit's sweep (to match an edited sweep value to the point it replaces),
    # the campaign seed as JSON ("null": none; NULL: stored before this version, unknown),
    # and the backend identity's digest, whose content is kept once in backend_identities.
    # Experiments stored earlier keep NULLs: plan says "not recorded" for what they miss.
    db.execute("ALTER TABLE experiments ADD COLUMN point INTEGER")
    db.execute("ALTER TABLE experiments ADD COLUMN seed TEXT")
    db.execute("ALTER TABLE experiments ADD COLUMN backend_identity TEXT")
    db.table("backend_identities").create({"digest": str, "identity": str}, pk="digest")


MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5]  # append, never edit: index + 1 is the schema version
SCHEMA_VERSION = len(MIGRATIONS)


def remote_providers() -> list[str]:
    """The ids of the registered cloud providers (imported late: the registry loads plugins)."""
    from ..providers import PROVIDERS

    return [p for p, info in PROVIDERS.items() if not info.local]


def check_version(conn: Connection) -> int:
    """The file's schema version; refuses one written by a newer qrun."""
    version = conn.raw.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(f"{conn.path} was written by a newer qrun (schema {version}, this "
                         f"qrun knows up to {SCHEMA_VERSION}); upgrade qrun to use it")
    return int(version)


def migrate(conn: Connection) -> None:
    """Bring the schema up to date, in one transaction (a new file is created so too)."""
    if check_version(conn) == SCHEMA_VERSION:
        return
    with conn.transaction():
        # Re-read inside the write lock: another process may have migrated meanwhile.
        version = conn.raw.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            MIGRATIONS[number](conn.db)
        conn.raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
