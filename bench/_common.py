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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def scratch(prefix: str) -> Path:
    """A fresh temporary folder with home/, mpl/ and xdg/ inside for the subprocesses."""
    root = Path(tempfile.mkdtemp(prefix=f"qrun-bench-{prefix}-"))
    for name in ("home", "mpl", "xdg", "cache"):
        (root / name).mkdir()
    return root


def clean_env(root: Path, **extra: str) -> dict:
    """The environment for subprocesses: SDK caches and config under ``root``, not $HOME."""
    env = dict(os.environ)
    env.update(HOME=str(root / "home"), MPLCONFIGDIR=str(root / "mpl"),
               XDG_DATA_HOME=str(root / "xdg"), XDG_CACHE_HOME=str(root / "cache"),
               PYTHONDONTWRITEBYTECODE="1")
    for name in ("QRUN_STATE_DIR", "QRUN_DEBUG"):
        env.pop(name, None)
    env.update(extra)
    return env


def qrun_command() -> list[str]:
    """The `qrun` console script installed next to this Python, else `python -m qrun`."""
    script = Path(sys.executable).parent / "qrun"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "qrun"]


def timed(cmd: list[str], env: dict, cwd: Path, check: bool = True, quiet: bool = True) -> float:
    """Wall time in seconds of one command, from fork to exit."""
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=quiet, text=True)
    elapsed = time.perf_counter() - started
    if check and done.returncode != 0:
        detail = (done.stderr or "")[-3000:] if quiet else ""
        raise SystemExit(f"command failed with exit {done.returncode}: {' '.join(cmd)}\n{detail}")
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


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
