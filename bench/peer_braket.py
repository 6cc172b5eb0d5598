"""qrun against the Braket SDK alone: the same 500 circuits on Braket's local simulator.

Generates N seeded random circuits (5 qubits, 10 layers of h/x/rx/ry/rz/cx, every qubit
measured into one `bit[5] c;` register) and writes each twice, one random draw, same gates:

  circuits/*.qasm         standard OpenQASM 3 (`include "stdgates.inc";`, `cx`): qrun's input;
  braket/*.qasm           Braket's OpenQASM dialect (no include, `cnot`): the Braket script's
                          input, since Braket's simulator cannot open stdgates.inc and has no
                          `cx`. (Each side reads text files in its natural form; qrun does the
                          translation to Braket's dialect itself, and that is part of its time.)

Then times, alternately and each in a fresh subprocess (both pay interpreter start and
imports), after an untimed warm-up round on 2 circuits:

  qrun    `qrun apply M.yaml --no-progress` on provider braket.local (device braket_sv), with a
          fresh state folder: validation (every circuit parsed), plan stored in SQLite, jobs
          on qrun's worker pool, every result committed, lock, provenance.
  braket  a script written the way the Braket docs show it: every file read into a
          `braket.ir.openqasm.Program`, then ONE `LocalSimulator("braket_sv").run_batch(
          programs, shots=...)` and `.results()` (run_batch runs the tasks in a process
          pool of cpu_count() processes), counts kept in a JSON file.

After the first round it exports qrun's counts (untimed) and compares them with the Braket
script's, circuit by circuit (total variation distance), to show both ran the same circuits;
with two or more rounds it also compares two Braket runs with each other, the noise floor.
Braket's local simulator takes no seed, so counts never match exactly.

Prints the figures, then ONE JSON line (last):
  {"benchmark": "peer_braket", "qrun_s": ..., "braket_s": ..., "ratio": ..., "circuits": 500, ...}
Target: ratio <= 1.0 (qrun no slower than the SDK alone).

    .venv/bin/python bench/peer_braket.py                    # 500 circuits, up to 3 rounds
    .venv/bin/python bench/peer_braket.py --circuits 50 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _circuits  # noqa: E402  (bench/_circuits.py, beside this script)
import _common  # noqa: E402

TARGET_RATIO = 1.0

BRAKET_SCRIPT = textwrap.dedent('''
    """Plain Braket SDK, as its docs show it: OpenQASM programs, one run_batch on LocalSimulator."""
    import json
    import sys
    from pathlib import Path

    from braket.devices import LocalSimulator
    from braket.ir.openqasm import Program

    folder, shots, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    max_parallel = int(sys.argv[4]) or None
    files = sorted(folder.glob("*.qasm"))
    programs = [Program(source=f.read_text()) for f in files]
    device = LocalSimulator("braket_sv")
    batch = device.run_batch(programs, shots=shots, max_parallel=max_parallel)
    counts = [dict(result.measurement_counts) for result in batch.results()]
    out.write_text(json.dumps({f.stem: c for f, c in zip(files, counts)}))
    print(len(counts), "circuits run")
''')


def write_inputs(folder: Path, ops_list: list, args) -> Path:
    """folder/circuits (standard QASM 3), folder/braket (Braket dialect), folder/campaign.yaml."""
    (folder / "circuits").mkdir(parents=True)
    (folder / "braket").mkdir()
    names = []
    for i, ops in enumerate(ops_list):
        name = f"c{i:05d}"
        names.append(name)
        (folder / "circuits" / f"{name}.qasm").write_text(_circuits.qasm3(ops, args.qubits, "std"))
        (folder / "braket" / f"{name}.qasm").write_text(_circuits.qasm3(ops, args.qubits, "braket"))
    lines = [
        "apiVersion: qrun/v1",
        "kind: Campaign",
        "metadata: {name: peer-braket}",
        "spec:",
        f"  shots: {args.shots}",
        "  backends:",
        "    - {name: sv, provider: braket.local, device: braket_sv}",
    ]
    if args.split:
        lines.append(f"  split: {{max_experiments_per_job: {args.split}}}")
    lines.append("  circuits:")
    lines += [f"    - {{name: {n}, source: circuits/{n}.qasm}}" for n in names]
    manifest = folder / "campaign.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def qrun_counts(manifest: Path, state: Path, env: dict, out: Path) -> dict:
    """circuit name -> counts, through `qrun export` (untimed)."""
    _common.timed(_common.qrun_command() + ["export", str(manifest), "-o", str(out), "-f", "jsonl",
                                            "--state-dir", str(state)], env, manifest.parent)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {row["circuit"]: row["counts"] for row in rows}


def mean_tvd(a: dict, b: dict) -> float:
    common = sorted(set(a) & set(b))
    return sum(_circuits.total_variation(a[k], b[k]) for k in common) / max(1, len(common))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--circuits", type=int, default=500)
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--qubits", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--repeats", type=int, default=3,
                        help="at most this many rounds of (qrun, braket); median taken")
    parser.add_argument("--budget", type=float, default=170.0,
                        help="seconds: start another round only if it should end within this")
    parser.add_argument("--workers", type=int, default=None, help="qrun apply -j (default: qrun's)")
    parser.add_argument("--split", type=int, default=None,
                        help="split.max_experiments_per_job in the manifest (default: none, qrun's)")
    parser.add_argument("--max-parallel", type=int, default=0,
                        help="run_batch max_parallel in the Braket script (default 0: Braket's, cpu_count)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("peer-braket")
    env = _common.clean_env(root)
    origin = _common.qrun_origin(env, root)
    print(f"qrun: {origin['qrun_module']}" + (
        f" (repository at {origin['repo_commit']}{', qrun/ edited' if origin['repo_qrun_edited'] else ''})"
        if origin["qrun_from_repo"] else " (not the repository's: PYTHONPATH)"))
    ops_list = _circuits.circuits(args.circuits, args.qubits, args.depth, args.seed)
    campaign = root / "campaign"
    manifest = write_inputs(campaign, ops_list, args)
    script = root / "plain_braket.py"
    script.write_text(BRAKET_SCRIPT)
    print(f"{args.circuits} random {args.qubits}-qubit circuits (depth {args.depth}), "
          f"{args.shots} shots each, on braket_sv, in {root}")

    # Untimed warm-up on 2 circuits, both sides: page cache, byte code, plugin caches.
    warm = root / "warmup"
    warm_manifest = write_inputs(warm, ops_list[:2], args)
    _common.timed(_common.qrun_command() + ["apply", str(warm_manifest), "--no-progress",
                                            "--state-dir", str(warm / "state")], env, warm)
    _common.timed([sys.executable, str(script), str(warm / "braket"), str(args.shots),
                   str(warm / "braket.json"), str(args.max_parallel)], env, root)

    qrun_times, braket_times, qrun_cpu, braket_cpu = [], [], [], []
    braket_outputs: list[dict] = []
    checks: dict = {}

    def run_qrun(round_: int) -> None:
        state = root / f"state-{round_}"
        cmd = _common.qrun_command() + ["apply", str(manifest), "--no-progress",
                                        "--state-dir", str(state)]
        if args.workers:
            cmd += ["-j", str(args.workers)]
        run = _common.measured(cmd, env, campaign, tree_cpu=True)
        qrun_times.append(run.wall_s)
        qrun_cpu.append(run.cpu_s)
        stored = _common.stored_results(state / "peer-braket.sqlite")
        if stored != args.circuits:
            raise SystemExit(f"qrun stored {stored} results, expected {args.circuits}")
        if round_ == 0:
            checks["qrun"] = qrun_counts(manifest, state, env, root / "qrun-export.jsonl")

    def run_braket(round_: int) -> None:
        out = root / f"braket-{round_}.json"
        run = _common.measured([sys.executable, str(script), str(campaign / "braket"),
                                str(args.shots), str(out), str(args.max_parallel)], env, root,
                               tree_cpu=True)
        braket_times.append(run.wall_s)
        braket_cpu.append(run.cpu_s)
        got = json.loads(out.read_text())
        if len(got) != args.circuits:
            raise SystemExit(f"Braket script ran {len(got)} circuits, expected {args.circuits}")
        braket_outputs.append(got)

    def report(round_: int) -> None:
        print(f"  round {round_ + 1}: qrun apply {qrun_times[-1]:6.2f} s (CPU {qrun_cpu[-1]:6.2f} s)   "
              f"Braket script {braket_times[-1]:6.2f} s (CPU {braket_cpu[-1]:6.2f} s)")

    load_start = _common.load_average()
    _common.alternating_rounds(run_qrun, run_braket, args.repeats, args.budget, report,
                               stop_hint="use --budget or --circuits to change that")

    qrun_s, braket_s = _common.median(qrun_times), _common.median(braket_times)
    ratio = qrun_s / braket_s
    qrun_cpu_s, braket_cpu_s = _common.median(qrun_cpu), _common.median(braket_cpu)
    tvd = mean_tvd(checks["qrun"], braket_outputs[0])
    floor = mean_tvd(braket_outputs[0], braket_outputs[1]) if len(braket_outputs) > 1 else None
    print(f"median: qrun apply {qrun_s:.2f} s, Braket SDK {braket_s:.2f} s, ratio {ratio:.3f} "
          f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'}); "
          f"per circuit: qrun {1000 * qrun_s / args.circuits:.1f} ms, "
          f"Braket {1000 * braket_s / args.circuits:.1f} ms")
    print(f"CPU time (whole process tree): qrun {qrun_cpu_s:.2f} s, Braket {braket_cpu_s:.2f} s, "
          f"ratio {qrun_cpu_s / braket_cpu_s:.3f}; load average at start {load_start}")
    # Two samples of one distribution differ by sampling noise only (about 0.08 at 1,000
    # shots of 5 qubits); well beyond that, the two sides did not compute the same thing.
    agree = tvd <= (1.5 * floor if floor is not None else 0.15)
    print(f"same circuits: mean total variation distance qrun vs Braket {tvd:.4f}"
          + (f", Braket vs Braket {floor:.4f} (sampling noise)" if floor is not None else "")
          + ("" if agree else "  <- RESULTS DISAGREE: qrun's counts are not the Braket SDK's"))
    _common.finish(root, {
        "benchmark": "peer_braket",
        "qrun_s": round(qrun_s, 3),
        "braket_s": round(braket_s, 3),
        "ratio": round(ratio, 3),
        "circuits": args.circuits,
        "shots": args.shots,
        "qubits": args.qubits,
        "depth": args.depth,
        "rounds": len(qrun_times),
        "qrun_cpu_s": round(qrun_cpu_s, 3),
        "braket_cpu_s": round(braket_cpu_s, 3),
        "cpu_ratio": round(qrun_cpu_s / braket_cpu_s, 3),
        "qrun_runs_s": [round(t, 3) for t in qrun_times],
        "braket_runs_s": [round(t, 3) for t in braket_times],
        "overhead_ms_per_circuit": round(1000 * (qrun_s - braket_s) / args.circuits, 2),
        "tvd_qrun_vs_braket": round(tvd, 4),
        "tvd_braket_vs_braket": None if floor is None else round(floor, 4),
        "results_agree": agree,
        "target_ratio": TARGET_RATIO,
        "ratio_to_target": round(ratio / TARGET_RATIO, 3),
        "workers": args.workers,
        "split": args.split,
        "max_parallel": args.max_parallel or None,
        **origin,
        "loadavg_start": load_start,
        "loadavg_end": _common.load_average(),
        **_common.machine(),
    }, args.keep)


if __name__ == "__main__":
    main()
