"""A plan against the stored state: why each experiment of the manifest is in it.

`qrun plan` streams the manifest's experiments into a temporary table of its read-only
connection (SQLite keeps temporary tables apart from the database file, so nothing is
written to the campaign), then joins them with the stored experiments in SQL. Memory stays
the same for a campaign of any size; only counts, groups and the first few experiments come
back to Python.

Reasons (api.PlanReport documents them to users):
- stored under the same key: ``cached`` (done), ``failed`` (failed for good), ``retry``
  (pending, after a failed attempt), ``resume`` (pending otherwise);
- not stored: ``changed`` when a stored experiment of the last applied plan, no longer
  produced, has the same circuit, backend and sweep point, else ``new``. Pairs are made
  first by equal parameters (what changed is then the source, shots, seed or backend),
  then, among what is left, by the point's index in its sweep (a swept value changed);
  within a group, in manifest order, so the pairing is one to one and repeatable.
- stored experiments of the last applied plan that are neither produced nor paired are
  ``retired``: not run, their results kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .connection import Connection
from .jobs import DONE, FAILED, PENDING

TO_RUN = ("new", "changed", "resume", "retry")  # the reasons apply runs an experiment for
BATCH = 2000


@dataclass(frozen=True)
class Facts:
    """What an experiment's key hashes, as stored (None: not recorded by an older qrun)."""

    program: str
    params: str  # canonical JSON
    shots: int
    seed: str | None  # JSON: "7", "null"
    backend_identity: str | None  # planner.backend_digest
    point: int | None


@dataclass(frozen=True)
class ChangeGroup:
    """Changed experiments of one circuit and backend that changed alike (parameters aside:
    one example of theirs is kept)."""

    circuit: str
    backend: str
    experiments: int
    before: Facts  # of the first of them
    after: Facts


@dataclass(frozen=True)
class Listed:
    key: str
    circuit: str
    backend: str
    reason: str
    after: Facts
    before: Facts | None = None  # the stored experiment it replaces (changed)
    before_key: str | None = None


@dataclass(frozen=True)
class Retired:
    key: str
    circuit: str
    backend: str
    params: str
    state: str


@dataclass
class PlanDiff:
    reasons: list = field(default_factory=list)  # (circuit, backend, provider, reason, count)
    retired: list = field(default_factory=list)  # (circuit, backend, provider, count)
    new_work: list = field(default_factory=list)  # (backend, shots, experiments not stored)
    changes: list = field(default_factory=list)  # ChangeGroup
    listed: list = field(default_factory=list)  # Listed: the first experiments not cached
    not_cached: int = 0
    retired_listed: list = field(default_factory=list)  # Retired: the first of them
    identities: dict = field(default_factory=dict)  # backend digest -> identity (stored)
    origins: dict = field(default_factory=dict)  # program digest -> origin (stored)
    keys_sha256: str = ""  # of every key of the plan, in manifest order
    run_keys_sha256: str = ""  # of the keys apply would run, in manifest order
    run_keys: list | None = None  # those keys, when asked for


def _keeping(keys: Iterable[str], kept: list | None) -> Iterator[str]:
    for key in keys:
        if kept is not None:
            kept.append(key)
        yield key


def keys_digest(keys: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode() + b"\n")
    return digest.hexdigest()


def diff_plan(conn: Connection, experiments: Iterable, last_apply: int | None, listed: int,
              keep_run_keys: bool = False) -> PlanDiff:
    """Why each of ``experiments`` (planner.Experiment, streamed) is in the plan."""
    diff = PlanDiff()
    # The temporary tables (about 250 bytes an experiment) go to SQLite's scratch file past
    # its page cache. Kept in memory (temp_store = MEMORY) a plan of 100,000 changed
    # experiments took 12 % less CPU but 47 MB more memory, growing with the campaign.
    try:
        diff.keys_sha256 = _load_planned(conn, experiments)
        _classify(conn, last_apply)
        _report(conn, diff, listed, keep_run_keys)
    finally:
        for table in ("plan_planned", "plan_gone", "plan_reasons", "plan_failed_before"):
            conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    return diff


def _load_planned(conn: Connection, experiments: Iterable) -> str:
    conn.execute("CREATE TEMP TABLE plan_planned(seq INTEGER PRIMARY KEY, key TEXT NOT NULL, "
                 "circuit TEXT, backend TEXT, provider TEXT, program TEXT, params TEXT, "
                 "point INTEGER, shots INTEGER, seed TEXT, backend_identity TEXT)")
    digest = hashlib.sha256()
    seeds: dict = {}  # the campaign's seed, as JSON once (not once per experiment)
    batch: list = []
    insert = ("INSERT INTO temp.plan_planned(key, circuit, backend, provider, program, params, "
              "point, shots, seed, backend_identity) VALUES (?,?,?,?,?,?,?,?,?,?)")
    for e in experiments:
        digest.update(e.key.encode() + b"\n")
        batch.append((e.key, e.circuit, e.backend, e.provider, e.program, e.params_json, e.point,
                      e.shots, seeds.get(e.seed) or seeds.setdefault(e.seed, json.dumps(e.seed)),
                      e.backend_id or None))
        if len(batch) >= BATCH:
            conn.executemany(insert, batch)
            batch = []
    if batch:
        conn.executemany(insert, batch)
    return digest.hexdigest()


def _stored_columns(conn: Connection) -> str:
    """The recorded-facts columns, or NULLs in a database older than schema 5 (read-only:
    plan never migrates)."""
    names = {row[1] for row in conn.all("PRAGMA table_info(experiments)")}
    return ", ".join(c if c in names else f"NULL AS {c}" for c in ("point", "seed", "backend_identity"))


def _classify(conn: Connection, last_apply: int | None) -> None:
    # kept: the stored experiment is of the last applied plan (so it is not a gone one)
    conn.execute("CREATE TEMP TABLE plan_reasons(seq INTEGER PRIMARY KEY, reason TEXT, "
                 "before INTEGER, kept INTEGER, paired_by TEXT)")
    # Stored under the same key: its state says why. Experiments with a failed attempt are
    # gathered first from the attempts (few), not looked up for each pending experiment.
    conn.execute("CREATE TEMP TABLE plan_failed_before(key TEXT PRIMARY KEY)")
    conn.execute("INSERT OR IGNORE INTO temp.plan_failed_before SELECT s.experiment FROM attempts a "
                 "JOIN slices s ON s.job_id=a.job_id WHERE a.state=?", (FAILED,))
    conn.execute(
        "INSERT INTO temp.plan_reasons(seq, reason, kept) SELECT p.seq, CASE e.state "
        "WHEN ? THEN 'cached' WHEN ? THEN 'failed' WHEN ? THEN "
        "  CASE WHEN e.key IN (SELECT key FROM temp.plan_failed_before) THEN 'retry' ELSE 'resume' END "
        "ELSE 'resume' END, CASE WHEN e.plan_apply IS ? THEN e.rowid END "
        "FROM temp.plan_planned p JOIN experiments e ON e.key=p.key",
        (DONE, FAILED, PENDING, last_apply))
    # The last applied plan's experiments the manifest no longer produces: none when every
    # one of them is produced still (the plan of an unchanged manifest pays nothing more).
    conn.execute(f"CREATE TEMP TABLE plan_gone AS SELECT e.rowid AS id, e.key, e.circuit, "
                 f"e.backend, e.provider, e.program, e.params, e.shots, e.state, "
                 f"{_stored_columns(conn)} FROM experiments e WHERE 0")
    last = conn.value("SELECT count(*) FROM experiments WHERE plan_apply=?", (last_apply,))
    kept = conn.value("SELECT count(kept) FROM temp.plan_reasons")
    if last != kept:
        conn.execute(f"INSERT INTO temp.plan_gone SELECT e.rowid, e.key, e.circuit, e.backend, "
                     f"e.provider, e.program, e.params, e.shots, e.state, {_stored_columns(conn)} "
                     f"FROM experiments e WHERE e.plan_apply=? AND e.rowid NOT IN "
                     f"(SELECT kept FROM temp.plan_reasons WHERE kept IS NOT NULL)", (last_apply,))
        fresh = conn.value("SELECT count(*) FROM temp.plan_planned") - conn.value(
            "SELECT count(*) FROM temp.plan_reasons")
        if fresh:
            for match in ("params", "point"):
                _pair(conn, match)
    conn.execute("INSERT INTO temp.plan_reasons(seq, reason) SELECT seq, 'new' FROM temp.plan_planned "
                 "WHERE seq NOT IN (SELECT seq FROM temp.plan_reasons)")
    conn.execute("CREATE INDEX temp.plan_reasons_before ON plan_reasons(before)")


def _pair(conn: Connection, match: str) -> None:
    """Pair experiments not stored yet with gone ones of the same circuit, backend and
    ``match`` (params, or point), as 'changed': by a direct look-up where each such group
    holds one experiment on each side (the usual case, half the time of the general way),
    else the n-th of a group with the n-th."""
    conn.execute(f"CREATE INDEX temp.plan_gone_{match} ON plan_gone({match}, circuit, backend, shots, id)")
    repeated = conn.value(f"SELECT 1 FROM temp.plan_gone WHERE {match} IS NOT NULL "
                          f"GROUP BY {match}, circuit, backend HAVING count(*) > 1 LIMIT 1")
    if not repeated and _pair_directly(conn, match):
        return
    _pair_ranked(conn, match)


_UNPAIRED_FRESH = "seq NOT IN (SELECT seq FROM temp.plan_reasons)"
_UNPAIRED_GONE = "id NOT IN (SELECT before FROM temp.plan_reasons WHERE before IS NOT NULL)"


def _pair_directly(conn: Connection, match: str) -> bool:
    """Each unpaired experiment with the gone one of its circuit, backend and ``match``;
    False (and nothing paired) if two experiments found the same one."""
    conn.execute(
        f"INSERT INTO temp.plan_reasons(seq, reason, before, paired_by) SELECT seq, 'changed', "
        f"before, ? FROM (SELECT p.seq, (SELECT g.id FROM temp.plan_gone g "
        f"  WHERE g.{match}=p.{match} AND g.circuit=p.circuit AND g.backend=p.backend "
        f"  AND g.{_UNPAIRED_GONE}) AS before "
        f"  FROM temp.plan_planned p WHERE p.{match} IS NOT NULL AND p.{_UNPAIRED_FRESH}) "
        f"WHERE before IS NOT NULL", (match,))
    twice = conn.value("SELECT 1 FROM temp.plan_reasons WHERE paired_by=? GROUP BY before "
                       "HAVING count(*) > 1 LIMIT 1", (match,))
    if twice:
        conn.execute("DELETE FROM temp.plan_reasons WHERE paired_by=?", (match,))
    return not twice


def _pair_ranked(conn: Connection, match: str) -> None:
    """The n-th unpaired experiment of a circuit, backend and ``match`` (in shots, then
    manifest order) with the n-th gone one."""
    conn.execute(
        f"INSERT INTO temp.plan_reasons(seq, reason, before, paired_by) "
        f"WITH fresh AS (SELECT seq, circuit, backend, {match} AS m, row_number() OVER "
        f"    (PARTITION BY circuit, backend, {match} ORDER BY shots, seq) AS n "
        f"    FROM temp.plan_planned WHERE {match} IS NOT NULL AND {_UNPAIRED_FRESH}), "
        f"  gone AS (SELECT id, circuit, backend, {match} AS m, row_number() OVER "
        f"    (PARTITION BY circuit, backend, {match} ORDER BY shots, id) AS n "
        f"    FROM temp.plan_gone WHERE {match} IS NOT NULL AND {_UNPAIRED_GONE}) "
        f"SELECT fresh.seq, 'changed', gone.id, ? FROM fresh JOIN gone "
        f"  ON gone.circuit=fresh.circuit AND gone.backend=fresh.backend AND gone.m=fresh.m "
        f"  AND gone.n=fresh.n", (match,))


_FACTS = "{t}.program, {t}.params, {t}.shots, {t}.seed, {t}.backend_identity, {t}.point"


def _facts(row) -> Facts:
    return Facts(*row)


def _report(conn: Connection, diff: PlanDiff, listed: int, keep_run_keys: bool) -> None:
    diff.reasons = conn.all(
        "SELECT p.circuit, p.backend, p.provider, r.reason, count(*) FROM temp.plan_planned p "
        "JOIN temp.plan_reasons r USING (seq) GROUP BY 1, 2, 3, 4 ORDER BY min(p.seq)")
    diff.new_work = conn.all(
        "SELECT p.backend, p.shots, count(*) FROM temp.plan_planned p JOIN temp.plan_reasons r "
        "USING (seq) WHERE r.reason IN ('new', 'changed') GROUP BY 1, 2")
    unpaired = "NOT EXISTS (SELECT 1 FROM temp.plan_reasons r WHERE r.before=g.id)"
    diff.retired = conn.all(
        f"SELECT g.circuit, g.backend, g.provider, count(*) FROM temp.plan_gone g WHERE {unpaired} "
        f"GROUP BY 1, 2, 3 ORDER BY min(g.id)")
    diff.retired_listed = [Retired(*row) for row in conn.all(
        f"SELECT g.key, g.circuit, g.backend, g.params, g.state FROM temp.plan_gone g "
        f"WHERE {unpaired} ORDER BY g.id LIMIT ?", (listed,))]
    # Changed experiments alike but for their parameters, each group with its first example.
    groups = conn.all(
        "SELECT p.circuit, p.backend, count(*), min(p.seq) FROM temp.plan_reasons r "
        "JOIN temp.plan_planned p USING (seq) JOIN temp.plan_gone g ON g.id=r.before "
        "GROUP BY p.circuit, p.backend, g.program, p.program, g.shots, p.shots, g.seed, p.seed, "
        "g.backend_identity, p.backend_identity, g.params=p.params ORDER BY min(p.seq)")
    pair = (f"SELECT {_FACTS.format(t='g')}, {_FACTS.format(t='p')} FROM temp.plan_reasons r "
            f"JOIN temp.plan_planned p USING (seq) JOIN temp.plan_gone g ON g.id=r.before "
            f"WHERE r.seq=?")
    for circuit, backend, count, first in groups:
        row = conn.one(pair, (first,))
        diff.changes.append(ChangeGroup(circuit, backend, count, _facts(row[:6]), _facts(row[6:])))
    diff.not_cached = int(conn.value("SELECT count(*) FROM temp.plan_reasons WHERE reason != 'cached'")
                          or 0)
    for row in conn.all(
            f"SELECT p.key, p.circuit, p.backend, r.reason, {_FACTS.format(t='p')}, g.key, "
            f"{_FACTS.format(t='g')} FROM temp.plan_reasons r JOIN temp.plan_planned p USING (seq) "
            f"LEFT JOIN temp.plan_gone g ON g.id=r.before WHERE r.reason != 'cached' "
            f"ORDER BY r.seq LIMIT ?", (listed,)):
        before = _facts(row[11:]) if row[10] is not None else None
        diff.listed.append(Listed(row[0], row[1], row[2], row[3], _facts(row[4:10]), before, row[10]))
    marks = ",".join("?" * len(TO_RUN))
    run_keys = conn.stream(f"SELECT p.key FROM temp.plan_planned p JOIN temp.plan_reasons r "
                           f"USING (seq) WHERE r.reason IN ({marks}) ORDER BY p.seq", TO_RUN)
    kept: list | None = [] if keep_run_keys else None  # streamed into the digest otherwise
    diff.run_keys_sha256 = keys_digest(_keeping((key for (key,) in run_keys), kept))
    diff.run_keys = kept
    _referenced(conn, diff)


def _referenced(conn: Connection, diff: PlanDiff) -> None:
    """The stored identities and program origins the changes refer to."""
    befores = [c.before for c in diff.changes] + [x.before for x in diff.listed if x.before]
    identities = {f.backend_identity for f in befores if f.backend_identity}
    identities |= {c.after.backend_identity for c in diff.changes if c.after.backend_identity}
    tables = {row[0] for row in conn.all("SELECT name FROM sqlite_master WHERE type='table'")}
    if identities and "backend_identities" in tables:
        marks = ",".join("?" * len(identities))
        diff.identities = {digest: json.loads(text) for digest, text in conn.all(
            f"SELECT digest, identity FROM backend_identities WHERE digest IN ({marks})",
            list(identities))}
    programs = {f.program for f in befores}
    if programs:
        marks = ",".join("?" * len(programs))
        diff.origins = dict(conn.all(f"SELECT digest, origin FROM programs WHERE digest IN ({marks})",
                                     list(programs)))


def state_digest(conn: Connection | None) -> str:
    """A digest of what an apply's outcome depends on in the stored state: it changes with
    every apply, every job or experiment state change (each one records an event), every
    attempt and every remembered device limit. The lock is left out (a held lock refuses an
    apply anyway). A database with nothing stored and no database at all digest alike: a
    plan made before the first apply stays good until something is stored."""
    figures: dict = {"applies": None, "events": None, "experiments": 0, "jobs": None,
                     "attempts": None, "meta": []}
    if conn is not None:
        last = conn.one("SELECT id, finished_at, outcome FROM applies ORDER BY id DESC LIMIT 1")
        figures.update(
            applies=list(last) if last else None,
            events=conn.value("SELECT max(id) FROM events"),
            experiments=conn.value("SELECT count(*) FROM experiments"),
            jobs=list(conn.one("SELECT max(id), count(*), max(updated_at) FROM jobs")),
            attempts=list(conn.one("SELECT max(id), count(*), max(finished_at) FROM attempts")),
            meta=[list(row) for row in conn.all("SELECT key, value FROM meta WHERE key != 'campaign' "
                                                "ORDER BY key")])
        if figures["jobs"] == [None, 0, None]:
            figures["jobs"] = None
        if figures["attempts"] == [None, 0, None]:
            figures["attempts"] = None
    text = json.dumps(figures, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
