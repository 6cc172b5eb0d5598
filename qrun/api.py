"""qrun's Python API: what the CLI calls, and what scripts and notebooks can call too.

    import qrun
    report = qrun.apply("campaign.yaml")
    print(report.state["done"], "experiments done")

Each function takes a manifest path, validates it, and works on the campaign's state
database (``<state_dir>/<campaign name>.sqlite``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from . import __version__, costs, executors, exporter, planfile, planner, planreport
from . import manifest as manifests
from .engine import SILENCE_LIMIT, Engine, RunOutcome
from .errors import LockedError, QrunError, StalePlanError, StateError
from .executors import ExecutorChoice
from .manifest import Manifest
from .planreport import PlanReport
from .provenance import git_state
from .providers import Limits, faults
from .store import DONE, FAILED, PENDING, LockHolder, PlanCounts, Store, lock_message, state_digest

DEFAULT_STATE_DIR = "runs"
FAILURES_SHOWN = 20  # failed experiments listed by apply and status; export lists them all


def state_path(manifest: Manifest, state_dir: str | Path | None = None) -> Path:
    """Where a campaign's state lives: --state-dir, else $QRUN_STATE_DIR, else ./runs."""
    folder = state_dir or os.environ.get("QRUN_STATE_DIR") or DEFAULT_STATE_DIR
    return Path(folder) / f"{manifest.name}.sqlite"


def validate(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Load and check a manifest; raises ManifestError listing every problem. Its paths must
    stay inside ``root`` (else $QRUN_ROOT, else its git repository: see manifest.path_root)."""
    return manifests.load(path, root)


# ---------------------------------------------------------------- plan

def plan(path: str | Path, state_dir=None, root=None, keep_run_keys: bool = False) -> PlanReport:
    """What `apply` would do, and why, and what it would cost, without writing anything.

    Every experiment gets a reason (planreport.py lists them); one whose key changed is
    matched to the stored experiment it replaces, and what changed is named; stored ones
    the manifest no longer produces are retired. ``keep_run_keys`` keeps the keys apply
    would run (what `qrun plan --out` saves)."""
    manifest = validate(path, root)
    db_path = state_path(manifest, state_dir)
    store = Store.open(db_path, readonly=True) if db_path.exists() else None
    sent: dict = {}
    to_send: dict = {}
    try:
        diff, latest = _plan_diff(manifest, store, planreport.LISTED, keep_run_keys)
        if store:
            sent = costs.work_by_backend(store.sent_work())
            to_send = costs.work_by_backend(store.unsent_work(latest)) if latest else {}
        # A device's own limits on a job (a Braket program set's size) are read by apply;
        # plan uses what the last one read, or the provider's guess, never the network.
        declared = {backend: _stored_declared_limits(store, manifest, backend)
                    for backend in {b for b, _, _ in diff.new_work}}
        digest = store.state_digest() if store else state_digest(None)
    finally:
        if store:
            store.close()
    for backend, shots, count in diff.new_work:
        limits = planner.job_limits(manifest, backend, declared[backend])
        jobs = planner.jobs_needed(count, shots, limits)
        to_send.setdefault(backend, costs.Work()).add(jobs, count * shots)
    estimate = costs.CostEstimate.of(manifest, to_send, sent)
    return planreport.build(manifest, db_path, diff, digest, estimate,
                            _over_budget(manifest.budget, estimate))


def _plan_diff(manifest: Manifest, store: Store | None, listed: int, keep_run_keys: bool):
    """The manifest's experiments against the stored state, and the last applied plan."""
    if store is None:
        return planreport.diff_without_state(manifest, keep_run_keys), None
    latest = store.latest_plan_apply()
    return store.diff_plan(planner.experiments(manifest), latest, listed, keep_run_keys), latest


def _over_budget(budget, estimate) -> str | None:
    try:
        costs.check_budget(budget, estimate)
    except costs.BudgetExceeded as exc:
        return str(exc)
    return None


PLAN_BATCH = 2000  # experiments whose stored rows are asked for at once


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# ---------------------------------------------------------------- apply

@dataclass
class ApplyReport:
    campaign: str
    state_path: Path
    planned: PlanCounts | None
    run: RunOutcome
    state: dict  # experiments of the plan by state: pending, done, failed
    failures: list = field(default_factory=list)  # the first failed experiments (store.Failure)
    failure_causes: list = field(default_factory=list)  # failed experiments per backend and error (store.FailureCause)
    pending_causes: list = field(default_factory=list)  # unfinished experiments per backend and why (store.PendingCause)
    exports: list = field(default_factory=list)
    backends: list = field(default_factory=list)  # store.BackendSummary rows
    injected_faults: str | None = None  # QRUN_FAULTS was set: this run was a rehearsal

    @property
    def interrupted(self) -> bool:
        return self.run.interrupted

    @property
    def all_done(self) -> bool:
        return self.state[PENDING] == 0 and self.state[FAILED] == 0


@dataclass(frozen=True)
class RunOptions:
    """How an apply runs its jobs: where local simulation goes, faults to rehearse, and how
    long a silent service is waited for (QRUN_SILENCE_LIMIT) before its work is left."""

    executor: ExecutorChoice
    faults: faults.Faults
    silence_limit: float = SILENCE_LIMIT


def silence_limit_from_env() -> float:
    text = os.environ.get("QRUN_SILENCE_LIMIT", "").strip()
    if not text:
        return SILENCE_LIMIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise QrunError(f"QRUN_SILENCE_LIMIT={text!r}: give the seconds a silent service is "
                        f"waited for, a positive number (default {SILENCE_LIMIT:g})")
    return seconds


def refuse_if_locked(manifest: Manifest, db_path: Path) -> None:
    """Report a live lock holder before asking for the write lock.

    The lock itself is taken inside a write transaction, which waits for the running
    apply's writes (12.9 s on a loaded machine); reading it first answers at once. The
    write transaction checks again, so two commands starting together stay safe.
    """
    if not db_path.exists():
        return
    try:
        with Store.open(db_path, readonly=True) as store:
            holder = store.lock_holder(manifest.name)
    except StateError:
        return  # the write open that follows reports what is wrong with the file
    if holder and holder.alive:
        raise LockedError(lock_message(manifest.name, holder))


def apply(path: str | Path, state_dir=None, executor: ExecutorChoice = ExecutorChoice(),
          progress=None, retry_failed: bool = False, on_planned=None,
          resubmit_unresolved: bool = False, root=None) -> ApplyReport:
    """Store the manifest's plan and run every experiment not done yet.

    Resumes whatever an earlier, interrupted apply left. With ``retry_failed``, experiments
    that failed for good get new attempts. ``executor`` says where local simulation runs
    (worker processes here, or Ray). ``on_planned(counts, total)`` is called once the plan
    is stored, before anything runs (the CLI starts its progress bar there). Faults asked
    for by QRUN_FAULTS are injected into local runs (a rehearsal; see backends/faults.py).
    ``resubmit_unresolved`` (with ``retry_failed``) takes the user's word that submissions
    whose fate could not be looked up are not at the provider: their jobs are sent anew.

    ``path`` may also be a plan saved by `qrun plan --out` (known by its content): exactly
    its experiments run, or nothing does (StalePlanError) when the manifest, a circuit
    source or the stored state changed since it was made.
    """
    # The workers start, and import their SDKs, while the manifest is validated; a pool no
    # engine took (the apply stopped before it ran anything) is stopped on the way out.
    with executors.started_early(executor, path):
        return _apply(path, state_dir, executor, progress, retry_failed, on_planned,
                      resubmit_unresolved, root)


def _apply(path, state_dir, executor, progress, retry_failed, on_planned, resubmit_unresolved,
           root) -> ApplyReport:
    saved = planfile.read(path) if planfile.is_plan_file(path) else None
    if saved is not None and (retry_failed or resubmit_unresolved):
        raise QrunError(f"{path} is a saved plan, made for `qrun apply`; `qrun retry` takes the "
                        "manifest")
    manifest = validate(saved.manifest_file() if saved else path, root)
    run_options = RunOptions(executor=executor, faults=faults.from_env(),
                             silence_limit=silence_limit_from_env())
    db_path = state_path(manifest, state_dir)
    if saved is not None and not (state_dir or os.environ.get("QRUN_STATE_DIR")):
        db_path = saved.state_path  # where the plan read the state, unless told otherwise
    refuse_if_locked(manifest, db_path)
    if saved is not None:
        check_saved_plan(saved, manifest, db_path)  # before anything is written
    git = git_state(manifest.path, [manifest.folder / c.program.origin
                                    for c in manifest.circuits.values()])
    store = Store.open(db_path)
    command = "retry" if retry_failed else "apply"
    try:
        store.acquire_lock(manifest.name, command)
        try:
            if saved is not None:  # again under the lock: no apply slipped in meanwhile
                _refuse_changed_state(saved, store.state_digest(), store)
            if resubmit_unresolved:
                store.forget_unresolved(store.latest_plan_apply())
            report = _apply_locked(store, manifest, git, command, run_options, progress,
                                   retry_failed, on_planned)
        except BaseException:
            _quietly(store.release_lock, manifest.name)
            raise
        store.release_lock(manifest.name)
        return report
    finally:
        store.close()


def check_saved_plan(saved: planfile.SavedPlan, manifest: Manifest, db_path: Path) -> None:
    """Refuse (StalePlanError, saying why) a saved plan that is not what apply would run now:
    another campaign's, or made before the manifest, a circuit source or the stored state
    changed. Reads only."""
    rerun = f"run `qrun plan {saved.manifest_file()} --out {saved.path}` again and review it"
    if manifest.name != saved.campaign:
        raise StalePlanError(f"{saved.path} is a plan of campaign {saved.campaign}, but "
                             f"{manifest.path} is campaign {manifest.name}; nothing was run")
    if manifest.sha256 != saved.manifest_sha256:
        raise StalePlanError(f"{manifest.path} changed since the plan {saved.path} was made "
                             f"(sha256 {saved.manifest_sha256[:12]} then, {manifest.sha256[:12]} "
                             f"now); nothing was run: {rerun}")
    store = Store.open(db_path, readonly=True) if db_path.exists() else None
    try:
        stored_campaign = store.meta("campaign") if store else None
        if stored_campaign not in (None, saved.campaign):
            raise StalePlanError(f"{db_path} holds campaign {stored_campaign}, not the plan's "
                                 f"{saved.campaign}; nothing was run")
        _refuse_changed_state(saved, store.state_digest() if store else state_digest(None), store)
        diff, _ = _plan_diff(manifest, store, 0, keep_run_keys=False)
    finally:
        if store:
            store.close()
    if (diff.keys_sha256, diff.run_keys_sha256) != (saved.keys_sha256, saved.run_keys_sha256):
        raise StalePlanError(f"the experiments of {manifest.path} are not those of the plan "
                             f"{saved.path} any more (a circuit source changed?); nothing was "
                             f"run: {rerun}")


def _refuse_changed_state(saved: planfile.SavedPlan, digest: str, store: Store | None) -> None:
    if digest == saved.state_sha256:
        return
    if store is None:
        raise StalePlanError(f"the state {saved.state_path} the plan {saved.path} was made against "
                             f"is gone; nothing was run: plan again with `qrun plan "
                             f"{saved.manifest_file()} --out {saved.path}` and review it")
    last_plan = store.latest_plan_apply()
    latest = store.apply_info(last_plan) if last_plan else None
    since = ""
    if latest:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(latest["started_at"]))
        since = f" (the last was {latest['command']} #{latest['id']}, {when}, " \
                f"{latest['outcome'] or 'running'})"
    raise StalePlanError(f"the state {saved.state_path} changed since the plan {saved.path} was "
                         f"made{since}; nothing was run: plan again with `qrun plan "
                         f"{saved.manifest_file()} --out {saved.path}` and review it")


def _quietly(closing_write, *args) -> None:
    """A closing write (outcome, lock) after an error. It most likely fails for the same
    reason (a full disk), and then must not hide the first error. A lock left behind names
    a process that is gone: the next apply takes it over."""
    try:
        closing_write(*args)
    except StateError:
        pass


def store_plan(store: Store, manifest: Manifest, apply_id: int):
    """Stream the manifest's experiments into the store and cut jobs for what must run."""
    declared: dict = {}  # backend -> what its device said one job may carry (None: not read)
    stored: dict = {}  # backend -> what it said at an earlier apply

    def limits_of(backend: str):
        declared[backend] = declared_limits(manifest, backend)
        if declared[backend] is None:  # not asked, or no answer: what plan would use
            stored[backend] = _stored_declared_limits(store, manifest, backend)
        return planner.job_limits(manifest, backend, declared[backend] or stored[backend])

    planned = store.save_plan(
        apply_id,
        programs=[c.program for c in manifest.circuits.values()],
        experiments=planner.experiments(manifest),
        backend_configs={name: b.config for name, b in manifest.backends.items()},
        cut_jobs=lambda rows: planner.cut_jobs(rows, limits_of),
        seed_of=lambda job_key: planner.derived_seed(manifest.seed, job_key),
        backend_identities={planner.backend_digest(b): b.identity for b in manifest.backends.values()},
    )
    for backend, limits in declared.items():  # kept for `plan`, which stays off the network
        if limits is not None:
            store.set_meta(_declared_key(manifest, backend), json.dumps(dataclasses.asdict(limits)))
    return planned


def _declared_key(manifest: Manifest, backend: str) -> str:
    return "declared_limits:" + planner.canonical_json(manifest.backends[backend].identity)


def _stored_declared_limits(store: Store | None, manifest: Manifest, backend: str):
    """What the backend's device said one job may carry, as the last apply read it."""
    text = store.meta(_declared_key(manifest, backend)) if store else None
    return Limits(**json.loads(text)) if text else None


def declared_limits(manifest: Manifest, backend: str):
    """What a cloud device itself says one job may carry, where its adapter can tell
    (``job_limits``: a Braket device's program-set size, from GetDevice); None elsewhere,
    and None when the device gives no answer within the silence limit.

    Asked only for backends with jobs to cut, inside the plan's transaction. A device that
    cannot be read is cut as `plan` would cut it (what an earlier apply read, or the
    provider's guess): the engine then meets the same silent or failing service, and
    reports and bounds it as it does every call, the jobs left for the next apply."""
    from .providers import PROVIDERS, remote_adapter_for

    spec = manifest.backends[backend]
    if PROVIDERS[spec.provider].local:
        return None
    adapter = remote_adapter_for(spec.provider, spec.device, spec.options, spec.credentials)
    ask = getattr(adapter, "job_limits", None)
    return None if ask is None else _answer_within(ask, silence_limit_from_env())


def _answer_within(ask, seconds: float):
    """``ask()``'s answer, or None if it fails or gives none within ``seconds`` (the call
    goes on in a daemon thread, bounded by the adapter's own policy, and is forgotten)."""
    answer: list = []

    def asking() -> None:
        try:
            answer.append(ask())
        except Exception:  # the engine's own calls will meet and report the same failure
            pass

    thread = threading.Thread(target=asking, name="qrun-device-limits", daemon=True)
    thread.start()
    thread.join(seconds)
    return answer[0] if answer else None


def _apply_locked(store: Store, manifest: Manifest, git, command, options: RunOptions, progress,
                  retry_failed, on_planned) -> ApplyReport:
    store.set_meta("campaign", manifest.name)
    apply_id = store.begin_apply(command, str(manifest.path), manifest.sha256, git.commit,
                                 git.dirty, __version__)
    run = RunOutcome()
    outcome = "interrupted"
    try:
        if retry_failed:  # before the plan is stored, so that it cuts jobs for split-off slices
            store.reset_failed(apply_id)
        planned = store_plan(store, manifest, apply_id)
        spending = None
        if manifest.budget is not None:  # a campaign without one pays no query for it
            estimate = costs.CostEstimate.of(manifest, costs.work_by_backend(store.unsent_work(apply_id)),
                                             costs.work_by_backend(store.sent_work()))
            costs.check_budget(manifest.budget, estimate)  # before anything is sent
            spending = costs.Spending(manifest.budget, estimate)
        if on_planned:
            counts = store.state_counts(apply_id)
            on_planned(planned, sum(counts.values()), counts[DONE])
        run = Engine(store, manifest, apply_id, executor=options.executor, faults=options.faults,
                     progress=progress, silence_limit=options.silence_limit,
                     spending=spending).run()
        state = store.state_counts(apply_id)
        outcome = "interrupted" if run.interrupted else \
            "done" if state[PENDING] == 0 and state[FAILED] == 0 else "failed"
        exports = [] if run.interrupted else _write_exports(store, manifest, apply_id)
    except KeyboardInterrupt:
        run.interrupted = True
        state, exports, planned = store.state_counts(apply_id), [], None
    except BaseException:
        _quietly(store.finish_apply, apply_id, "error")  # the run stopped on an error
        raise
    store.finish_apply(apply_id, outcome)
    return ApplyReport(campaign=manifest.name, state_path=store.path, planned=planned, run=run,
                       state=state, failures=store.failures(apply_id, limit=FAILURES_SHOWN),
                       failure_causes=store.failure_causes(apply_id),
                       pending_causes=store.pending_causes(apply_id), exports=exports,
                       backends=store.backend_summary(apply_id),
                       injected_faults=options.faults.describe() if options.faults.active else None)


def _write_exports(store: Store, manifest: Manifest, apply_id: int) -> list:
    written = []
    for spec in manifest.exports:
        written.append((spec.path, _write_export(store, manifest, apply_id, spec.format,
                                                 spec.path, spec.layout)))
    return written


# ---------------------------------------------------------------- status, export, unlock

def status(path: str | Path, state_dir=None, root=None) -> dict:
    """The campaign's state: experiment counts, per-backend breakdown, jobs, last apply.

    The lock, backends, failures, causes and remote jobs are the store's named rows
    (read by attribute, or by name as mappings; ``as_dict()`` for JSON)."""
    manifest = validate(path, root)
    db_path = state_path(manifest, state_dir)
    report = {"campaign": manifest.name, "state_path": str(db_path), "applied": False,
              "experiments": None, "backends": [], "jobs": {}, "last_apply": None,
              "manifest_changed": None, "lock": None, "failures": [], "failure_causes": [],
              "pending_causes": [], "remote_jobs": [], "spend": None}
    apply_id = None
    if db_path.exists():
        with Store.open(db_path, readonly=True) as store:
            report["lock"] = store.lock_holder(manifest.name)
            apply_id = store.latest_plan_apply()
            if apply_id is not None:
                counts = store.state_counts(apply_id)
                last = store.apply_info(apply_id)
                report.update(
                    applied=True,
                    experiments={"total": sum(counts.values()), "done": counts[DONE],
                                 "failed": counts[FAILED], "pending": counts[PENDING]},
                    backends=store.backend_summary(apply_id), jobs=store.job_counts(apply_id),
                    last_apply=last,
                    manifest_changed=last is not None and last["manifest_sha256"] != manifest.sha256,
                    failures=store.failures(apply_id, limit=FAILURES_SHOWN),
                    failure_causes=store.failure_causes(apply_id),
                    pending_causes=store.pending_causes(apply_id),
                    remote_jobs=store.remote_jobs(apply_id),
                    spend=_spend(manifest, store.sent_work(), store.reported_usage()))
    if apply_id is None:  # never applied: everything the manifest describes is pending
        total = sum(1 for _ in planner.experiments(manifest))
        report["experiments"] = {"total": total, "done": 0, "failed": 0, "pending": total}
    return report


def _spend(manifest: Manifest, sent, reported=()) -> dict:
    """What was sent, per backend, priced as the manifest prices it now (costs.py), beside
    what the providers themselves reported of the jobs that finished (their usage, priced
    the same way, and the calibrations they ran under)."""
    estimate = costs.CostEstimate.of(manifest, {}, costs.work_by_backend(sent))
    by_backend = {usage.backend: usage for usage in reported}
    rows = []
    for row in estimate.backends.values():
        if not row.spent_work.tasks:
            continue
        usage = by_backend.get(row.backend)
        rows.append({"backend": row.backend, "tasks": row.spent_work.tasks,
                     "shots": row.spent_work.shots, "cost": row.spent,
                     "reported": _reported(manifest, row.backend, usage) if usage else None})
    return {"currency": estimate.currency, "total": estimate.spent, "backends": rows}


def _reported(manifest: Manifest, backend: str, usage) -> dict:
    """A backend's reported usage, and its cost where the usage and the price both say."""
    price = costs.price_of(manifest.backends[backend]) if backend in manifest.backends else None
    return {**usage.as_dict(),
            "cost": price.cost_of_usage(usage.tasks, usage.shots, usage.seconds) if price else None}


def export(path: str | Path, output: str | Path, fmt: str | None = None, state_dir=None,
           root=None, layout: str = "wide") -> int:
    """Write the last applied plan's results; return the row count. ``layout`` "wide": one
    row per experiment; "long": one row per outcome of each completed experiment."""
    manifest = validate(path, root)
    fmt = exporter.format_for(str(output), fmt)
    exporter.check_layout(layout)
    with _plan_results(manifest, state_dir) as (store, apply_id):
        return _write_export(store, manifest, apply_id, fmt, output, layout)


def _write_export(store: Store, manifest: Manifest, apply_id: int, fmt: str, output, layout: str) -> int:
    """One export of the plan's results (or of the spend per backend) in a format and layout."""
    if layout == "spend":
        spend = _spend(manifest, store.sent_work(), store.reported_usage())
        return exporter.write_spend(_spend_records(manifest, spend), fmt, output)
    params = store.param_types(apply_id) if layout == "long" or fmt == "parquet" else {}
    return exporter.write(store.export_rows(apply_id), fmt, output, layout, params)


def _spend_records(manifest: Manifest, spend: dict) -> list[dict]:
    """status's spend, one flat record per backend (the export's spend layout)."""
    from .render import calibration_label

    records = []
    for row in spend["backends"]:
        spec = manifest.backends.get(row["backend"])
        reported = row["reported"] or {}
        calibrations = reported.get("calibrations") or []
        records.append({
            "backend": row["backend"], "provider": spec.provider if spec else None,
            "device": spec.device if spec else None, "currency": spend["currency"],
            "tasks_sent": row["tasks"], "shots_sent": row["shots"], "estimated_cost": row["cost"],
            "reported_jobs": reported.get("jobs"), "reported_tasks": reported.get("tasks"),
            "reported_shots": reported.get("shots"), "reported_seconds": reported.get("seconds"),
            "reported_cost": reported.get("cost"), "unsettled_jobs": reported.get("unsettled"),
            "unknown_for": reported.get("unknown_for") or None, "calibrations": len(calibrations),
            "latest_calibration": calibration_label(calibrations[-1]) if calibrations else None})
    return records


def results(path: str | Path, layout: str = "long", state_dir=None, root=None):
    """The last applied plan's results as a pandas DataFrame (needs ``qrun[pandas]``).

    ``layout`` "long" (default): one row per outcome of each completed experiment, with
    key, circuit, backend, provider, one column per swept parameter, shots, outcome, count,
    probability and completed_at; "wide": one row per experiment, as `export` writes it,
    its params spread into columns."""
    manifest = validate(path, root)
    if layout not in exporter.ROW_LAYOUTS:
        raise QrunError(f"results come in the wide or long layout, not {layout!r}; the spend per "
                        "backend is in `qrun status -o json` and `qrun export --layout spend`")
    with _plan_results(manifest, state_dir) as (store, apply_id):
        return exporter.frame(store.export_rows(apply_id), layout, store.param_types(apply_id))


@contextmanager
def _plan_results(manifest: Manifest, state_dir):
    """The campaign's store, read-only, and the apply whose plan its results belong to."""
    db_path = state_path(manifest, state_dir)
    if not db_path.exists():
        raise StateError(f"campaign {manifest.name} has no state at {db_path}; run qrun apply first")
    with Store.open(db_path, readonly=True) as store:
        apply_id = store.latest_plan_apply()
        if apply_id is None:
            raise StateError(f"campaign {manifest.name} has no applied plan; run qrun apply first")
        yield store, apply_id


# ---------------------------------------------------------------- diff

def diff(first: str, second: str, state_dir=None, root=None, alpha: float | None = None):
    """Compare two campaigns: experiments removed, added and changed, and the stored results
    of experiments on the same circuit, backend and sweep point (see qrun/diff.py).

    ``first`` and ``second`` are manifests (PATH), or manifests at a git revision
    (PATH@REV); ``second`` may also be @REV or a bare REV, meaning ``first``'s path at
    that revision. Each side's results come from its campaign's state database. ``root``
    applies to manifests on disk (a revision's files are read into a folder of their own).
    Returns a diff.DiffReport; its ``exit_code`` is the CLI's."""
    from . import diff as diffs

    alpha = diffs.ALPHA if alpha is None else alpha
    if not 0 < alpha < 1:
        raise QrunError(f"--alpha {alpha}: give a significance level between 0 and 1 (default {diffs.ALPHA})")
    side_a, side_b = diffs.parse_sides(first, second)
    with diffs.loaded(side_a, root) as a, diffs.loaded(side_b, root) as b:
        path_a, rows_a = _stored_rows(a, state_dir)
        path_b, rows_b = _stored_rows(b, state_dir)
        return diffs.build_report(a, b, rows_a, rows_b, (path_a, path_b), alpha)


def _stored_rows(side, state_dir) -> tuple[Path, dict]:
    """A diff side's stored export rows by experiment key (of whatever plan stored them)."""
    db_path = state_path(side.manifest, state_dir)
    if not db_path.exists():
        advice = (f"check out {side.side.revision} and run qrun apply" if side.side.revision
                  else "run qrun apply")
        raise StateError(f"{side.side.shown}: campaign {side.manifest.name} has no state at "
                         f"{db_path} ({advice} first: diff compares stored results)")
    rows: dict = {}
    with Store.open(db_path, readonly=True) as store:
        for batch in _batches((e.key for e in side.experiments), PLAN_BATCH):
            rows.update((row.key, row) for row in store.export_rows_of(batch))
    return db_path, rows


def cancel(path: str | Path, state_dir=None, root=None) -> dict:
    """Cancel the campaign's unfinished jobs: remote ones at their provider, then in the state.

    Their experiments are recorded as failed ("cancelled"); `qrun retry` runs them again. A
    job whose submission's fate is unknown is looked up by its tags first, so that what the
    provider holds is cancelled there too; one whose lookup fails is left as it is (and
    reported), since cancelling it only here could leave a paid job running unseen.
    """
    from .providers import PROVIDERS, remote_adapter_for

    manifest = validate(path, root)
    db_path = state_path(manifest, state_dir)
    if not db_path.exists():
        raise StateError(f"campaign {manifest.name} has no state at {db_path}; nothing to cancel")
    refuse_if_locked(manifest, db_path)
    cancelled = {"cancelled_remote": 0, "cancelled_local": 0}
    errors: list[str] = []
    with Store.open(db_path, create=False) as store:
        store.acquire_lock(manifest.name, "cancel")
        try:
            apply_id = store.latest_plan_apply()
            for job, attempt_id, handle in store.unfinished_jobs(apply_id) if apply_id else []:
                assert apply_id is not None  # jobs come only from an applied plan
                if PROVIDERS[job.provider].local:
                    cancelled["cancelled_local"] += 1
                    store.cancel_job(apply_id, job.id, attempt_id, "cancelled by qrun cancel")
                    continue
                config = job.backend_config
                try:
                    adapter = remote_adapter_for(config["provider"], config["device"],
                                                 config["options"], config.get("credentials"))
                    handle = handle or _find_by_tags(store, adapter, job.id)
                    if handle:
                        _cancel_at_provider(adapter, handle)
                except Exception as exc:  # keep going: report what could not be cancelled
                    errors.append(f"job {job.id} ({handle or 'not yet known'}): {exc}")
                    continue
                cancelled["cancelled_remote" if handle else "cancelled_local"] += 1
                store.cancel_job(apply_id, job.id, attempt_id, "cancelled by qrun cancel")
        finally:
            store.release_lock(manifest.name)
    return {**cancelled, "errors": errors}


def _find_by_tags(store: Store, adapter, job_id: int) -> str | None:
    """The handle of the job's submission whose fate was unknown, looked up by its tags;
    the tags the provider answers it does not hold are recorded so."""
    absent = []
    try:
        for attempt_id, tag in store.unresolved_tags(job_id):
            handle = adapter.find(tag)
            if handle is not None:
                return handle
            absent.append(attempt_id)
    except Exception as exc:
        raise QrunError(f"could not look its submission up by tag ({exc}); left as it is") from None
    finally:
        store.mark_tags_absent(absent)
    return None


def _cancel_at_provider(adapter, handle: str) -> None:
    from .providers.base import JobNotFound

    try:
        adapter.cancel(handle)
    except JobNotFound:
        pass  # the provider holds nothing under it any more: nothing to stop


@dataclass(frozen=True)
class ReportWritten:
    path: str
    bytes: int
    experiments: int  # of the plan reported
    histograms: int  # drawn one by one
    left_out: list  # what the page says it left out


def report(path: str | Path, output: str | Path, state_dir=None, root=None) -> ReportWritten:
    """Write the campaign as one self-contained HTML page (qrun/report.py): summary and
    provenance, histograms, sweeps, backends compared, failures. Read-only."""
    from . import report as reporting

    manifest = validate(path, root)
    with _plan_results(manifest, state_dir) as (store, apply_id):
        facts = reporting.Facts(
            campaign=manifest.name, state_path=str(state_path(manifest, state_dir)),
            qrun_version=__version__,
            states=store.state_counts(apply_id), last_apply=store.apply_info(apply_id),
            manifest_sha256=manifest.sha256, backends=store.backend_summary(apply_id),
            provenance=store.backend_provenance(apply_id),
            remote_jobs=store.remote_jobs(apply_id, limit=reporting.REMOTE_IDS_LISTED),
            remote_job_count=store.remote_job_count(apply_id),
            failure_causes=store.failure_causes(apply_id),
            failures=store.failures(apply_id, limit=reporting.FAILURES_LISTED),
            pending_causes=store.pending_causes(apply_id))
        built = reporting.build(facts, store.result_points(apply_id),
                                store.leading_outcomes(apply_id, reporting.LEADING_OUTCOMES))
    size = reporting.write(reporting.render(built), output)
    return ReportWritten(path=str(output), bytes=size, experiments=sum(facts.states.values()),
                         histograms=len(built.histograms), left_out=built.left_out)


def unlock(path: str | Path, state_dir=None, force: bool = False, root=None) -> LockHolder | None:
    """Break the campaign lock if its holder is gone (or with ``force``)."""
    manifest = validate(path, root)
    db_path = state_path(manifest, state_dir)
    if not db_path.exists():
        return None
    if not force:
        refuse_if_locked(manifest, db_path)
    with Store.open(db_path, create=False) as store:
        return store.break_lock(manifest.name, force=force)


def providers() -> dict:
    """Every registered provider (qrun's and plugins'), and the plugins that failed to load."""
    from .providers import PROVIDERS

    rows = [{"id": spec.id, "kind": "local" if spec.local else "cloud",
             "formats": list(spec.formats), "devices": _devices_shown(spec),
             "package": spec.distribution, "fake": spec.fake is not None}
            for spec in PROVIDERS.values()]
    return {"providers": rows, "problems": PROVIDERS.problems}


def _devices_shown(spec) -> str:
    if spec.devices is not None:
        return ", ".join(spec.devices)
    if spec.device_pattern is not None:
        return spec.device_hint or f"matching {spec.device_pattern}"
    return "listed by its SDK"


def manifest_schema(builtin_only: bool = False) -> str:
    """The manifest's JSON Schema as text, listing every registered provider (or, with
    ``builtin_only``, qrun's own: the checked-in schemas/qrun-v1.schema.json)."""
    from .providers import PROVIDERS

    ids = [spec.id for spec in PROVIDERS.builtin()] if builtin_only else None
    return manifests.schema_text(ids)
