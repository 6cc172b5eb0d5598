"""`qrun export --layout long` (JSON Lines, CSV, Parquet), Parquet wide and qrun.results()
on a large finished campaign: wall time, rows per second, file size and peak memory.

One OpenQASM 3 circuit (3 qubits: `rx(theta)` on the first, `h` on the others, all
measured), `theta` swept over N values on `qiskit.aer`, 100 shots each: N experiments
(default 100,000) of about 8 outcomes each, so about 8 N long rows. The campaign is run
once by `qrun apply` (not measured here; bench/scale.py measures apply), then each export
is a fresh `qrun` subprocess, as a user runs it. Peak memory is the process's own peak
RSS, the kernel's high-water mark handed back by wait4 (bench/_common.measured).

The same exports run first on a campaign of --small experiments (default 10,000), and the
growth ratios (peak at N / peak at --small) show whether memory grows with the campaign.
qrun.results() builds a DataFrame of the whole campaign, so its memory grows by nature:
it is measured, with no growth target.

Checks (the run stops if one fails): every long export has one row per outcome of every
experiment (the sum of the outcomes counted in the wide JSON Lines), and the Parquet long
file's counts sum to N x shots (read back with pyarrow).

Targets (figure / target; below 1 means met):
  - each export's coordinator peak RSS <= 300 MB, and growth <= 1.2 (scale.py's budgets);
  - each long export >= 50,000 rows/s at N (800,000 rows in <= 16 s).

    .venv/bin/python bench/export_layouts.py                                   # ~4 min here
    .venv/bin/python bench/export_layouts.py --experiments 20000 --small 2000  # ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)

MEMORY_TARGET_MB = 300.0
GROWTH_TARGET = 1.2
LONG_ROWS_PER_S_TARGET = 50_000.0

CIRCUIT = """\
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[3] q;
bit[3] c;
rx(theta) q[0];
h q[1];
h q[2];
c = measure q;
"""

# (name, extra `qrun export` arguments, file suffix)
EXPORTS = [
    ("long_jsonl", ["--layout", "long", "-f", "jsonl"], "jsonl"),
    ("long_csv", ["--layout", "long", "-f", "csv"], "csv"),
    ("long_parquet", ["--layout", "long", "-f", "parquet"], "parquet"),
    ("wide_parquet", ["-f", "parquet"], "parquet"),
    ("wide_jsonl", ["-f", "jsonl"], "jsonl"),
]

RESULTS_SCRIPT = """
import sys, qrun
frame = qrun.results(sys.argv[1], layout="long", state_dir=sys.argv[2])
print(len(frame), int(frame["count"].sum()))
"""


def write_campaign(folder: Path, name: str, experiments: int, shots: int) -> Path:
    return _common.sweep_campaign(folder, name, experiments, shots, "rx3", CIRCUIT)


def _rows_in(path: Path, suffix: str) -> int:
    if suffix == "parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return lines - 1 if suffix == "csv" else lines


def _outcomes_in_wide(path: Path) -> int:
    """Long rows expected: the outcomes of every experiment, from the wide JSON Lines."""
    with path.open() as handle:
        return sum(len(json.loads(line)["counts"] or {}) for line in handle)


def run_size(label: str, root: Path, env: dict, experiments: int, args) -> dict:
    folder = root / label
    manifest = write_campaign(folder, label, experiments, args.shots)
    state = folder / "state"
    qrun = _common.qrun_command()
    applied = _common.measured(qrun + ["apply", str(manifest), "--no-progress", "--state-dir", str(state)],
                               env, folder)
    print(f"[{label}] apply of {experiments:,} experiments: {applied.wall_s:.1f} s")
    figures: dict = {"experiments": experiments, "apply_s": applied.wall_s}
    for name, extra, suffix in EXPORTS:
        walls, peaks = [], []
        out = folder / f"{name}.{suffix}"
        for _ in range(args.repeats):
            run = _common.measured(qrun + ["export", str(manifest), "-o", str(out), "--state-dir", str(state),
                                           *extra], env, folder)
            walls.append(run.wall_s)
            peaks.append(run.peak_mb)
        rows = _rows_in(out, suffix)
        figures[f"{name}_s"] = _common.median(walls)
        figures[f"{name}_peak_mb"] = max(peaks)
        figures[f"{name}_rows"] = rows
        figures[f"{name}_mb"] = out.stat().st_size / 1e6
        print(f"[{label}] export {name:13} {rows:>9,} rows in {figures[f'{name}_s']:6.2f} s "
              f"({rows / figures[f'{name}_s']:>9,.0f} rows/s), {figures[f'{name}_mb']:7.1f} MB, "
              f"peak {figures[f'{name}_peak_mb']:.0f} MB")
    _check(folder, figures, experiments, args.shots)
    for name, _, _ in EXPORTS:
        if name.startswith("long_"):
            figures[f"{name}_rows_per_s"] = figures[f"{name}_rows"] / figures[f"{name}_s"]
    script = folder / "results.py"
    script.write_text(RESULTS_SCRIPT)
    frame = _common.measured([sys.executable, str(script), str(manifest), str(state)], env, folder,
                             stdout=folder / "results.out")
    frame_rows, frame_count = map(int, (folder / "results.out").read_text().split())
    if (frame_rows, frame_count) != (figures["long_parquet_rows"], experiments * args.shots):
        raise SystemExit(f"qrun.results gave {frame_rows} rows, {frame_count} counts")
    figures["results_frame_s"] = frame.wall_s
    figures["results_frame_peak_mb"] = frame.peak_mb
    print(f"[{label}] qrun.results(layout='long'): {frame_rows:,} rows in {frame.wall_s:.2f} s, "
          f"peak {frame.peak_mb:.0f} MB")
    return figures


def _check(folder: Path, figures: dict, experiments: int, shots: int) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    expected = _outcomes_in_wide(folder / "wide_jsonl.jsonl")
    for name in ("long_jsonl", "long_csv", "long_parquet"):
        if figures[f"{name}_rows"] != expected:
            raise SystemExit(f"{name}: {figures[f'{name}_rows']} rows, expected {expected}")
    if figures["wide_parquet_rows"] != experiments or figures["wide_jsonl_rows"] != experiments:
        raise SystemExit("a wide export does not have one row per experiment")
    total = pc.sum(pq.read_table(folder / "long_parquet.parquet", columns=["count"])["count"]).as_py()
    if total != experiments * shots:
        raise SystemExit(f"long parquet counts sum to {total}, expected {experiments * shots}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="0: no growth ratios")
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each export (median time, max peak)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("export-layouts")
    env = _common.clean_env(root)
    load_start = _common.load_average()
    origin = _common.qrun_origin(env, root)
    print(f"qrun from {origin['qrun_module']}; scratch {root}")
    small = run_size("small", root, env, args.small, args) if args.small else None
    large = run_size("large", root, env, args.experiments, args)

    figures: dict = {"benchmark": "export_layouts", "shots": args.shots, **large}
    wanted = {f"{name}_peak_mb": MEMORY_TARGET_MB for name, _, _ in EXPORTS}
    for name, _, _ in EXPORTS:
        if small:
            figures[f"{name}_peak_mb_small"] = small[f"{name}_peak_mb"]
            figures[f"{name}_growth"] = large[f"{name}_peak_mb"] / small[f"{name}_peak_mb"]
            wanted[f"{name}_growth"] = GROWTH_TARGET
    if small:
        figures["results_frame_peak_mb_small"] = small["results_frame_peak_mb"]
    shown = {}
    for name, target in wanted.items():
        figures[f"{name}_to_target"] = figures[name] / target
        shown[name] = (figures[name], target, figures[name] > target)
    for name in ("long_jsonl", "long_csv", "long_parquet"):  # a floor, not a ceiling
        rate = figures[f"{name}_rows_per_s"]
        figures[f"{name}_rows_per_s_to_target"] = LONG_ROWS_PER_S_TARGET / rate
        shown[f"{name}_rows_per_s"] = (rate, LONG_ROWS_PER_S_TARGET, rate < LONG_ROWS_PER_S_TARGET)
    figures["targets_missed"] = [name for name, (_, _, missed) in shown.items() if missed]
    figures["loadavg_start"] = load_start
    figures["loadavg_end"] = _common.load_average()
    figures.update(_common.machine())
    figures.update(origin)
    print("figure / target:")
    for name, (value, target, missed) in shown.items():
        print(f"  {name:32} {value:>12,.2f} / {target:<10,g} {'MISSED' if missed else 'met'}")
    _common.finish(root, {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()},
                   args.keep)


if __name__ == "__main__":
    main()
