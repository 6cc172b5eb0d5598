"""Plans that say why, at scale: `qrun plan` and `qrun plan -o md` on 100,000 experiments.

The campaign of plan_scale.py (one OpenQASM 3 circuit, theta x phi grid of 1000 x 100 on
Aer, 100,000 experiments) is planned and stored as apply stores it before running anything
(bench/plan_scale.py's store script), so every experiment is stored and pending. Then, each
as a fresh CLI subprocess (median of --runs):

  (a) the manifest unchanged: every experiment `resume`;
  (b) the shots edited (1000 -> 2000): every key is new, and each experiment is paired with
      the stored one it replaces and names what changed: 100,000 `changed`, the heaviest
      plan (every experiment joined twice, grouped, listed);
  for each: `qrun plan` (table), `qrun plan -o md` (the pull-request comment: its size is
  checked under GitHub's 65,536 characters), and for (b) `qrun plan -o md --out FILE`
  (also saving the 100,000 keys to run).

Targets: each <= 2 s (plan_scale's target for `qrun plan`), peak <= 300 MB. Wall times
swing with the machine's load, so CPU time (user + system) is reported too, and with
--baseline a qrun from before plans explained themselves (its `qrun plan`, which only
counted new/cached/failed/resume) runs alternately on its own copy of the same campaign:
the ratio of the two in one run is the steady figure.

Prints a table, then ONE JSON line (last) with every figure.

    .venv/bin/python bench/plan.py
    .venv/bin/python bench/plan.py --theta 100 --phi 100     # 10,000 experiments
    git archive 8428ce6 | tar -x -C /tmp/before && .venv/bin/python bench/plan.py --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)
import plan_scale  # noqa: E402  (its campaign and store script)

TARGET_S = 2.0
TARGET_MB = 300.0
GITHUB_LIMIT = 65_536


def _run(command: list, env: dict, cwd: Path, out: Path) -> tuple[float, float, float]:
    """Wall time, CPU time (user + system) and peak RSS in MB of one command (no children:
    `qrun plan` starts none), from os.wait4 (_common.measured gives CPU only by sampling
    the process tree every 0.2 s, which rounds wall times to 0.2 s)."""
    with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{out.with_suffix('.err').read_text()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _cli(qrun: list, args: list, env: dict, root: Path, runs: int, out: Path,
         baseline: tuple | None = None) -> dict:
    """Median wall and CPU time of a command; with ``baseline`` (its command, arguments and
    environment) that one too, run alternately with it."""
    sides: dict = {"": (qrun + args, env)}
    if baseline:
        sides["baseline_"] = (baseline[0] + baseline[1], baseline[2])
    seen: dict = {name: ([], [], []) for name in sides}
    for _ in range(runs):
        for name, (command, environment) in sides.items():
            figures = _run(command, environment, root, out if not name else out.with_suffix(".baseline"))
            for values, figure in zip(seen[name], figures):
                values.append(figure)
    figures: dict = {}
    for name, (walls, cpus, peaks) in seen.items():
        figures.update({f"{name}s": round(_common.median(walls), 3),
                        f"{name}runs_s": [round(t, 3) for t in walls],
                        f"{name}cpu_s": round(_common.median(cpus), 3),
                        f"{name}peak_mb": round(max(peaks), 1)})
    if baseline:
        figures["cpu_ratio"] = round(figures["cpu_s"] / figures["baseline_cpu_s"], 2)
        figures["wall_ratio"] = round(figures["s"] / figures["baseline_s"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theta", type=int, default=1000)
    parser.add_argument("--phi", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (median)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an older qrun's source tree (git archive REV | tar -x -C DIR) to "
                             "time alternately on its own copy of the campaign")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    args.split = 100

    root = _common.scratch("plan")
    env = _common.clean_env(root)
    manifest = plan_scale.write_inputs(root, args)
    script = root / "plan_store.py"
    script.write_text(plan_scale.STORE_SCRIPT)
    state = root / "state"
    qrun = _common.qrun_command()
    expected = args.theta * args.phi
    load_start = _common.load_average()
    print(f"campaign of {expected:,} experiments, in {root}")
    _common.timed(qrun + ["validate", str(manifest)], env, root)  # warm-up: byte code, page cache
    stored = _common.measured([sys.executable, str(script), str(manifest), str(state)], env, root,
                              stdout=root / "store.json")
    print(f"  stored the plan (as apply does before running): {stored.wall_s:.1f} s")
    old_env = old_state = None
    if args.baseline:
        old_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
        old_state = root / "state-baseline"
        _common.measured([sys.executable, str(script), str(manifest), str(old_state)], old_env,
                         root, stdout=root / "store-baseline.json")

    figures: dict = {"benchmark": "plan", "experiments": expected}
    edited = manifest.with_name("edited.yaml")
    edited.write_text(manifest.read_text().replace("shots: 1000", "shots: 2000"))
    cases = [("unchanged", manifest, "resume"), ("edited", edited, "changed")]
    for name, path, reason in cases:
        base = ["plan", str(path), "--state-dir", str(state)]
        doc = root / f"{name}.json"
        _common.measured(qrun + base + ["-o", "json"], env, root, stdout=doc)
        totals = json.loads(doc.read_text())["totals"]
        if totals[reason] != expected:
            raise SystemExit(f"{name}: expected {expected} {reason}, got {totals}")
        old = None
        if old_env is not None:
            old = ([sys.executable, "-m", "qrun"], ["plan", str(path), "--state-dir", str(old_state)],
                   old_env)
        table = _cli(qrun, base, env, root, args.runs, root / f"{name}.txt", old)
        md_out = root / f"{name}.md"
        md = _cli(qrun, base + ["-o", "md"], env, root, args.runs, md_out, old)
        md["chars"] = len(md_out.read_text(encoding="utf-8"))
        if md["chars"] >= GITHUB_LIMIT:
            raise SystemExit(f"{name}: the comment has {md['chars']} characters")
        figures[f"{name}_plan"] = table
        figures[f"{name}_plan_md"] = md
        print(f"  {name} ({expected:,} {reason}): qrun plan {table['s']:.2f} s, CPU "
              f"{table['cpu_s']:.2f} s (peak {table['peak_mb']:.0f} MB); -o md {md['s']:.2f} s, CPU "
              f"{md['cpu_s']:.2f} s ({md['chars']:,} characters, peak {md['peak_mb']:.0f} MB)")
        if old:
            print(f"    baseline qrun plan: {table['baseline_s']:.2f} s, CPU {table['baseline_cpu_s']:.2f} s "
                  f"(peak {table['baseline_peak_mb']:.0f} MB); CPU ratio plan {table['cpu_ratio']}, "
                  f"-o md {md['cpu_ratio']}")
    plan_file = root / "edited.plan"
    saved = _cli(qrun, ["plan", str(edited), "--state-dir", str(state), "-o", "md", "--out",
                        str(plan_file)], env, root, args.runs, root / "saved.md")
    saved["file_mb"] = round(plan_file.stat().st_size / 1e6, 2)
    figures["edited_plan_md_out"] = saved
    print(f"  edited: -o md --out FILE {saved['s']:.2f} s, CPU {saved['cpu_s']:.2f} s "
          f"(plan file {saved['file_mb']} MB)")
    figures["baseline"] = str(args.baseline) if args.baseline else None

    timed = [(k, v) for k, v in figures.items() if isinstance(v, dict)]
    figures["target_s"], figures["target_mb"] = TARGET_S, TARGET_MB
    figures["targets_missed"] = [k for k, v in timed if v["s"] > TARGET_S or v["peak_mb"] > TARGET_MB]
    figures["loadavg_start"] = load_start
    figures["loadavg_end"] = _common.load_average()
    figures.update(_common.machine())
    print("targets (<= 2 s, <= 300 MB): " + ", ".join(
        f"{k} {'MISSED' if k in figures['targets_missed'] else 'met'}" for k, _ in timed))
    _common.finish(root, figures, args.keep)


if __name__ == "__main__":
    main()
