"""A plan against the stored state: why each experiment of the manifest is in it.

`qrun plan` walks the manifest's experiments a batch at a time, looking their keys up as
the plan always did. Those not stored yet are parked in a temporary table of plan's
read-only connection (SQLite keeps temporary tables apart from the database file, so
nothing is written to the campaign), where SQL pairs them with the stored experiments
they replace. Memory stays the same for a campaign of any size; only counts, groups and
the first few experiments come back to Python.

Reasons (planreport.py documents them to users):
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
from array import array
from collections.abc import Iterable
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


def keys_digest(keys: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode() + b"\n")
    return digest.hexdigest()


def diff_plan(conn: Connection, experiments: Iterable, last_apply: int | None, listed: int,
              keep_run_keys: bool = False) -> PlanDiff:
    """Why each of ``experiments`` (planner.Experiment, streamed) is in the plan."""
    # The temporary tables of an earlier diff on this connection go first; these stay until
    # the connection closes (plan closes it next: dropping 100,000 rows took 0.1 s).
    for table in _TEMP_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    walk = _Walk(conn, last_apply, listed, keep_run_keys)
    walk.stream(experiments)
    walk.pair_and_retire()
    return walk.report()


_TEMP_TABLES = ("plan_fresh", "plan_kept", "plan_failed_before", "plan_gone", "plan_pairs")


class _Walk:
    """One pass over the manifest's experiments, a batch at a time, as the old plan made.

    A stored experiment's reason is its state, counted here. Only experiments not stored
    (new or changed) are parked in a temporary table, with the ids of the stored ones of
    the last applied plan that are produced still; SQL then pairs the parked ones with the
    last plan's others. An unchanged manifest parks nothing and pairs nothing."""

    def __init__(self, conn: Connection, last_apply: int | None, listed: int, keep_run_keys: bool):
        self.conn, self.last_apply, self.listed = conn, last_apply, listed
        self.diff = PlanDiff(run_keys=[] if keep_run_keys else None)
        self.keys, self.run_keys = hashlib.sha256(), hashlib.sha256()
        self.reasons: dict = {}  # (circuit, backend, provider, reason) -> [first seq, count]
        self.work: dict = {}  # (backend, shots) -> experiments not stored
        self.candidates: list = []  # (seq, experiment, reason or None: fresh) of the first not cached
        self.fresh = 0
        self.seeds: dict = {}  # the campaign's seed as JSON, made once
        # Temporary tables go to SQLite's scratch file past its page cache: kept in memory
        # (temp_store = MEMORY) 100,000 changed experiments took 12 % less CPU but 47 MB
        # more, growing with the campaign.
        conn.execute("CREATE TEMP TABLE plan_fresh(seq INTEGER PRIMARY KEY, key TEXT, circuit TEXT, "
                     "backend TEXT, provider TEXT, program TEXT, params TEXT, point INTEGER, "
                     "shots INTEGER, seed TEXT, backend_identity TEXT)")
        conn.execute("CREATE TEMP TABLE plan_kept(id INTEGER PRIMARY KEY)")
        # Experiments with a failed attempt, gathered once from the attempts (few).
        conn.execute("CREATE TEMP TABLE plan_failed_before(key TEXT PRIMARY KEY)")
        conn.execute("INSERT OR IGNORE INTO temp.plan_failed_before SELECT s.experiment FROM attempts a "
                     "JOIN slices s ON s.job_id=a.job_id WHERE a.state=?", (FAILED,))
        self.failed_before = ("key IN (SELECT key FROM temp.plan_failed_before)"
                              if conn.value("SELECT count(*) FROM temp.plan_failed_before") else "0")
        # The stored experiments of the last applied plan that are produced still: only
        # needed when some of that plan are not (then they are written to plan_kept).
        self.kept_ids = array("q")

    def stream(self, experiments: Iterable) -> None:
        seq = 0
        batch: list = []
        for experiment in experiments:
            batch.append(experiment)
            if len(batch) >= BATCH:
                seq = self._batch(seq, batch)
                batch = []
        if batch:
            self._batch(seq, batch)

    def _batch(self, seq: int, batch: list) -> int:
        keys = [e.key for e in batch]
        stored = {row[0]: row[1:] for row in self.conn.all(
            f"SELECT key, state, rowid, plan_apply, {self.failed_before} "
            f"FROM experiments WHERE key IN ({','.join('?' * len(keys))})", keys)}
        fresh: list = []
        for experiment in batch:
            seq += 1
            self.keys.update(experiment.key.encode() + b"\n")
            found = stored.get(experiment.key)
            if found is None:
                fresh.append(self._fresh_row(seq, experiment))
                shape = (experiment.backend, experiment.shots)
                self.work[shape] = self.work.get(shape, 0) + 1
                reason = None
            else:
                state, rowid, plan_apply, failed_before = found
                reason = _stored_reason(state, failed_before)
                self._count((experiment.circuit, experiment.backend, experiment.provider, reason), seq)
                if plan_apply == self.last_apply:
                    self.kept_ids.append(rowid)
            if reason != "cached":
                self.diff.not_cached += 1
                if len(self.candidates) < self.listed:
                    self.candidates.append((seq, experiment, reason))
            if reason is None or reason in TO_RUN:
                self.run_keys.update(experiment.key.encode() + b"\n")
                if self.diff.run_keys is not None:
                    self.diff.run_keys.append(experiment.key)
        if fresh:
            self.fresh += len(fresh)
            self.conn.executemany(f"INSERT INTO temp.plan_fresh VALUES ({','.join('?' * 11)})", fresh)
        return seq

    def _fresh_row(self, seq: int, e) -> tuple:
        seed = self.seeds.get(e.seed) or self.seeds.setdefault(e.seed, json.dumps(e.seed))
        return (seq, e.key, e.circuit, e.backend, e.provider, e.program, e.params_json, e.point,
                e.shots, seed, e.backend_id or None)

    def _count(self, group: tuple, seq: int, count: int = 1) -> None:
        seen = self.reasons.setdefault(group, [seq, 0])
        seen[0] = min(seen[0], seq)
        seen[1] += count

    def pair_and_retire(self) -> None:
        """The last applied plan's experiments no longer produced ('gone'): each paired with
        a parked one as 'changed' where one matches, the others retired."""
        conn = self.conn
        conn.execute("CREATE TEMP TABLE plan_gone(id INTEGER PRIMARY KEY, key TEXT, circuit TEXT, "
                     "backend TEXT, provider TEXT, program TEXT, params TEXT, shots INTEGER, "
                     "state TEXT, point INTEGER, seed TEXT, backend_identity TEXT)")
        conn.execute("CREATE TEMP TABLE plan_pairs(seq INTEGER PRIMARY KEY, before INTEGER, "
                     "paired_by TEXT)")
        last = conn.value("SELECT count(*) FROM experiments WHERE plan_apply=?", (self.last_apply,))
        if last != len(self.kept_ids):  # else every stored one is produced still: none is gone
            conn.executemany("INSERT INTO temp.plan_kept(id) VALUES (?)",
                             ((rowid,) for rowid in self.kept_ids))
            conn.execute(f"INSERT INTO temp.plan_gone SELECT e.rowid, e.key, e.circuit, e.backend, "
                         f"e.provider, e.program, e.params, e.shots, e.state, {_stored_columns(conn)} "
                         f"FROM experiments e WHERE e.plan_apply=? AND e.rowid NOT IN "
                         f"(SELECT id FROM temp.plan_kept)", (self.last_apply,))
            if self.fresh:
                for match in ("params", "point"):
                    _pair(conn, match)
        conn.execute("CREATE INDEX temp.plan_pairs_before ON plan_pairs(before)")

    def report(self) -> PlanDiff:
        conn, diff = self.conn, self.diff
        for circuit, backend, provider, reason, first, count in conn.all(
                "SELECT f.circuit, f.backend, f.provider, CASE WHEN r.seq IS NULL THEN 'new' "
                "ELSE 'changed' END, min(f.seq), count(*) FROM temp.plan_fresh f "
                "LEFT JOIN temp.plan_pairs r USING (seq) GROUP BY 1, 2, 3, 4"):
            self._count((circuit, backend, provider, reason), first, count)
        ordered = sorted(self.reasons.items(), key=lambda item: item[1][0])
        diff.reasons = [(*group, count) for group, (_, count) in ordered]
        diff.new_work = [(*shape, count) for shape, count in self.work.items()]
        unpaired = "NOT EXISTS (SELECT 1 FROM temp.plan_pairs r WHERE r.before=g.id)"
        diff.retired = conn.all(
            f"SELECT g.circuit, g.backend, g.provider, count(*) FROM temp.plan_gone g WHERE {unpaired} "
            f"GROUP BY 1, 2, 3 ORDER BY min(g.id)")
        diff.retired_listed = [Retired(*row) for row in conn.all(
            f"SELECT g.key, g.circuit, g.backend, g.params, g.state FROM temp.plan_gone g "
            f"WHERE {unpaired} ORDER BY g.id LIMIT ?", (self.listed,))]
        # Changed experiments alike but for their parameters, each group with its first
        # example. Of one manifest, the program follows from the circuit, the backend identity
        # from the backend and the seed is the campaign's: they need no grouping on this side.
        groups = conn.all(
            "SELECT p.circuit, p.backend, count(*), min(p.seq) FROM temp.plan_pairs r "
            "JOIN temp.plan_fresh p USING (seq) JOIN temp.plan_gone g ON g.id=r.before "
            "GROUP BY p.circuit, p.backend, p.shots, g.program, g.shots, g.seed, "
            "g.backend_identity, g.params=p.params ORDER BY min(p.seq)")
        pair = (f"SELECT {_FACTS.format(t='g')}, {_FACTS.format(t='p')} FROM temp.plan_pairs r "
                f"JOIN temp.plan_fresh p USING (seq) JOIN temp.plan_gone g ON g.id=r.before "
                f"WHERE r.seq=?")
        for circuit, backend, count, first in groups:
            row = conn.one(pair, (first,))
            diff.changes.append(ChangeGroup(circuit, backend, count, _facts(row[:6]), _facts(row[6:])))
        self._list()
        diff.keys_sha256, diff.run_keys_sha256 = self.keys.hexdigest(), self.run_keys.hexdigest()
        _referenced(conn, diff)
        return diff

    def _list(self) -> None:
        """The first experiments not cached, the parked ones with what they replace."""
        fresh = [seq for seq, _, reason in self.candidates if reason is None]
        replaced: dict = {}
        for start in range(0, len(fresh), BATCH):
            part = fresh[start:start + BATCH]
            replaced.update((row[0], row[1:]) for row in self.conn.all(
                f"SELECT r.seq, g.key, {_FACTS.format(t='g')} FROM temp.plan_pairs r "
                f"JOIN temp.plan_gone g ON g.id=r.before WHERE r.seq IN ({','.join('?' * len(part))})",
                part))
        for seq, e, reason in self.candidates:
            after = Facts(e.program, e.params_json, e.shots, json.dumps(e.seed), e.backend_id or None,
                          e.point)
            found = replaced.get(seq) if reason is None else None
            self.diff.listed.append(Listed(
                e.key, e.circuit, e.backend, reason or ("changed" if found else "new"), after,
                _facts(found[1:]) if found else None, found[0] if found else None))


def _stored_reason(state: str, failed_before: int) -> str:
    if state == DONE:
        return "cached"
    if state == FAILED:
        return "failed"
    return "retry" if state == PENDING and failed_before else "resume"


def _stored_columns(conn: Connection) -> str:
    """The recorded-facts columns, or NULLs in a database older than schema 5 (read-only:
    plan never migrates)."""
    names = {row[1] for row in conn.all("PRAGMA table_info(experiments)")}
    return ", ".join(c if c in names else f"NULL AS {c}" for c in ("point", "seed", "backend_identity"))


def _pair(conn: Connection, match: str) -> None:
    """Pair parked experiments with gone ones of the same circuit, backend and ``match``
    (params, or point), as 'changed': by a direct look-up where each such group holds one
    experiment on each side (the usual case, half the time of the general way), else the
    n-th of a group with the n-th."""
    conn.execute(f"CREATE INDEX temp.plan_gone_{match} ON plan_gone({match}, circuit, backend, shots, id)")
    repeated = conn.value(f"SELECT 1 FROM temp.plan_gone WHERE {match} IS NOT NULL "
                          f"GROUP BY {match}, circuit, backend HAVING count(*) > 1 LIMIT 1")
    if not repeated and _pair_directly(conn, match):
        return
    _pair_ranked(conn, match)


_UNPAIRED_FRESH = "seq NOT IN (SELECT seq FROM temp.plan_pairs)"
_UNPAIRED_GONE = "id NOT IN (SELECT before FROM temp.plan_pairs)"


def _pair_directly(conn: Connection, match: str) -> bool:
    """Each unpaired parked experiment with the gone one of its circuit, backend and
    ``match``; False (and nothing paired) if two experiments found the same one."""
    conn.execute(
        f"INSERT INTO temp.plan_pairs(seq, before, paired_by) SELECT seq, before, ? FROM "
        f"(SELECT p.seq, (SELECT g.id FROM temp.plan_gone g "
        f"  WHERE g.{match}=p.{match} AND g.circuit=p.circuit AND g.backend=p.backend "
        f"  AND g.{_UNPAIRED_GONE}) AS before "
        f"  FROM temp.plan_fresh p WHERE p.{match} IS NOT NULL AND p.{_UNPAIRED_FRESH}) "
        f"WHERE before IS NOT NULL", (match,))
    twice = conn.value("SELECT 1 FROM temp.plan_pairs WHERE paired_by=? GROUP BY before "
                       "HAVING count(*) > 1 LIMIT 1", (match,))
    if twice:
        conn.execute("DELETE FROM temp.plan_pairs WHERE paired_by=?", (match,))
    return not twice


def _pair_ranked(conn: Connection, match: str) -> None:
    """The n-th unpaired parked experiment of a circuit, backend and ``match`` (in shots,
    then manifest order) with the n-th gone one."""
    conn.execute(
        f"INSERT INTO temp.plan_pairs(seq, before, paired_by) "
        f"WITH fresh AS (SELECT seq, circuit, backend, {match} AS m, row_number() OVER "
        f"    (PARTITION BY circuit, backend, {match} ORDER BY shots, seq) AS n "
        f"    FROM temp.plan_fresh WHERE {match} IS NOT NULL AND {_UNPAIRED_FRESH}), "
        f"  gone AS (SELECT id, circuit, backend, {match} AS m, row_number() OVER "
        f"    (PARTITION BY circuit, backend, {match} ORDER BY shots, id) AS n "
        f"    FROM temp.plan_gone WHERE {match} IS NOT NULL AND {_UNPAIRED_GONE}) "
        f"SELECT fresh.seq, gone.id, ? FROM fresh JOIN gone "
        f"  ON gone.circuit=fresh.circuit AND gone.backend=fresh.backend AND gone.m=fresh.m "
        f"  AND gone.n=fresh.n", (match,))


_FACTS = "{t}.program, {t}.params, {t}.shots, {t}.seed, {t}.backend_identity, {t}.point"


def _facts(row) -> Facts:
    return Facts(*row)


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
