"""A campaign of 100,000 tiny experiments through the CLI: apply, kill and resume, no-op
re-apply, status, export; wall time and, above all, peak memory.

One OpenQASM 3 circuit (1 qubit, `rx(theta)`, measured), `theta` swept over N values on
`qiskit.aer`, 10 shots each: N experiments (default 100,000) in jobs of qrun's default size
(25 for a local simulator, so 4,000 jobs). Every command is a fresh `qrun` subprocess, as
a user runs it, on one state folder. Measured:

  (a) `qrun apply` of the whole campaign on a fresh state folder: wall time,
      experiments/s, the time until the plan is stored (start of the command to the plan's
      commit, seen from outside by polling the database: interpreter start, imports,
      validation, expansion and the store, as a user waits for them), then the run rate.
      Then the same campaign again on a new state folder, SIGKILLed (the whole process
      group, workers included) once about half the results are in, and resumed by a second
      `qrun apply`: the final count of results must be N, and no job may have run twice.
  (b) a no-op `qrun apply` of the finished campaign (nothing to run: validate, plan, store,
      find nothing ready).
  (c) `qrun status M` and `qrun status M -o json`.
  (d) `qrun export M -o FILE -f jsonl` and `-f csv`: wall, file size, rows (must be N).

Memory, measured for every command:
  - coordinator: the `qrun` process's own peak RSS, from the kernel's high-water mark
    (ru_maxrss handed back by wait4; exact, never missed between samples);
  - workers: qrun's process pool (a forkserver and its workers, which the coordinator never
    reaps, so rusage cannot see them) sampled with psutil every 0.1 s: the largest peak RSS
    of any one child process, and the peak of the whole tree's PSS (proportional set size:
    pages shared between the forkserver and its forked workers count once), coordinator
    included, sampled every second.
The same commands run first on a campaign of --small experiments (default 10,000; 0 skips
it), and the growth ratios (peak at N / peak at --small) show whether memory grows with the
campaign: a bounded command stays near 1, since Python and Qiskit alone take ~100 MB.

Targets (figure / target is printed; below 1 means met):
  - peak RSS <= 300 MB for each command's coordinator and for each worker: the budget of
    bench/plan_scale.py, room for ~100 MB of Python + Qiskit and a bounded working set;
  - memory growth (peak at N / peak at --small) <= 1.2 for each command: ten times the
    experiments may cost at most a fifth more, far less than the 10x a list of the
    campaign would cost;
  - plan stored <= 5 s after `qrun apply` starts, for 100,000 experiments (plan_scale's
    target; here imports and start-up included);
  - the run rate at N at least 0.8x the rate at --small (per-experiment time growth
    <= 1.25): no per-job cost that grows with the campaign (a query over all jobs);
  - no-op re-apply <= 5 s: re-planning 100,000 experiments and finding nothing to do
    should cost about one plan + store;
  - `qrun status` (either form) <= 2 s: a person waits for it; `qrun plan`'s target;
  - `qrun export` <= 10 s for 100,000 rows (>= 10,000 rows/s), per format.
At another size than 100,000, time targets keep 1 s for start-up and scale the rest.

Prints a summary, then ONE JSON line (last) with every figure, its target and ratio.

    .venv/bin/python bench/scale.py                                  # 100,000; ~15-20 min on 2 cores
    .venv/bin/python bench/scale.py --experiments 20000 --small 2000 # quick check, ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)

MEMORY_TARGET_MB = 300.0
GROWTH_TARGET = 1.2
RATE_GROWTH_TARGET = 1.25
FULL = 100_000  # time targets are stated for this many experiments

CIRCUIT = """\
// One qubit, one swept rotation: as small as a circuit gets, so qrun's own costs show.
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[1] q;
bit[1] c;
rx(theta) q[0];
c[0] = measure q[0];
"""


def write_campaign(folder: Path, name: str, experiments: int, shots: int) -> Path:
    return _common.sweep_campaign(folder, name, experiments, shots, "rx", CIRCUIT)


# ---------------------------------------------------------------- one watched command

@dataclass
class Run:
    wall_s: float
    returncode: int
    coordinator_mb: float  # kernel high-water mark of the qrun process itself
    coordinator_sampled_mb: float  # the same, sampled (a check on the above)
    child_mb: float = 0.0  # largest peak RSS of any one descendant (forkserver, workers)
    children: int = 0  # descendants seen
    tree_pss_mb: float = 0.0  # peak of the sum of PSS over the whole tree (sampled each second)
    marks: dict = field(default_factory=dict)  # name -> seconds after start


class Database:
    """Read-only peeks into a campaign's state while qrun runs (WAL: readers never block it)."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = None

    def scalar(self, sql: str):
        if self.conn is None:
            if not self.path.exists():
                return None
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5,
                                        isolation_level=None, check_same_thread=False)
        try:
            return self.conn.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return None

    def results(self) -> int:
        # max(rowid): results are only ever inserted or updated in place, so this is the
        # count, without scanning the table on every peek.
        return self.scalar("SELECT max(rowid) FROM results") or 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def watched(cmd: list[str], env: dict, cwd: Path, stdout: Path | None = None,
            db: Database | None = None, kill_at_results: int | None = None) -> Run:
    """Run one command in its own process group, sampling its tree's memory meanwhile.

    The main thread blocks in wait4, so the wall time is exact; a sampler thread watches.
    With ``db``, it notes when the plan is stored (the first job row becomes visible); with
    ``kill_at_results`` too, it SIGKILLs the whole group once that many results are stored.
    """
    with (open(stdout, "wb") if stdout else tempfile.TemporaryFile()) as out, \
            tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err,
                                   start_new_session=True)
        sampler = Sampler(process.pid, started, db, kill_at_results)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop()
        returncode = os.waitstatus_to_exitcode(status)
        if "killed" not in sampler.marks and returncode != 0:
            err.seek(0)
            detail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"command failed with exit {returncode}: {' '.join(cmd)}\n{detail}")
    _reap_group(process.pid)
    mb = 1024 * 1024
    return Run(wall_s=wall, returncode=returncode, coordinator_mb=usage.ru_maxrss / 1024,
               coordinator_sampled_mb=sampler.coordinator_peak / mb,
               child_mb=max(sampler.child_peaks.values(), default=0) / mb,
               children=len(sampler.child_peaks), tree_pss_mb=sampler.tree_pss / mb,
               marks=sampler.marks)


class Sampler(threading.Thread):
    """Peak RSS of the command and of each descendant every 0.1 s, the tree's PSS every
    second; the database's progress when asked."""

    def __init__(self, pid: int, started: float, db: Database | None, kill_at: int | None):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.pid, self.started, self.db, self.kill_at = pid, started, db, kill_at
        self.coordinator_peak = self.tree_pss = 0
        self.child_peaks: dict = {}  # (pid, create time) -> peak RSS seen
        self.marks: dict = {}
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        try:
            coordinator = self.psutil.Process(self.pid)
        except self.psutil.Error:
            return
        next_pss = 0.0
        while not self._stopping.is_set():
            now = time.perf_counter() - self.started
            tree = self._sample(coordinator)
            if now >= next_pss:
                self.tree_pss = max(self.tree_pss, _pss([coordinator, *tree]))
                next_pss = now + 1.0
            if self.db is not None:
                self._watch_database(now)
            self._stopping.wait(0.1)

    def _sample(self, coordinator) -> list:
        try:
            self.coordinator_peak = max(self.coordinator_peak, coordinator.memory_info().rss)
            tree = coordinator.children(recursive=True)
        except self.psutil.Error:
            return []
        for child in tree:
            try:
                key = (child.pid, child.create_time())
                self.child_peaks[key] = max(self.child_peaks.get(key, 0), child.memory_info().rss)
            except self.psutil.Error:
                pass
        return tree

    def _watch_database(self, now: float) -> None:
        if "planned" not in self.marks and (self.db.scalar("SELECT max(id) FROM jobs") or 0) > 0:
            self.marks["planned"] = now
        if self.kill_at and "killed" not in self.marks and self.db.results() >= self.kill_at:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # coordinator and workers at once
            except ProcessLookupError:  # it ended just now
                return
            self.marks["killed"] = now


def _pss(processes) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except Exception:  # gone meanwhile, or no PSS on this system
            pass
    return total


def _reap_group(pgid: int) -> None:
    """Workers outliving a killed coordinator would skew the next command: end them."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- the campaign's phases

def run_campaign(label: str, root: Path, env: dict, experiments: int, args) -> dict:
    """Everything at one size; returns its figures."""
    qrun = _common.qrun_command()
    folder = root / label
    manifest = write_campaign(folder, f"scale-{label}", experiments, args.shots)
    state = folder / "state"
    db = Database(state / f"scale-{label}.sqlite")
    workers = ["-j", str(args.workers)] if args.workers else []
    apply = qrun + ["apply", str(manifest), "--no-progress", "--state-dir", str(state)] + workers
    figures: dict = {"experiments": experiments}
    print(f"[{label}] {experiments:,} experiments, {args.shots} shots each, in {folder}")

    # (a) the whole campaign in one apply
    run = watched(apply, env, root, db=db)
    db.close()
    done = _count(db.path, "SELECT count(*) FROM results")
    if done != experiments:
        raise SystemExit(f"[{label}] apply stored {done} results, expected {experiments}")
    planned = run.marks.get("planned", run.wall_s)
    figures.update(
        apply_s=run.wall_s, apply_rate=experiments / run.wall_s, plan_stored_s=planned,
        plan_store_rate=experiments / planned, run_s=run.wall_s - planned,
        run_rate=experiments / (run.wall_s - planned), run_ms_per_experiment=
        1000 * (run.wall_s - planned) / experiments, **_memory("apply", run))
    print(f"  apply: {run.wall_s:.1f} s ({figures['apply_rate']:.0f} experiments/s); plan stored "
          f"after {planned:.2f} s ({figures['plan_store_rate']:.0f}/s), then "
          f"{figures['run_rate']:.0f} experiments/s; {_memory_line(run)}")

    # (b) a no-op re-apply of the finished campaign
    attempts_before = _count(db.path, "SELECT count(*) FROM attempts")
    runs = [watched(apply, env, root) for _ in range(args.repeats)]
    figures.update(_summary("noop", runs))
    if _count(db.path, "SELECT count(*) FROM attempts") != attempts_before:
        raise SystemExit(f"[{label}] the no-op re-apply ran something")
    print(f"  no-op re-apply: {_runs_line(runs)}")

    # (c) status, as a table and as JSON
    runs = [watched(qrun + ["status", str(manifest), "--state-dir", str(state)], env, root)
            for _ in range(args.repeats)]
    figures.update(_summary("status", runs))
    print(f"  qrun status: {_runs_line(runs)}")
    report_path = folder / "status.json"
    runs = [watched(qrun + ["status", str(manifest), "--state-dir", str(state), "-o", "json"],
                    env, root, stdout=report_path) for _ in range(args.repeats)]
    report = json.loads(report_path.read_text())
    if report["experiments"] != {"total": experiments, "done": experiments, "failed": 0,
                                 "pending": 0}:
        raise SystemExit(f"[{label}] status reports {report['experiments']}")
    figures.update(_summary("status_json", runs))
    print(f"  qrun status -o json: {_runs_line(runs)}")

    # (d) export, both formats
    for fmt in ("jsonl", "csv"):
        target = folder / f"results.{fmt}"
        runs = [watched(qrun + ["export", str(manifest), "--state-dir", str(state), "-o",
                                str(target), "-f", fmt], env, root) for _ in range(args.repeats)]
        rows = _lines(target) - (1 if fmt == "csv" else 0)
        if rows != experiments:
            raise SystemExit(f"[{label}] export {fmt} wrote {rows} rows, expected {experiments}")
        size_mb = target.stat().st_size / 1e6
        figures.update(_summary(f"export_{fmt}", runs))
        figures[f"export_{fmt}_rows"] = rows
        figures[f"export_{fmt}_file_mb"] = size_mb
        figures[f"export_{fmt}_rows_per_s"] = rows / figures[f"export_{fmt}_s"]
        print(f"  qrun export -f {fmt}: {_runs_line(runs)}; {rows:,} rows, {size_mb:.1f} MB")
        target.unlink()

    # (a, continued) killed part-way, then resumed
    if args.kill_at and label == "large":
        figures.update(kill_and_resume(folder, env, root, experiments, args, qrun, workers))
    return figures


def kill_and_resume(folder: Path, env: dict, root: Path, experiments: int, args, qrun,
                    workers) -> dict:
    manifest = folder / "scale-large.yaml"
    state = folder / "state-killed"
    db = Database(state / "scale-large.sqlite")
    apply = qrun + ["apply", str(manifest), "--no-progress", "--state-dir", str(state)] + workers
    at = max(1, int(experiments * args.kill_at))
    killed = watched(apply, env, root, db=db, kill_at_results=at)
    db.close()
    if "killed" not in killed.marks:
        raise SystemExit("the apply finished before the kill: raise --experiments")
    at_kill = _count(db.path, "SELECT count(*) FROM results")
    resumed = watched(apply, env, root)
    done = _count(db.path, "SELECT count(*) FROM results")
    twice = _count(db.path, "SELECT count(*) FROM (SELECT job_id FROM attempts WHERE "
                            "state='done' GROUP BY job_id HAVING count(*) > 1)")
    interrupted = _count(db.path, "SELECT count(*) FROM attempts WHERE state='interrupted'")
    if done != experiments or twice:
        raise SystemExit(f"resume: {done} results (expected {experiments}), {twice} jobs run twice")
    print(f"  killed (SIGKILL to the process group) at {killed.marks['killed']:.1f} s with "
          f"{at_kill:,} results stored; {_memory_line(killed)}")
    print(f"  resumed: {resumed.wall_s:.1f} s for the other {experiments - at_kill:,} "
          f"({interrupted} interrupted jobs run again; no job ran twice); "
          f"{_memory_line(resumed)}; results: {done:,}")
    return {"killed_at_s": killed.marks["killed"], "results_at_kill": at_kill,
            "resume_s": resumed.wall_s,
            "resume_rate": (experiments - at_kill) / resumed.wall_s,
            "results_after_resume": done, "jobs_run_twice": twice,
            "interrupted_jobs_rerun": interrupted,
            **_memory("killed", killed), **_memory("resume", resumed)}


def _memory(name: str, run: Run) -> dict:
    return {f"{name}_peak_mb": run.coordinator_mb,
            f"{name}_peak_sampled_mb": run.coordinator_sampled_mb,
            f"{name}_child_peak_mb": run.child_mb, f"{name}_children": run.children,
            f"{name}_tree_pss_mb": run.tree_pss_mb}


def _memory_line(run: Run) -> str:
    line = f"coordinator peak {run.coordinator_mb:.0f} MB"
    if run.children:
        line += (f", largest of {run.children} child processes {run.child_mb:.0f} MB, "
                 f"whole tree (PSS) {run.tree_pss_mb:.0f} MB")
    return line


def _summary(name: str, runs: list[Run]) -> dict:
    walls = [r.wall_s for r in runs]
    return {f"{name}_s": _common.median(walls), f"{name}_runs_s": walls,
            f"{name}_peak_mb": max(r.coordinator_mb for r in runs)}


def _runs_line(runs: list[Run]) -> str:
    walls = [r.wall_s for r in runs]
    return (f"median {_common.median(walls):.2f} s of {len(walls)} "
            f"({min(walls):.2f}-{max(walls):.2f}), peak {max(r.coordinator_mb for r in runs):.0f} MB")


def _count(path: Path, sql: str) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute(sql).fetchone()[0]


def _lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


# ---------------------------------------------------------------- targets

PEAKS = ("apply_peak_mb", "apply_child_peak_mb", "noop_peak_mb", "status_peak_mb",
         "status_json_peak_mb", "export_jsonl_peak_mb", "export_csv_peak_mb")


def targets(experiments: int, with_kill: bool) -> dict:
    """figure name -> target; times scale with the campaign's size."""
    scale = experiments / FULL
    found = {name: MEMORY_TARGET_MB for name in PEAKS}
    if with_kill:
        found.update(resume_peak_mb=MEMORY_TARGET_MB, resume_child_peak_mb=MEMORY_TARGET_MB)
    found.update(plan_stored_s=_scaled(5.0, scale), noop_s=_scaled(5.0, scale),
                 status_s=2.0, status_json_s=2.0, export_jsonl_s=_scaled(10.0, scale),
                 export_csv_s=_scaled(10.0, scale))
    return found


def _scaled(seconds: float, scale: float) -> float:
    """A target stated for 100,000 experiments, at another size: 1 s of start-up (Python,
    Qiskit for validation) stays, the rest scales with the campaign."""
    return round(1.0 + (seconds - 1.0) * scale, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=FULL, help="the campaign's size")
    parser.add_argument("--small", type=int, default=10_000,
                        help="a smaller campaign run first, for the growth ratios (0: none)")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="qrun apply -j (0: qrun's default)")
    parser.add_argument("--kill-at", type=float, default=0.5,
                        help="kill the second apply once this share of results is in (0: no kill)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each no-op apply, status and export (median time, max peak)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("scale")
    env = _common.clean_env(root)
    load_start = _common.load_average()
    origin = _common.qrun_origin(env, root)
    print(f"qrun from {origin['qrun_module']}; scratch {root}")
    # Untimed warm-up: byte code compiled into the scratch cache, Python and Qiskit in the
    # page cache, so the first measured command is not the only one paying for them.
    warm = write_campaign(root / "warm-up", "warm-up", 50, args.shots)
    _common.timed(_common.qrun_command() + ["apply", str(warm), "--no-progress", "--state-dir",
                                            str(root / "warm-up" / "state")], env, root)

    small = run_campaign("small", root, env, args.small, args) if args.small else None
    large = run_campaign("large", root, env, args.experiments, args)

    figures = {"benchmark": "scale", "experiments": args.experiments, "small": args.small or None,
               "shots": args.shots}
    figures.update({k: _round(v) for k, v in large.items() if k != "experiments"})
    wanted = targets(args.experiments, bool(args.kill_at))
    if small:
        for name in PEAKS:
            figures[f"{name}_small"] = _round(small[name])
            figures[f"{name}_growth"] = round(large[name] / small[name], 3)
            wanted[f"{name}_growth"] = GROWTH_TARGET
        figures["run_ms_per_experiment_small"] = _round(small["run_ms_per_experiment"])
        figures["run_ms_per_experiment_growth"] = round(
            large["run_ms_per_experiment"] / small["run_ms_per_experiment"], 3)
        wanted["run_ms_per_experiment_growth"] = RATE_GROWTH_TARGET
        figures["export_jsonl_s_per_row_growth"] = round(
            (large["export_jsonl_s"] / args.experiments) / (small["export_jsonl_s"] / args.small), 3)
    for name, target in wanted.items():
        figures[f"{name}_target"] = target
        figures[f"{name}_to_target"] = round(figures[name] / target, 3)
    missed = [name for name, target in wanted.items() if figures[name] > target]
    figures["targets_missed"] = missed
    figures["loadavg_start"] = load_start
    figures["loadavg_end"] = _common.load_average()
    figures.update(_common.machine())
    figures.update(origin)

    print("figure / target (ratio; <= 1 met):")
    for name, target in wanted.items():
        print(f"  {name:34} {figures[name]:>10} / {target:<8g} {figures[f'{name}_to_target']:>6}"
              f"  {'MISSED' if name in missed else 'met'}")
    _common.finish(root, figures, args.keep)


def _round(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


if __name__ == "__main__":
    main()
