"""What the campaign's state says: counts, summaries, failures and their causes, remote jobs,
and the export rows. Read-only queries returning named rows (see rows.NamedRow), never
positional tuples. ``apply_id`` is the apply whose plan is reported (the latest, mostly).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .connection import Connection
from .jobs import DONE, FAILED, FINISHED_JOB_STATES, PENDING, UNFINISHED_JOB_STATES
from .migrations import remote_providers
from .rows import NamedRow
from .running import TAG_FOUND, TAG_UNKNOWN

_IN_PLAN = ("EXISTS (SELECT 1 FROM slices s JOIN experiments e ON e.key=s.experiment "
            "WHERE s.job_id=j.id AND e.plan_apply=?)")


@dataclass(frozen=True)
class BackendSummary(NamedRow):
    """Experiments of one circuit on one backend, by state."""
    backend: str
    provider: str
    circuit: str
    pending: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Failure(NamedRow):
    circuit: str
    backend: str
    params: dict
    error: str | None


@dataclass(frozen=True)
class FailureCause(NamedRow):
    backend: str
    error: str | None
    experiments: int


@dataclass(frozen=True)
class PendingCause(NamedRow):
    backend: str
    job_state: str
    reason: str | None  # the last thing that held the job up; None: nothing went wrong
    experiments: int


@dataclass(frozen=True)
class RemoteJob(NamedRow):
    job: int
    backend: str
    state: str
    remote_id: str
    provider_state: str | None
    error: str | None


@dataclass(frozen=True)
class ExportRow(NamedRow):
    """One experiment of the plan, with its result and provenance."""
    key: str
    circuit: str
    backend: str
    provider: str
    params: dict
    shots: int
    state: str
    error: str | None
    counts: dict | None
    metadata: dict | None
    completed_at: float | None
    attempts: int
    remote_ids: list
    manifest_sha256: str | None
    git_commit: str | None
    git_dirty: bool | None


def state_counts(conn: Connection, apply_id: int) -> dict[str, int]:
    """Experiments of the plan by state: pending, done, failed (each present)."""
    counts = {state: 0 for state in (PENDING, DONE, FAILED)}
    counts.update(conn.all("SELECT state, count(*) FROM experiments WHERE plan_apply=? "
                           "GROUP BY state", (apply_id,)))
    return counts


def job_counts(conn: Connection, apply_id: int) -> dict[str, int]:
    return dict(conn.all(f"SELECT j.state, count(*) FROM jobs j WHERE {_IN_PLAN} GROUP BY j.state",
                         (apply_id,)))


def backend_summary(conn: Connection, apply_id: int) -> list[BackendSummary]:
    """Per circuit and backend: how many experiments are in each state."""
    rows = conn.all(
        "SELECT backend, provider, circuit, state, count(*) FROM experiments "
        "WHERE plan_apply=? GROUP BY backend, provider, circuit, state "
        "ORDER BY backend, circuit", (apply_id,))
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for backend, provider, circuit, state, count in rows:
        row = table.setdefault((backend, circuit), {"backend": backend, "provider": provider,
                                                   "circuit": circuit})
        row[state] = count
    return [BackendSummary(**row) for row in table.values()]


def failures(conn: Connection, apply_id: int, limit: int = 50) -> list[Failure]:
    rows = conn.all(
        "SELECT circuit, backend, params, error FROM experiments WHERE plan_apply=? AND state=? "
        "ORDER BY rowid LIMIT ?", (apply_id, FAILED, limit))
    return [Failure(circuit=c, backend=b, params=json.loads(p), error=e) for c, b, p, e in rows]


def failure_causes(conn: Connection, apply_id: int, limit: int = 20) -> list[FailureCause]:
    """Why experiments failed: one row per backend and error, the most frequent first."""
    rows = conn.all(
        "SELECT backend, error, count(*) AS n FROM experiments WHERE plan_apply=? AND state=? "
        "GROUP BY backend, error ORDER BY n DESC, backend LIMIT ?", (apply_id, FAILED, limit))
    return [FailureCause(backend=b, error=e, experiments=n) for b, e, n in rows]


def pending_causes(conn: Connection, apply_id: int, limit: int = 20) -> list[PendingCause]:
    """Why experiments are not finished: one row per backend, job state and reason."""
    marks = ",".join("?" * len(UNFINISHED_JOB_STATES))
    rows = conn.all(
        "SELECT j.backend, j.state, j.error, count(DISTINCT e.key) AS n FROM experiments e "
        "JOIN slices s ON s.experiment=e.key JOIN jobs j ON j.id=s.job_id "
        f"WHERE e.plan_apply=? AND e.state=? AND j.state IN ({marks}) "
        "GROUP BY j.backend, j.state, j.error ORDER BY n DESC, j.backend LIMIT ?",
        (apply_id, PENDING, *UNFINISHED_JOB_STATES, limit))
    return [PendingCause(backend=b, job_state=s, reason=e, experiments=n) for b, s, e, n in rows]


@dataclass(frozen=True)
class BackendWork(NamedRow):
    """Jobs (each one task at its provider) and their shots, on one backend."""
    backend: str
    tasks: int
    shots: int


def sent_work(conn: Connection) -> list[BackendWork]:
    """Per backend, over the whole campaign: every submission the provider may hold (its
    tag not known to be absent), failed ones included, with its job's shots. What counts
    against a budget (see costs.py)."""
    remote = remote_providers()
    marks = ",".join("?" * len(remote))
    # Each job's shots are summed through the slices' job_id index, for these jobs only: the
    # engine asks before sending, and a campaign may hold 100,000 local slices besides.
    rows = conn.all(
        "SELECT j.backend, count(*), "
        "coalesce(sum((SELECT sum(s.shots) FROM slices s WHERE s.job_id=j.id)), 0) "
        "FROM attempts a JOIN jobs j ON j.id=a.job_id "
        f"WHERE a.tag_state IN (?, ?) AND j.provider IN ({marks}) GROUP BY j.backend",
        (TAG_UNKNOWN, TAG_FOUND, *remote))
    return [BackendWork(backend=b, tasks=t, shots=n) for b, t, n in rows]


@dataclass(frozen=True)
class ReportedUsage(NamedRow):
    """What the provider itself reported of one backend's finished jobs, over the campaign:
    the jobs that reported, and the tasks, shots and seconds they say were used, and the
    calibrations they ran under, latest last. A figure some jobs did not give (IBM's charge
    while it is pending) is None, with how many jobs lack it in ``unknown_for``: a sum over
    the others would pass a part for the whole. ``unsettled`` counts the jobs whose usage
    the provider had not settled when it was read."""
    backend: str
    jobs: int
    tasks: int | None
    shots: int | None
    seconds: float | None
    calibrations: list
    unknown_for: dict  # figure -> jobs that did not report it (only figures some jobs gave)
    unsettled: int  # jobs whose provider said their usage was not final yet (read again later)


def reported_usage(conn: Connection) -> list[ReportedUsage]:
    """Per backend, the usage and calibrations the providers reported (attempts' reports)."""
    rows = conn.all("SELECT j.backend, a.report FROM attempts a JOIN jobs j ON j.id=a.job_id "
                    "WHERE a.report IS NOT NULL ORDER BY a.finished_at, a.id")
    by_backend: dict = {}
    missing: dict = {}  # backend -> figure -> jobs without it
    unsettled: dict = {}  # backend -> jobs whose usage is not final
    for backend, text in rows:
        report = json.loads(text)
        entry = by_backend.setdefault(backend, {"jobs": 0, "tasks": None, "shots": None,
                                                "seconds": None, "calibrations": []})
        entry["jobs"] += 1
        usage = report.get("usage") or {}
        if usage.get("final") is False:
            unsettled[backend] = unsettled.get(backend, 0) + 1
        for name in FIGURES:
            if usage.get(name) is not None:  # unknown stays unknown: never counted as 0
                entry[name] = (entry[name] or 0) + usage[name]
            else:
                lacking = missing.setdefault(backend, {})
                lacking[name] = lacking.get(name, 0) + 1
        calibration = report.get("calibration")
        if calibration and calibration not in entry["calibrations"]:
            entry["calibrations"].append(calibration)
    usages = []
    for backend, entry in by_backend.items():
        unknown = {name: count for name, count in missing.get(backend, {}).items()
                   if entry[name] is not None}  # given by some jobs, not by all
        usages.append(ReportedUsage(backend=backend, **{**entry, **dict.fromkeys(unknown)},
                                    unknown_for=unknown, unsettled=unsettled.get(backend, 0)))
    return usages


FIGURES = ("tasks", "shots", "seconds")


def unfinal_reports(conn: Connection, limit: int) -> list[tuple[int, str, dict, str, dict]]:
    """(attempt id, backend, its config, remote id, the report) of finished jobs whose provider said its
    usage was not final yet (``usage.final`` false: IBM's charge while pending)."""
    rows = conn.all("SELECT a.id, j.backend, j.backend_config, a.remote_id, a.report FROM attempts a "
                    "JOIN jobs j ON j.id=a.job_id WHERE a.report IS NOT NULL AND "
                    "json_extract(a.report, '$.usage.final') = 0 AND a.remote_id IS NOT NULL "
                    "ORDER BY a.id LIMIT ?", (limit,))
    return [(attempt, backend, json.loads(config), remote, json.loads(report))
            for attempt, backend, config, remote, report in rows]


def unsent_work(conn: Connection, apply_id: int) -> list[BackendWork]:
    """Per backend: the plan's pending jobs (never sent, or to be sent again) and their shots."""
    rows = conn.all(
        "SELECT j.backend, count(DISTINCT j.id), sum(s.shots) FROM jobs j "
        "JOIN slices s ON s.job_id=j.id JOIN experiments e ON e.key=s.experiment "
        "WHERE j.state=? AND e.plan_apply=? GROUP BY j.backend", (PENDING, apply_id))
    return [BackendWork(backend=b, tasks=t, shots=n or 0) for b, t, n in rows]


def remote_jobs(conn: Connection, apply_id: int, limit: int = 50) -> list[RemoteJob]:
    """The plan's jobs known to a provider, unfinished first, then the latest."""
    finished = ", ".join(f"'{state}'" for state in FINISHED_JOB_STATES)
    rows = conn.all(
        "SELECT j.id, j.backend, j.state, j.remote_id, j.provider_state, j.error FROM jobs j "
        f"WHERE j.remote_id IS NOT NULL AND {_IN_PLAN} "
        f"ORDER BY (j.state IN ({finished})), j.id DESC LIMIT ?", (apply_id, limit))
    return [RemoteJob(job=r[0], backend=r[1], state=r[2], remote_id=r[3], provider_state=r[4],
                      error=r[5]) for r in rows]


_EXPORT = """
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
    """


def export_rows(conn: Connection, apply_id: int) -> Iterator[ExportRow]:
    """One row per experiment of the plan, with its result and provenance; streamed."""
    for row in conn.stream(_EXPORT + " WHERE e.plan_apply = ? ORDER BY e.rowid", (apply_id,)):
        yield _export_row(row)


def export_rows_of(conn: Connection, keys: list[str]) -> list[ExportRow]:
    """The export rows of the stored experiments among ``keys``, whatever plan stored them
    (``qrun diff`` reads an older revision's experiments, retired from the latest plan)."""
    marks = ",".join("?" * len(keys))
    return [_export_row(row) for row in conn.all(_EXPORT + f" WHERE e.key IN ({marks})", keys)]


def _export_row(row) -> ExportRow:
    return ExportRow(
        key=row[0], circuit=row[1], backend=row[2], provider=row[3],
        params=json.loads(row[4]), shots=row[5], state=row[6], error=row[7],
        counts=json.loads(row[8]) if row[8] else None,
        metadata=json.loads(row[9]) if row[9] else None,
        completed_at=row[10], attempts=row[11], remote_ids=json.loads(row[12]),
        manifest_sha256=row[13], git_commit=row[14],
        git_dirty=None if row[15] is None else bool(row[15]))


def param_types(conn: Connection, apply_id: int) -> dict[str, str]:
    """The parameter names bound anywhere in the plan, sorted, each with the kind of its
    values: "int" when every value is an integer, "float" for numbers, else "str". Long
    exports need these columns before their first row; SQLite reads the JSON, so the
    campaign is scanned without being held."""
    rows = conn.all(
        "SELECT p.key, group_concat(DISTINCT p.type) FROM experiments e, json_each(e.params) p "
        "WHERE e.plan_apply=? GROUP BY p.key ORDER BY p.key", (apply_id,))
    return {name: _kind_of(set(types.split(","))) for name, types in rows}


def _kind_of(json_types: set[str]) -> str:
    if json_types == {"integer"}:
        return "int"
    if json_types <= {"integer", "real"}:
        return "float"
    return "str"


# -- the HTML report's reads (qrun/report.py): what it draws is aggregated as it streams by,
# so these hand out rows in an order that lets it, and let SQLite do what it does in C.

@dataclass(frozen=True)
class ResultPoint(NamedRow):
    """One done experiment's counts. ``params`` is the canonical JSON text: equal text is
    the same sweep point, so one point's results on every backend come one after another."""
    circuit: str
    backend: str
    params: str
    shots: int
    counts: dict


def result_points(conn: Connection, apply_id: int) -> Iterator[ResultPoint]:
    """The plan's done experiments with their counts, by circuit, sweep point and backend;
    streamed."""
    rows = conn.stream(
        "SELECT e.circuit, e.backend, e.params, r.shots, r.counts FROM experiments e "
        "JOIN results r ON r.experiment = e.key WHERE e.plan_apply=? AND e.state=? "
        "ORDER BY e.circuit, e.params, e.backend", (apply_id, DONE))
    for circuit, backend, params, shots, counts in rows:
        yield ResultPoint(circuit=circuit, backend=backend, params=params, shots=shots,
                          counts=json.loads(counts))


def leading_outcomes(conn: Connection, apply_id: int, per_circuit: int) -> dict[str, list[str]]:
    """Per circuit, the ``per_circuit`` outcomes with the most probability summed over its
    done experiments (every backend and sweep point), the most first. json_each reads the
    counts in SQLite, so no campaign-sized table is built in Python."""
    rows = conn.all(
        "SELECT circuit, outcome FROM (SELECT circuit, outcome, row_number() OVER "
        "(PARTITION BY circuit ORDER BY mass DESC, outcome) AS rank FROM "
        "(SELECT e.circuit AS circuit, o.key AS outcome, sum(o.value * 1.0 / max(r.shots, 1)) AS mass "
        "FROM experiments e JOIN results r ON r.experiment = e.key, json_each(r.counts) o "
        "WHERE e.plan_apply=? AND e.state=? GROUP BY e.circuit, o.key)) "
        "WHERE rank <= ? ORDER BY circuit, rank", (apply_id, DONE, per_circuit))
    leading: dict[str, list[str]] = {}
    for circuit, outcome in rows:
        leading.setdefault(circuit, []).append(outcome)
    return leading


@dataclass(frozen=True)
class BackendProvenance(NamedRow):
    """What a backend's results say they ran on: device and SDK versions, and how many."""
    backend: str
    provider: str
    device: str | None
    sdk: dict
    experiments: int


def backend_provenance(conn: Connection, apply_id: int) -> list[BackendProvenance]:
    rows = conn.all(
        "SELECT e.backend, e.provider, json_extract(r.metadata, '$.device'), "
        "json_extract(r.metadata, '$.sdk'), count(*) FROM experiments e "
        "JOIN results r ON r.experiment = e.key WHERE e.plan_apply=? "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 3", (apply_id,))
    return [BackendProvenance(backend=b, provider=p, device=None if d is None else str(d),
                              sdk=_sdk_versions(s), experiments=n) for b, p, d, s, n in rows]


def _sdk_versions(text: str | None) -> dict:
    try:
        versions = json.loads(text) if text else {}
    except ValueError:  # metadata a provider wrote by hand: shown as unknown, not a crash
        return {}
    return versions if isinstance(versions, dict) else {}


def remote_job_count(conn: Connection, apply_id: int) -> int:
    """The plan's jobs known to a provider by a remote id."""
    return conn.all(f"SELECT count(*) FROM jobs j WHERE j.remote_id IS NOT NULL AND {_IN_PLAN}",
                    (apply_id,))[0][0]
