"""Applies, their provenance, and the plan each one stores.

A plan is stored in one transaction: its programs, its experiments (streamed, a batch at a
time, so a plan of any size needs little memory), and jobs cut for what must run. An
experiment's key is a hash of its content, so an edited manifest reuses every result whose
key is unchanged.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .connection import Connection, now, to_json
from .events import record_event
from .jobs import DONE, FAILED, PENDING
from .rows import PlanCounts

BATCH = 2000  # rows per executemany when streaming a plan in


def begin_apply(conn: Connection, command: str, manifest_path: str, manifest_sha256: str,
                git_commit: str | None, git_dirty: bool | None, qrun_version: str) -> int:
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO applies(command, started_at, manifest_path, manifest_sha256, git_commit,"
            " git_dirty, qrun_version, host, pid) VALUES (?,?,?,?,?,?,?,?,?)",
            (command, now(), manifest_path, manifest_sha256, git_commit,
             None if git_dirty is None else int(git_dirty), qrun_version,
             socket.gethostname(), os.getpid()))
        apply_id = int(cur.lastrowid or 0)
        record_event(conn, apply_id, "apply", apply_id, "started",
                     {"manifest_sha256": manifest_sha256, "git_commit": git_commit})
        return apply_id


def finish_apply(conn: Connection, apply_id: int, outcome: str) -> None:
    with conn.transaction():
        conn.execute("UPDATE applies SET finished_at=?, outcome=? WHERE id=?",
                     (now(), outcome, apply_id))
        record_event(conn, apply_id, "apply", apply_id, outcome)


def set_meta(conn: Connection, key: str, value: str) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                     "DO UPDATE SET value=excluded.value", (key, value))


def meta(conn: Connection, key: str) -> str | None:
    return conn.value("SELECT value FROM meta WHERE key=?", (key,))


def delete_meta(conn: Connection, key: str) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM meta WHERE key=?", (key,))


def latest_plan_apply(conn: Connection) -> int | None:
    return conn.value("SELECT max(plan_apply) FROM experiments")


def apply_info(conn: Connection, apply_id: int) -> dict | None:
    return conn.mapping("SELECT * FROM applies WHERE id=?", (apply_id,))


def experiment_states(conn: Connection, keys: list[str]) -> dict:
    """key -> state of those of ``keys`` that are stored (a batch of a plan, not all of
    it: a whole campaign's states would be a dict of the campaign)."""
    return dict(conn.all(f"SELECT key, state FROM experiments WHERE key IN ({','.join('?' * len(keys))})",
                         keys))


def save_plan(conn: Connection, apply_id: int, programs: Iterable, experiments: Iterable,
              backend_configs: dict, cut_jobs: Callable, seed_of: Callable,
              backend_identities: dict | None = None) -> PlanCounts:
    """Record the plan of one apply in one transaction, and cut jobs for what must run.

    ``experiments`` is streamed (plan.Experiment objects). Jobs never attempted are
    dissolved and cut again, so they always follow the current manifest's split rules;
    jobs with attempts keep their shape, since a provider may know them.
    """
    counts: Counter = Counter()
    with conn.transaction():
        conn.executemany(
            "INSERT OR IGNORE INTO programs(digest, format, origin, content, item) VALUES (?,?,?,?,?)",
            [(p.digest, p.format, p.origin, p.content, p.index) for p in programs])
        # backend digest -> identity, so that `plan` can say how a backend changed
        conn.executemany("INSERT OR IGNORE INTO backend_identities(digest, identity) VALUES (?,?)",
                         [(digest, to_json(identity)) for digest, identity in
                          (backend_identities or {}).items()])
        for batch in _batches(experiments, BATCH):
            _upsert_experiments(conn, apply_id, batch, counts)
        _dissolve_unattempted_jobs(conn)
        jobs_created = _cut_jobs(conn, apply_id, backend_configs, cut_jobs, seed_of)
        record_event(conn, apply_id, "plan", apply_id, "stored", {**counts, "jobs": jobs_created})
    return PlanCounts(new=counts["new"], cached=counts[DONE], failed=counts[FAILED],
                      pending=counts[PENDING], jobs_created=jobs_created)


def _upsert_experiments(conn: Connection, apply_id: int, batch: list, counts: Counter) -> None:
    keys = [e.key for e in batch]
    known = experiment_states(conn, keys)
    stamp = now()
    conn.executemany(
        "INSERT INTO experiments(key, circuit, backend, provider, program, params, shots, state,"
        " plan_apply, created_at, updated_at, point, seed, backend_identity)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(key) DO UPDATE SET circuit=excluded.circuit, backend=excluded.backend, "
        "plan_apply=excluded.plan_apply, point=excluded.point, seed=excluded.seed, "
        "backend_identity=excluded.backend_identity",
        [(e.key, e.circuit, e.backend, e.provider, e.program, e.params_json, e.shots,
          PENDING, apply_id, stamp, stamp, e.point, to_json(e.seed), e.backend_id or None)
         for e in batch])
    for key in keys:
        counts[known.get(key, "new")] += 1


def _dissolve_unattempted_jobs(conn: Connection) -> None:
    # Jobs holding shot slices keep their shape: their experiment's other slices may be
    # done already, and cutting again would lose track of which shares are missing.
    conn.execute("DROP TABLE IF EXISTS temp.dissolved")
    conn.execute(
        "CREATE TEMP TABLE dissolved AS SELECT j.id FROM jobs j WHERE j.state=? AND j.attempts=0 "
        "AND NOT EXISTS (SELECT 1 FROM slices s JOIN slices other ON other.experiment=s.experiment "
        "                WHERE s.job_id=j.id AND other.idx>0)", (PENDING,))
    conn.execute("DELETE FROM slices WHERE job_id IN (SELECT id FROM temp.dissolved)")
    conn.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM temp.dissolved)")
    conn.execute("DROP TABLE temp.dissolved")


def _cut_jobs(conn: Connection, apply_id: int, backend_configs: dict, cut_jobs: Callable,
              seed_of: Callable) -> int:
    unassigned = conn.stream(
        "SELECT e.backend, e.key, e.shots FROM experiments e WHERE e.plan_apply=? AND e.state=? "
        "AND NOT EXISTS (SELECT 1 FROM slices s WHERE s.experiment=e.key) ORDER BY e.rowid",
        (apply_id, PENDING))
    created = 0
    stamp = now()
    for job in cut_jobs(unassigned):
        config = backend_configs[job.backend]
        # A job is born pending; from then on only jobs.move_job changes its state.
        cur = conn.execute(
            "INSERT INTO jobs(key, backend, provider, backend_config, seed, state, attempts,"
            " not_before, created_at, updated_at) VALUES (?,?,?,?,?,?,0,0,?,?)",
            (job.key, job.backend, config["provider"], to_json(config), seed_of(job.key),
             PENDING, stamp, stamp))
        conn.executemany(
            "INSERT INTO slices(experiment, idx, shots, job_id) VALUES (?,?,?,?)",
            [(s.experiment, s.index, s.shots, cur.lastrowid) for s in job.slices])
        created += 1
    return created


def _batches(items: Iterable[Any], size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

