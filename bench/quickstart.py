"""The README's quickstart, `qrun apply examples/quickstart.yaml`: wall time and where it goes.

Copies examples/ into a scratch folder (the campaign writes its export beside the
manifest), runs one untimed warm-up apply (page cache, byte code, caches under the scratch
folder's XDG_CACHE_HOME), then ROUNDS applies, each in a fresh process with a fresh state
folder, and splits each run by the state's own timestamps (seconds from the command's start):

  validated    the apply was recorded (applies.started_at): interpreter start, CLI, manifest
               validated, campaign lock taken
  plan_stored  the last experiment of the plan was stored (experiments.created_at)
  first        the first result was committed (results.completed_at)
  last         the last result was committed
  wall         the command exited (export written, summary printed)

Prints each round, the medians, then ONE JSON line (last):
  {"benchmark": "quickstart", "wall_s": ..., "validated_s": ..., "plan_stored_s": ...,
   "first_result_s": ..., "last_result_s": ..., "experiments": 18, ...}
Target: wall <= 5 s on a quiet machine.

    .venv/bin/python bench/quickstart.py               # 3 rounds, median, ~30 s
    .venv/bin/python bench/quickstart.py --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)

TARGET_S = 5.0
EXPERIMENTS = 18  # what examples/quickstart.yaml plans


def split_of(db: Path, started: float) -> dict:
    """Seconds from ``started`` to each step of the apply, read from its state database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        validated = conn.execute("SELECT min(started_at) FROM applies").fetchone()[0]
        planned = conn.execute("SELECT max(created_at) FROM experiments").fetchone()[0]
        first, last, count = conn.execute(
            "SELECT min(completed_at), max(completed_at), count(*) FROM results").fetchone()
    return {"validated": validated - started, "plan_stored": planned - started,
            "first_result": first - started, "last_result": last - started, "results": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed applies; median taken")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("quickstart")
    env = _common.clean_env(root)
    examples = root / "examples"
    shutil.copytree(_common.REPO / "examples", examples)
    manifest = examples / "quickstart.yaml"
    origin = _common.qrun_origin(env, root)
    print(f"qrun apply {manifest} ({EXPERIMENTS} experiments, five local backends), "
          f"{args.rounds} rounds, in {root}")

    def apply(state: Path) -> tuple[float, float]:
        started = time.time()
        run = _common.measured(_common.qrun_command() + ["apply", str(manifest), "--no-progress",
                                                         "--state-dir", str(state)], env, root)
        return started, run.wall_s

    apply(root / "state-warmup")  # untimed
    load_start = _common.load_average()
    rounds = []
    for round_ in range(args.rounds):
        state = root / f"state-{round_}"
        started, wall = apply(state)
        split = split_of(state / "quickstart.sqlite", started)
        if split["results"] != EXPERIMENTS:
            raise SystemExit(f"the apply stored {split['results']} results, expected {EXPERIMENTS}")
        split["wall"] = wall
        rounds.append(split)
        print(f"  round {round_ + 1}: validated {split['validated']:5.2f} s, plan stored "
              f"{split['plan_stored']:5.2f} s, first result {split['first_result']:5.2f} s, "
              f"last result {split['last_result']:5.2f} s, exit {wall:5.2f} s")

    steps = ("validated", "plan_stored", "first_result", "last_result", "wall")
    median = {step: _common.median([r[step] for r in rounds]) for step in steps}
    print(f"median: wall {median['wall']:.2f} s (target <= {TARGET_S:g} s: "
          f"{'met' if median['wall'] <= TARGET_S else 'MISSED'}); validated {median['validated']:.2f}, "
          f"plan stored {median['plan_stored']:.2f}, first result {median['first_result']:.2f}, "
          f"last result {median['last_result']:.2f}; load average at start {load_start}")
    figures = {"benchmark": "quickstart",
               **{f"{step}_s": round(median[step], 3) for step in steps},
               "experiments": EXPERIMENTS, "rounds": args.rounds,
               "wall_runs_s": [round(r["wall"], 3) for r in rounds],
               "target_s": TARGET_S, "loadavg_start": load_start,
               "loadavg_end": _common.load_average(), **origin, **_common.machine()}
    _common.finish(root, figures, args.keep)


if __name__ == "__main__":
    main()
