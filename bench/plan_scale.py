"""Planning at scale: a 100,000-experiment sweep, and how fast the CLI answers.

One OpenQASM 3 circuit with `input float theta; input float phi;`, swept over a grid of
1000 x 100 values on Aer (100,000 experiments, cut into jobs of 100). Measures:

  (a) validate + plan + store, in a fresh subprocess through qrun's own functions, exactly
      as qrun.api.apply does it before running anything (manifest.load, Store.open, lock,
      begin_apply, save_plan with planner.experiments / cut_jobs / derived_seed): time of
      each step and peak memory (ru_maxrss of that process).
      Targets: validate + plan + store <= 5 s, peak <= 300 MB. (The time excludes the
      interpreter start and imports, reported apart, and a separate counting pass over the
      experiments, as `qrun validate` makes, also reported apart as expand_s.)
  (b) `qrun plan M.yaml` on the stored campaign (CLI subprocess wall time, median).
      Target <= 2 s.
  (c) `qrun --help` wall time (median of 10), beside `python -c pass` as the floor.
      Target <= 0.3 s.

Prints the figures as a table, then ONE JSON line (last) with every figure and its ratio to
its target (below 1 means the target is met).

    .venv/bin/python bench/plan_scale.py
    .venv/bin/python bench/plan_scale.py --theta 100 --phi 100     # 10,000 experiments
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)

TARGETS = {"plan_store_s": 5.0, "plan_store_peak_mb": 300.0, "cli_plan_s": 2.0, "cli_help_s": 0.3}

CIRCUIT = """\
// Two parameters: rotate by theta, phase phi, rotate back, entangle.
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
rz(phi) q[0];
rx(theta) q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""

# Runs in its own process, so its peak memory is qrun's alone (plus Python and Qiskit).
STORE_SCRIPT = textwrap.dedent('''
    import json, resource, sys, time

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    manifest_path, state_dir = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    from qrun import __version__, manifest as manifests, planner
    from qrun.api import state_path, store_plan
    from qrun.store import Store
    t1 = time.perf_counter()
    after_import_mb = peak_mb()

    manifest = manifests.load(manifest_path)              # api.validate
    t2 = time.perf_counter()
    after_validate_mb = peak_mb()
    # Not part of apply: a separate pass counting the experiments, as `qrun validate` does.
    count = sum(1 for _ in planner.experiments(manifest))
    t3 = time.perf_counter()

    store = Store.open(state_path(manifest, state_dir))   # api.apply, then api._apply_locked
    store.acquire_lock(manifest.name, "apply")
    store.set_meta("campaign", manifest.name)
    apply_id = store.begin_apply("apply", str(manifest.path), manifest.sha256, None, None,
                                 __version__)
    planned = store_plan(store, manifest, apply_id)
    store.finish_apply(apply_id, "interrupted")  # what apply records when stopped right here
    store.release_lock(manifest.name)
    store.close()
    t4 = time.perf_counter()
    print(json.dumps({
        "import_s": t1 - t0, "validate_s": t2 - t1, "expand_s": t3 - t2, "store_s": t4 - t3,
        "plan_store_s": (t2 - t1) + (t4 - t3), "experiments": count, "new": planned.new,
        "jobs": planned.jobs_created, "after_import_mb": after_import_mb,
        "after_validate_mb": after_validate_mb, "peak_mb": peak_mb(),
    }))
''')


def write_inputs(root: Path, args) -> Path:
    folder = root / "campaign"
    (folder / "circuits").mkdir(parents=True)
    (folder / "circuits" / "rot2.qasm").write_text(CIRCUIT)
    lines = [
        "apiVersion: qrun/v1",
        "kind: Campaign",
        "metadata: {name: plan-scale}",
        "spec:",
        "  shots: 1000",
        "  seed: 5",
        "  circuits:",
        "    - name: rot2",
        "      source: circuits/rot2.qasm",
        "      sweep:",
        f"        theta: {{linspace: [0, 3.14159, {args.theta}]}}",
        f"        phi: {{linspace: [0, 3.14159, {args.phi}]}}",
        "  backends:",
        "    - {name: aer, provider: qiskit.aer}",
    ]
    if args.split:
        lines.append(f"  split: {{max_experiments_per_job: {args.split}}}")
    manifest = folder / "campaign.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theta", type=int, default=1000, help="theta values (grid rows)")
    parser.add_argument("--phi", type=int, default=100, help="phi values (grid columns)")
    parser.add_argument("--split", type=int, default=100,
                        help="split.max_experiments_per_job (0: none, one job for all)")
    parser.add_argument("--store-runs", type=int, default=3,
                        help="fresh validate+plan+store runs (median; each on a new state folder)")
    parser.add_argument("--plan-runs", type=int, default=5, help="`qrun plan` runs (median)")
    parser.add_argument("--help-runs", type=int, default=10, help="`qrun --help` runs (median)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("plan-scale")
    env = _common.clean_env(root)
    manifest = write_inputs(root, args)
    script = root / "plan_store.py"
    script.write_text(STORE_SCRIPT)
    qrun = _common.qrun_command()
    expected = args.theta * args.phi
    load_start = _common.load_average()
    print(f"campaign of {expected:,} experiments (theta {args.theta} x phi {args.phi}), in {root}")

    # Untimed warm-up: the page cache holds Python and Qiskit, byte code is compiled (into
    # the scratch folder), so the first timed run is not the only one to pay for that.
    _common.timed(qrun + ["validate", str(manifest)], env, root)
    _common.timed(qrun + ["--help"], env, root)

    # (a) validate + plan + store, each run on a fresh state folder
    runs = []
    for i in range(args.store_runs):
        state = root / f"state-{i}"
        out = root / f"store-{i}.json"
        wall = _common.measured([sys.executable, str(script), str(manifest), str(state)],
                                env, root, stdout=out).wall_s
        figures = json.loads(out.read_text().strip().splitlines()[-1])
        figures["wall_s"] = wall
        if figures["experiments"] != expected or figures["new"] != expected:
            raise SystemExit(f"expected {expected} new experiments, got {figures}")
        runs.append(figures)
        print(f"  store run {i + 1}: validate {figures['validate_s']:.2f} s + plan and store "
              f"{figures['store_s']:.2f} s ({figures['jobs']} jobs) = {figures['plan_store_s']:.2f} s "
              f"(imports {figures['import_s']:.2f} s; a counting pass {figures['expand_s']:.2f} s), "
              f"peak {figures['peak_mb']:.0f} MB (after imports {figures['after_import_mb']:.0f} MB)")
    best = sorted(runs, key=lambda r: r["plan_store_s"])[len(runs) // 2]  # the median run
    state = root / "state-0"

    # (b) qrun plan on the stored campaign
    plan_times, plan_peaks = [], []
    for _ in range(args.plan_runs):
        run = _common.measured(qrun + ["plan", str(manifest), "--state-dir", str(state)], env, root)
        plan_times.append(run.wall_s)
        plan_peaks.append(run.peak_mb)
    plan_s = _common.median(plan_times)
    print(f"  qrun plan: median {plan_s:.2f} s of {len(plan_times)} "
          f"(min {min(plan_times):.2f}, max {max(plan_times):.2f}), peak {max(plan_peaks):.0f} MB")

    # (c) qrun --help, and the floor: an empty Python
    help_times = [_common.timed(qrun + ["--help"], env, root) for _ in range(args.help_runs)]
    pass_times = [_common.timed([sys.executable, "-c", "pass"], env, root)
                  for _ in range(args.help_runs)]
    help_s, pass_s = _common.median(help_times), _common.median(pass_times)
    print(f"  qrun --help: median {help_s * 1000:.0f} ms; python -c pass: median "
          f"{pass_s * 1000:.0f} ms")

    figures = {
        "benchmark": "plan_scale",
        "experiments": expected,
        "jobs": best["jobs"],
        "validate_s": round(best["validate_s"], 3),
        "expand_s": round(best["expand_s"], 3),
        "store_s": round(best["store_s"], 3),
        "plan_store_s": round(best["plan_store_s"], 3),
        "plan_store_import_s": round(best["import_s"], 3),
        "plan_store_wall_s": round(best["wall_s"], 3),
        "plan_store_peak_mb": round(best["peak_mb"], 1),
        "plan_store_after_import_mb": round(best["after_import_mb"], 1),
        "plan_store_runs_s": [round(r["plan_store_s"], 3) for r in runs],
        "cli_plan_s": round(plan_s, 3),
        "cli_plan_peak_mb": round(max(plan_peaks), 1),
        "cli_plan_runs_s": [round(t, 3) for t in plan_times],
        "cli_help_s": round(help_s, 3),
        "python_pass_s": round(pass_s, 3),
        "help_over_python": round(help_s / pass_s, 2),
    }
    for name, target in TARGETS.items():
        figures[f"{name}_target"] = target
        figures[f"{name}_to_target"] = round(figures[name] / target, 3)
    missed = [name for name in TARGETS if figures[name] > TARGETS[name]]
    figures["targets_missed"] = missed
    figures["loadavg_start"] = load_start
    figures["loadavg_end"] = _common.load_average()
    figures.update(_common.machine())
    print("targets: " + ", ".join(
        f"{name} {figures[name]} / {target} {'MISSED' if name in missed else 'met'}"
        for name, target in TARGETS.items()))
    _common.finish(root, figures, args.keep)


if __name__ == "__main__":
    main()
