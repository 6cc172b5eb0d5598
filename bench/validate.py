"""How fast `qrun validate` and `qrun plan` are, cache cold and warm, against the parse floor.

Every figure is one fresh process (interpreter start and imports paid), the median of
--repeats runs, the sides taken in turn within each round so the machine's load hits all
alike:

  quickstart cold   `qrun validate examples/quickstart.yaml`, an empty cache folder each run
                    (every SDK imported: the caches of qrun/caches.py are built)
  quickstart warm   the same with the cache that a first run built (no SDK imported)
  2,000 validate    `qrun validate` of 2,000 random 5-qubit OpenQASM 2 files (bench/_circuits.py,
                    as bench/overhead_aer.py writes them), cold and warm
  2,000 plan        `qrun plan` of that campaign (no state yet), cold and warm
  peer: parse floor a plain script that reads the same 2,000 files with qiskit.qasm2.load
                    (what any validation by Qiskit's parser costs at least)

Targets (issue 12): quickstart warm <= 2 s; 2,000 validate <= 1.5 s; 2,000 plan <= 1.5 s.
With --baseline DIR (a copy of another qrun, e.g. `git archive REV qrun schemas | tar -x
-C DIR`), that qrun is measured in the same rounds (PYTHONPATH=DIR), without cache.

Prints the figures, then ONE JSON line (last).

    .venv/bin/python bench/validate.py
    .venv/bin/python bench/validate.py --repeats 5 --baseline /tmp/qrun-before
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _circuits  # noqa: E402  (bench/_circuits.py, beside this script)
import _common  # noqa: E402  (bench/_common.py, beside this script)

TARGETS = {"quickstart_warm_s": 2.0, "validate_2000_warm_s": 1.5, "plan_2000_warm_s": 1.5}

PARSE_FLOOR = textwrap.dedent('''
    """Every file of a folder read by Qiskit's OpenQASM 2 parser, as plainly as it gets."""
    import sys
    from pathlib import Path

    import qiskit.qasm2

    files = sorted(Path(sys.argv[1]).glob("*.qasm"))
    circuits = [qiskit.qasm2.load(str(f), custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
                for f in files]
    print(len(circuits), "circuits,", sum(c.num_qubits for c in circuits), "qubits")
''')


def write_campaign(root: Path, count: int, seed: int) -> Path:
    """root/campaign: count OpenQASM 2 files and a manifest running each once on Aer."""
    folder = root / "campaign"
    circuits = folder / "circuits"
    circuits.mkdir(parents=True)
    lines = ["apiVersion: qrun/v1", "kind: Campaign", "metadata: {name: validate-2000}",
             "spec:", "  shots: 1000", f"  seed: {seed}", "  backends:",
             "    - {name: aer, provider: qiskit.aer}", "  circuits:"]
    for i, ops in enumerate(_circuits.circuits(count, 5, 10, seed)):
        (circuits / f"c{i:05d}.qasm").write_text(_circuits.qasm2(ops, 5))
        lines.append(f"    - {{name: c{i:05d}, source: circuits/c{i:05d}.qasm}}")
    manifest = folder / "campaign.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--circuits", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each figure; median taken")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a folder holding another qrun package, measured alongside")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("validate")
    env = _common.clean_env(root)
    manifest = write_campaign(root, args.circuits, args.seed)
    quickstart = _common.REPO / "examples" / "quickstart.yaml"
    floor = root / "parse_floor.py"
    floor.write_text(PARSE_FLOOR)
    qrun = _common.qrun_command()
    state = ["--state-dir", str(root / "state")]  # never written: validate and plan only
    print(f"{args.circuits} random 5-qubit OpenQASM 2 files in {root}; {args.repeats} runs each")

    cold_runs = [0]

    def cold_env() -> dict:  # an empty cache folder for every cold run
        cold_runs[0] += 1
        folder = root / f"cold-cache-{cold_runs[0]}"
        folder.mkdir()
        return {**env, "XDG_CACHE_HOME": str(folder)}

    baseline_env = None
    if args.baseline:
        baseline_env = {**env, "PYTHONPATH": str(args.baseline.resolve()), "QRUN_NO_CACHE": "1"}
    sides = {
        "quickstart_cold_s": lambda: (qrun + ["validate", str(quickstart)] + state, cold_env()),
        "quickstart_warm_s": lambda: (qrun + ["validate", str(quickstart)] + state, env),
        "validate_2000_cold_s": lambda: (qrun + ["validate", str(manifest)] + state, cold_env()),
        "validate_2000_warm_s": lambda: (qrun + ["validate", str(manifest)] + state, env),
        "plan_2000_cold_s": lambda: (qrun + ["plan", str(manifest)] + state, cold_env()),
        "plan_2000_warm_s": lambda: (qrun + ["plan", str(manifest)] + state, env),
        "peer_parse_floor_2000_s": lambda: ([sys.executable, str(floor), str(manifest.parent / "circuits")], env),
    }
    if baseline_env:
        python_qrun = [sys.executable, "-m", "qrun"]
        sides.update({
            "baseline_quickstart_s": lambda: (python_qrun + ["validate", str(quickstart)] + state, baseline_env),
            "baseline_validate_2000_s": lambda: (python_qrun + ["validate", str(manifest)] + state, baseline_env),
            "baseline_plan_2000_s": lambda: (python_qrun + ["plan", str(manifest)] + state, baseline_env),
        })

    # Untimed: byte code compiled (PYTHONPYCACHEPREFIX), the page cache warm, and the warm
    # sides' cache built, by one validate and one plan of each manifest.
    for command in (["validate", str(quickstart)], ["validate", str(manifest)], ["plan", str(manifest)]):
        _common.timed(qrun + command + state, env, root)
    _common.timed([sys.executable, str(floor), str(manifest.parent / "circuits")], env, root)
    if baseline_env:
        _common.timed([sys.executable, "-m", "qrun", "validate", str(quickstart)], baseline_env, root)

    load_start = _common.load_average()
    times: dict = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(args.repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            command, side_env = sides[name]()
            times[name].append(_common.timed(command, side_env, root))
        print(f"  round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}" for n in names))
    figures = {name: round(_common.median(values), 3) for name, values in times.items()}

    print()
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = f"  (target <= {target} s: {'met' if value <= target else 'MISSED'})" if target else ""
        print(f"{name:28s} {value:6.2f} s{verdict}")
    floor_s = figures["peer_parse_floor_2000_s"]
    print(f"2,000-file validate, warm, against the parse floor: "
          f"{figures['validate_2000_warm_s'] / floor_s:.2f}x; cold {figures['validate_2000_cold_s'] / floor_s:.2f}x; "
          f"load average at start {load_start}")
    if not args.keep:
        shutil.rmtree(root / "campaign", ignore_errors=True)
    _common.finish(root, {
        "benchmark": "validate",
        **figures,
        "validate_2000_warm_over_floor": round(figures["validate_2000_warm_s"] / floor_s, 3),
        "validate_2000_cold_over_floor": round(figures["validate_2000_cold_s"] / floor_s, 3),
        "targets": TARGETS,
        "targets_met": all(figures[n] <= t for n, t in TARGETS.items()),
        "runs_s": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "circuits": args.circuits,
        "repeats": args.repeats,
        "baseline": str(args.baseline) if args.baseline else None,
        "loadavg_start": load_start,
        "loadavg_end": _common.load_average(),
        **_common.qrun_origin(env, root),
        **_common.machine(),
    }, args.keep)


if __name__ == "__main__":
    main()
