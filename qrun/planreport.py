"""What `qrun plan` reports: every experiment of the manifest with the reason it is in the
plan, what changed in those whose key changed, what the manifest no longer produces, and
what running it would cost; as a Python object, and as the documented JSON document
(``format_version``; docs/plan.md lists its fields).

Reasons, one per experiment of the manifest:
    new       nothing like it is stored
    changed   its key is new, and the stored experiment of the same circuit, backend and
              sweep point (of the last applied plan) differs in what is listed
    resume    stored, not finished: apply picks it up where it was left
    retry     stored, not finished, after a failed attempt: apply tries it again under the
              manifest's retry policy
    failed    failed for good: apply leaves it, `qrun retry` runs it again
    cached    done: its result is reused
and ``retired`` for stored experiments the manifest no longer produces (not run, their
results kept in the state).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import changes, costs, planner
from .manifest import Manifest
from .store import TO_RUN, Facts, Listed, PlanDiff

FORMAT_VERSION = 1  # of the JSON document; bump when a field changes meaning or goes
REASONS = ("new", "changed", "resume", "retry", "failed", "cached")
LISTED = 1000  # experiments (and retired ones) listed one by one; the rest are counted


@dataclass
class PlanReport:
    campaign: str
    state_path: Path
    rows: list  # per circuit and backend: experiments by reason, and retired
    totals: dict  # experiments by reason, and retired
    cost: costs.CostEstimate  # what would run, per backend: tasks, shots, cost; and what was sent
    budget: costs.Budget | None = None
    over_budget: str | None = None  # why apply would refuse to start (costs.check_budget)
    manifest_path: Path | None = None
    manifest_sha256: str = ""
    state_sha256: str = ""  # store.state_digest of the state the plan was made against
    keys_sha256: str = ""  # of every experiment key, in manifest order
    run_keys_sha256: str = ""  # of the keys apply would run
    changes: list = field(default_factory=list)  # changed experiments grouped (dicts)
    experiments: list = field(default_factory=list)  # the first LISTED not cached (dicts)
    experiments_left_off: int = 0
    retired: list = field(default_factory=list)  # the first LISTED retired (dicts)
    retired_left_off: int = 0
    run_keys: list | None = None  # the keys apply would run, when asked for (plan --out)

    @property
    def to_run(self) -> int:
        return sum(self.totals[reason] for reason in TO_RUN)

    @property
    def has_work(self) -> bool:
        return self.to_run > 0

    def as_dict(self) -> dict:
        """The JSON document of `qrun plan -o json` (docs/plan.md)."""
        return {"format_version": FORMAT_VERSION, "campaign": self.campaign,
                "manifest_path": str(self.manifest_path) if self.manifest_path else None,
                "manifest_sha256": self.manifest_sha256, "state_path": str(self.state_path),
                "state_sha256": self.state_sha256, "keys_sha256": self.keys_sha256,
                "run_keys_sha256": self.run_keys_sha256, "to_run": self.to_run,
                "totals": self.totals, "rows": self.rows, "changes": self.changes,
                "experiments": self.experiments, "experiments_left_off": self.experiments_left_off,
                "retired": self.retired, "retired_left_off": self.retired_left_off,
                "cost": self.cost.as_dict(),
                "budget": self.budget and asdict(self.budget), "over_budget": self.over_budget}


def diff_without_state(manifest: Manifest, keep_run_keys: bool) -> PlanDiff:
    """The diff of a campaign never applied: everything is new (no database is read)."""
    from .store import keys_digest

    diff = PlanDiff()
    reasons: dict = {}
    work: dict = {}
    kept: list | None = [] if keep_run_keys else None  # only for plan --out: memory stays flat

    def keys():
        for experiment in planner.experiments(manifest):
            group = (experiment.circuit, experiment.backend, experiment.provider, "new")
            reasons[group] = reasons.get(group, 0) + 1
            shape = (experiment.backend, experiment.shots)
            work[shape] = work.get(shape, 0) + 1
            diff.not_cached += 1
            if len(diff.listed) < LISTED:
                diff.listed.append(Listed(experiment.key, experiment.circuit, experiment.backend,
                                          "new", _facts_of(experiment)))
            if kept is not None:
                kept.append(experiment.key)
            yield experiment.key

    diff.keys_sha256 = diff.run_keys_sha256 = keys_digest(keys())
    diff.reasons = [(*group, count) for group, count in reasons.items()]
    diff.new_work = [(*group, count) for group, count in work.items()]
    diff.run_keys = kept
    return diff


def _facts_of(experiment) -> Facts:
    return Facts(experiment.program, experiment.params_json, experiment.shots,
                 json.dumps(experiment.seed), experiment.backend_id, experiment.point)


def build(manifest: Manifest, db_path: Path, diff: PlanDiff, state_sha256: str,
          estimate: costs.CostEstimate, over_budget: str | None) -> PlanReport:
    identities = {planner.backend_digest(b): b.identity for b in manifest.backends.values()}
    identities.update(diff.identities)
    origins = dict(diff.origins)
    origins.update({c.program.digest: c.program.origin for c in manifest.circuits.values()})
    rows, totals = _rows(diff)
    listed = [_listed(item, identities, origins) for item in diff.listed]
    retired = [{"key": r.key, "circuit": r.circuit, "backend": r.backend,
                "params": json.loads(r.params), "state": r.state} for r in diff.retired_listed]
    return PlanReport(
        campaign=manifest.name, state_path=db_path, rows=rows, totals=totals, cost=estimate,
        budget=manifest.budget, over_budget=over_budget, manifest_path=manifest.path,
        manifest_sha256=manifest.sha256, state_sha256=state_sha256,
        keys_sha256=diff.keys_sha256, run_keys_sha256=diff.run_keys_sha256,
        changes=[_group(g, identities, origins) for g in diff.changes],
        experiments=listed, experiments_left_off=diff.not_cached - len(listed),
        retired=retired, retired_left_off=totals["retired"] - len(retired),
        run_keys=diff.run_keys)


def _rows(diff: PlanDiff) -> tuple[list, dict]:
    totals = dict.fromkeys((*REASONS, "retired"), 0)
    rows: dict = {}

    def row(circuit: str, backend: str, provider: str) -> dict:
        return rows.setdefault((circuit, backend), {"circuit": circuit, "backend": backend,
                                                    "provider": provider, **dict.fromkeys(totals, 0)})

    for circuit, backend, provider, reason, count in diff.reasons:
        row(circuit, backend, provider)[reason] += count
        totals[reason] += count
    for circuit, backend, provider, count in diff.retired:
        row(circuit, backend, provider)["retired"] += count
        totals["retired"] += count
    return list(rows.values()), totals


def _listed(item: Listed, identities: dict, origins: dict) -> dict:
    entry = {"key": item.key, "circuit": item.circuit, "backend": item.backend,
             "params": json.loads(item.after.params), "reason": item.reason}
    if item.before is not None:
        entry["replaces"] = item.before_key
        entry["changes"] = [c.as_dict() for c in
                            changes.between(item.before, item.after, identities, origins)]
    return entry


def _group(group, identities: dict, origins: dict) -> dict:
    """A group of changed experiments: what changed alike, and for the parameters (which
    differ from one experiment to the next) the first one's values, marked ``varies``."""
    found = []
    for change in changes.between(group.before, group.after, identities, origins):
        entry = change.as_dict()
        if change.field.startswith("params.") and group.experiments > 1:
            entry["varies"] = True
        found.append(entry)
    return {"circuit": group.circuit, "backend": group.backend, "experiments": group.experiments,
            "changes": found}
