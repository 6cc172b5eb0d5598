"""Helpers shared by the benchmarks: a scratch folder, a clean environment, timed commands.

Imported by the bench scripts from their own folder (Python puts a script's folder first on
sys.path), so every benchmark still runs with one command: `.venv/bin/python bench/NAME.py`.
Nothing here writes into the repository or $HOME: every file goes into one mkdtemp folder.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sweep_campaign(folder: Path, name: str, experiments: int, shots: int, circuit_name: str,
                   circuit: str) -> Path:
    """A campaign of one circuit swept over ``experiments`` angles theta on Aer (seed 11)."""
    (folder / "circuits").mkdir(parents=True, exist_ok=True)
    (folder / "circuits" / f"{circuit_name}.qasm").write_text(circuit)
    manifest = folder / f"{name}.yaml"
    manifest.write_text("\n".join([
        "apiVersion: qrun/v1",
        "kind: Campaign",
        f"metadata: {{name: {name}}}",
        "spec:",
        f"  shots: {shots}",
        "  seed: 11",
        "  circuits:",
        f"    - name: {circuit_name}",
        f"      source: circuits/{circuit_name}.qasm",
        f"      sweep: {{theta: {{linspace: [0, 3.14159, {experiments}]}}}}",
        "  backends:",
        "    - {name: aer, provider: qiskit.aer}",
    ]) + "\n")
    return manifest


def scratch(prefix: str) -> Path:
    """A fresh temporary folder with home/, mpl/, xdg/, cache/ inside for the subprocesses."""
    root = Path(tempfile.mkdtemp(prefix=f"qrun-bench-{prefix}-"))
    for name in ("home", "mpl", "xdg", "cache"):
        (root / name).mkdir()
    return root


def clean_env(root: Path, **extra: str) -> dict:
    """The environment for subprocesses: SDK caches and config under ``root``, not $HOME."""
    env = dict(os.environ)
    # Byte-code caches go under root too (PYTHONPYCACHEPREFIX), so qrun's own modules are
    # compiled once per benchmark, as they would be once per install, not on every command,
    # and never written into the repository. The warm-up run of each benchmark fills it.
    env.update(HOME=str(root / "home"), MPLCONFIGDIR=str(root / "mpl"),
               XDG_DATA_HOME=str(root / "xdg"), XDG_CACHE_HOME=str(root / "cache"),
               PYTHONPYCACHEPREFIX=str(root / "pycache"))
    for name in ("QRUN_STATE_DIR", "QRUN_DEBUG", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env.update(extra)
    return env


def qrun_command() -> list[str]:
    """The `qrun` console script installed next to this Python, else `python -m qrun`."""
    script = Path(sys.executable).parent / "qrun"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "qrun"]


def timed(cmd: list[str], env: dict, cwd: Path, check: bool = True) -> float:
    """Wall time in seconds of one command, from fork to exit."""
    return measured(cmd, env, cwd, check).wall_s


@dataclass
class Measured:
    wall_s: float  # from fork to exit
    peak_mb: float  # peak RSS of the command's own process (not of its children)
    cpu_s: float | None = None  # user + system CPU of the whole process tree (when sampled)


def measured(cmd: list[str], env: dict, cwd: Path, check: bool = True,
             stdout: Path | None = None, tree_cpu: bool = False) -> Measured:
    """Run one command and measure it.

    Output goes to files (no pipe to drain; standard output to ``stdout`` when given). The
    child is reaped with os.wait4, which hands back that child's own resource usage. With
    ``tree_cpu``, the CPU time of its descendants (qrun's worker pool sits under a
    forkserver, which rusage never reports to us) is sampled with psutil every 0.2 s: each
    process counts with the last figure seen before it ended. CPU time is much less
    sensitive than wall time to other work on a busy machine.
    """
    last_cpu: dict = {}
    with (open(stdout, "wb") if stdout else tempfile.TemporaryFile()) as out, \
            tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        if tree_cpu:
            import psutil

            try:
                parent = psutil.Process(process.pid)
            except psutil.NoSuchProcess:
                parent = None
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    descendants = parent.children(recursive=True) if parent else []
                except psutil.NoSuchProcess:
                    descendants = []
                for child in descendants:
                    try:
                        times = child.cpu_times()
                        last_cpu[(child.pid, child.create_time())] = times.user + times.system
                    except psutil.Error:
                        pass
                time.sleep(0.2)
        else:
            _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if check and process.returncode != 0:
            err.seek(0)
            detail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"command failed with exit {process.returncode}: {' '.join(cmd)}\n{detail}")
    cpu = usage.ru_utime + usage.ru_stime + sum(last_cpu.values()) if tree_cpu else None
    return Measured(elapsed, usage.ru_maxrss / 1024, cpu)  # Linux reports ru_maxrss in KB


def stored_results(db: Path) -> int:
    """Results a qrun state database holds: a benchmark checks every experiment ran."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM results").fetchone()[0]


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def median(values: list[float]) -> float:
    return statistics.median(values)


def alternating_rounds(qrun_side, peer_side, repeats: int, budget: float, after_round,
                       stop_hint: str | None = None) -> None:
    """Run both sides for up to ``repeats`` rounds, each side called with the round number.

    Who goes first alternates (qrun, peer, peer, qrun, ...) so that drift in the machine's
    load hits both alike. Another round starts only if, at the pace so far, it would end
    within ``budget`` seconds; ``stop_hint`` (if given) is printed when that stops the
    rounds early. ``after_round(round_)`` reports each round.
    """
    started = time.perf_counter()
    for round_ in range(max(1, repeats)):
        spent = time.perf_counter() - started
        if round_ and spent + spent / round_ > budget:
            if stop_hint:
                print(f"  (stopping after {round_} round(s): another would pass the "
                      f"{budget:.0f} s budget; {stop_hint})")
            break
        sides = (qrun_side, peer_side) if round_ % 2 == 0 else (peer_side, qrun_side)
        for side in sides:
            side(round_)
        after_round(round_)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"nproc": cores, "cpu": cpu, "python": platform.python_version()}


def finish(root: Path, figures: dict, keep: bool) -> None:
    """Remove the scratch folder (unless kept) and print the figures as the LAST line."""
    if keep:
        print(f"scratch files kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=False))


def qrun_origin(env: dict, cwd: Path) -> dict:
    """Which qrun the subprocesses import, and the repository's commit.

    Run with PYTHONPATH=<a copy of qrun> to measure a fixed snapshot while qrun/ is being
    edited; ``qrun_from_repo`` then is false and the repository fields describe the checkout
    only, not the code measured.
    """
    found = subprocess.run([sys.executable, "-c", "import qrun; print(qrun.__file__)"], env=env,
                           cwd=cwd, capture_output=True, text=True)
    module = found.stdout.strip() or None
    origin = {"qrun_module": module,
              "qrun_from_repo": bool(module) and Path(module).resolve().is_relative_to(REPO),
              "repo_commit": None, "repo_qrun_edited": None}
    try:
        origin["repo_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                               capture_output=True, text=True).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--", "qrun"], cwd=REPO,
                                capture_output=True, text=True).stdout
        origin["repo_qrun_edited"] = bool(status.strip())
    except OSError:
        pass
    return origin
