"""qrun's overhead on Aer: `qrun apply` against the plain Qiskit scripts a user would write.

Generates N random circuits (seeded; 5 qubits, depth ~10 of h/x/rx/ry/rz/cx, every qubit
measured at the end) as OpenQASM 2 files, then times, alternately and each in a fresh
subprocess (so every side pays interpreter start and imports), after one untimed warm-up
round on 2 circuits:

  qrun     `qrun apply M.yaml --no-progress` with a fresh state folder: validation (every
           circuit parsed), plan stored in SQLite, jobs run on a worker pool, every result
           committed, campaign lock, provenance.
  fastest  the fastest plain script one can write for the same work (the main peer): every
           file parsed with qiskit.qasm2.load, no transpile (Aer runs these gates as they
           are), ONE AerSimulator(max_parallel_experiments=0).run over all the circuits
           (Aer runs experiments in parallel on every core itself), counts in a JSON file.
  docs     a script written the way the Qiskit/Aer docs show: QuantumCircuit.from_qasm_file
           for every file, then batches of 100 circuits through transpile(batch, sim) and
           sim.run(batch, shots=..., seed_simulator=...).result() (the second line).

Prints the figures as a table, then ONE JSON line (last):
  {"benchmark": "overhead_aer", "qrun_s": ..., "fastest_s": ..., "ratio": ..., "plain_s": ...,
   "docs_ratio": ..., "circuits": N, ...}
Target: ratio (qrun / fastest) <= 1.05.

    .venv/bin/python bench/overhead_aer.py                  # 2,000 circuits, up to 3 rounds in ~3 min
    .venv/bin/python bench/overhead_aer.py --circuits 200 --repeats 1
    .venv/bin/python bench/overhead_aer.py --no-docs       # qrun and the fastest script only
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _circuits  # noqa: E402  (bench/_circuits.py, beside this script)
import _common  # noqa: E402  (bench/_common.py, beside this script)

TARGET_RATIO = 1.05  # qrun / the fastest plain script

FASTEST_SCRIPT = textwrap.dedent('''
    """Plain Qiskit + Aer, as fast as it goes: parse, no transpile, one run over all circuits."""
    import json
    import sys
    from pathlib import Path

    import qiskit.qasm2
    from qiskit_aer import AerSimulator

    folder, shots, seed, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    files = sorted(folder.glob("*.qasm"))
    circuits = [qiskit.qasm2.load(str(f)) for f in files]
    sim = AerSimulator(max_parallel_experiments=0)  # 0: as many experiments at once as cores
    result = sim.run(circuits, shots=shots, seed_simulator=seed).result()
    counts = [result.get_counts(i) for i in range(len(circuits))]
    out.write_text(json.dumps({f.stem: c for f, c in zip(files, counts)}))
    print(len(counts), "circuits run")
''')

PLAIN_SCRIPT = textwrap.dedent('''
    """Plain Qiskit + Aer, as the docs show it: load, transpile for the simulator, run in batches."""
    import json
    import sys
    from pathlib import Path

    from qiskit import QuantumCircuit, transpile
    from qiskit_aer import AerSimulator

    folder, shots, seed, batch, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), Path(sys.argv[5])
    files = sorted(folder.glob("*.qasm"))
    circuits = [QuantumCircuit.from_qasm_file(str(f)) for f in files]
    sim = AerSimulator()
    counts = []
    for start in range(0, len(circuits), batch):
        compiled = transpile(circuits[start:start + batch], sim)
        result = sim.run(compiled, shots=shots, seed_simulator=seed).result()
        got = result.get_counts()
        counts.extend(got if isinstance(got, list) else [got])
    out.write_text(json.dumps({f.stem: c for f, c in zip(files, counts)}))
    print(len(counts), "circuits run")
''')


def write_inputs(root: Path, args) -> tuple[Path, Path]:
    """The circuits folder and the campaign manifest (every circuit on one Aer backend)."""
    folder = root / "campaign"
    circuits = folder / "circuits"
    circuits.mkdir(parents=True)
    for i, ops in enumerate(_circuits.circuits(args.circuits, args.qubits, args.depth, args.seed)):
        (circuits / f"c{i:05d}.qasm").write_text(_circuits.qasm2(ops, args.qubits))
    return circuits, write_manifest(folder, args)


def write_manifest(folder: Path, args) -> Path:
    """folder/campaign.yaml running every circuit of folder/circuits on Aer."""
    lines = [
        "apiVersion: qrun/v1",
        "kind: Campaign",
        "metadata: {name: overhead-aer}",
        "spec:",
        f"  shots: {args.shots}",
        f"  seed: {args.seed}",
        "  backends:",
        "    - {name: aer, provider: qiskit.aer}",
    ]
    if args.split:
        lines.append(f"  split: {{max_experiments_per_job: {args.split}}}")
    lines.append("  circuits:")
    lines += [f"    - {{name: {f.stem}, source: circuits/{f.name}}}"
              for f in sorted((folder / "circuits").glob("*.qasm"))]
    manifest = folder / "campaign.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--circuits", type=int, default=2000)
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--qubits", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch", type=int, default=100, help="circuits per sim.run in the docs script")
    parser.add_argument("--repeats", type=int, default=3,
                        help="at most this many rounds of (qrun, peers); median taken")
    parser.add_argument("--budget", type=float, default=170.0,
                        help="seconds: start another round only if it should end within this")
    parser.add_argument("--workers", type=int, default=None, help="qrun apply -j (default: qrun's)")
    parser.add_argument("--split", type=int, default=None,
                        help="split.max_experiments_per_job in the manifest (default: none, qrun's)")
    parser.add_argument("--no-docs", action="store_true",
                        help="leave out the docs-style transpiling script (the second peer)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    root = _common.scratch("overhead-aer")
    env = _common.clean_env(root)
    circuits, manifest = write_inputs(root, args)
    scripts = {"fastest": root / "fastest_aer.py", "docs": root / "plain_aer.py"}
    scripts["fastest"].write_text(FASTEST_SCRIPT)
    scripts["docs"].write_text(PLAIN_SCRIPT)
    peers = ["fastest"] if args.no_docs else ["fastest", "docs"]
    print(f"{args.circuits} random {args.qubits}-qubit circuits (depth {args.depth}), "
          f"{args.shots} shots each, in {root}")

    def peer_command(peer: str, folder: Path, out: Path) -> list:
        extra = [str(args.batch)] if peer == "docs" else []
        return [sys.executable, str(scripts[peer]), str(folder), str(args.shots), str(args.seed),
                *extra, str(out)]

    # Untimed warm-up round on 2 of the circuits, for every side alike: the page cache holds
    # Python, Qiskit and Aer, byte code is compiled, stevedore's cache of Qiskit's transpiler
    # plugins is written (all under the scratch folder).
    warm = root / "warmup"
    (warm / "circuits").mkdir(parents=True)
    for source in sorted(circuits.glob("*.qasm"))[:2]:
        (warm / "circuits" / source.name).write_bytes(source.read_bytes())
    warm_manifest = write_manifest(warm, args)
    _common.timed(_common.qrun_command() + ["apply", str(warm_manifest), "--no-progress",
                                            "--state-dir", str(warm / "state")], env, warm)
    for peer in peers:
        _common.timed(peer_command(peer, warm / "circuits", warm / f"{peer}.json"), env, root)

    times: dict = {side: [] for side in ["qrun", *peers]}
    cpu: dict = {side: [] for side in ["qrun", *peers]}

    def run_qrun(round_: int) -> None:
        state = root / f"state-{round_}"
        cmd = _common.qrun_command() + ["apply", str(manifest), "--no-progress",
                                        "--state-dir", str(state)]
        if args.workers:
            cmd += ["-j", str(args.workers)]
        run = _common.measured(cmd, env, root / "campaign", tree_cpu=True)
        times["qrun"].append(run.wall_s)
        cpu["qrun"].append(run.cpu_s)
        stored = _common.stored_results(state / "overhead-aer.sqlite")
        if stored != args.circuits:
            raise SystemExit(f"qrun stored {stored} results, expected {args.circuits}")

    def run_peers(round_: int) -> None:
        # The peers' order alternates too, so that neither always follows qrun.
        for peer in peers if round_ % 2 == 0 else reversed(peers):
            out = root / f"{peer}-{round_}.json"
            run = _common.measured(peer_command(peer, circuits, out), env, root, tree_cpu=True)
            times[peer].append(run.wall_s)
            cpu[peer].append(run.cpu_s)
            ran = len(json.loads(out.read_text()))
            if ran != args.circuits:
                raise SystemExit(f"{peer} script ran {ran} circuits, expected {args.circuits}")

    def report(round_: int) -> None:
        print(f"  round {round_ + 1}: " + "   ".join(
            f"{side} {times[side][-1]:6.2f} s (CPU {cpu[side][-1]:6.2f} s)" for side in times))

    load_start = _common.load_average()
    _common.alternating_rounds(run_qrun, run_peers, args.repeats, args.budget, report,
                               stop_hint="use --budget, --no-docs or --circuits to change that")

    wall = {side: _common.median(values) for side, values in times.items()}
    cpu_s = {side: _common.median(values) for side, values in cpu.items()}
    ratio = wall["qrun"] / wall["fastest"]
    print(f"median: qrun apply {wall['qrun']:.2f} s, fastest plain Qiskit/Aer {wall['fastest']:.2f} s, "
          f"ratio {ratio:.3f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'})")
    if "docs" in wall:
        print(f"        docs-style script (transpile, batches of {args.batch}) {wall['docs']:.2f} s, "
              f"qrun / docs {wall['qrun'] / wall['docs']:.3f}")
    print(f"CPU time (whole process tree): qrun {cpu_s['qrun']:.2f} s, fastest {cpu_s['fastest']:.2f} s, "
          f"ratio {cpu_s['qrun'] / cpu_s['fastest']:.3f}; load average at start {load_start}")
    figures = {
        "benchmark": "overhead_aer",
        "qrun_s": round(wall["qrun"], 3),
        "fastest_s": round(wall["fastest"], 3),
        "ratio": round(ratio, 3),
        "plain_s": round(wall["docs"], 3) if "docs" in wall else None,
        "docs_ratio": round(wall["qrun"] / wall["docs"], 3) if "docs" in wall else None,
        "circuits": args.circuits,
        "shots": args.shots,
        "rounds": len(times["qrun"]),
        "qrun_cpu_s": round(cpu_s["qrun"], 3),
        "fastest_cpu_s": round(cpu_s["fastest"], 3),
        "plain_cpu_s": round(cpu_s["docs"], 3) if "docs" in cpu_s else None,
        "cpu_ratio": round(cpu_s["qrun"] / cpu_s["fastest"], 3),
        **{f"{side}_runs_s": [round(t, 3) for t in values] for side, values in times.items()},
        "target_ratio": TARGET_RATIO,
        "ratio_to_target": round(ratio / TARGET_RATIO, 3),
        "workers": args.workers,
        "split": args.split,
        "loadavg_start": load_start,
        "loadavg_end": _common.load_average(),
        **_common.machine(),
    }
    _common.finish(root, figures, args.keep)


if __name__ == "__main__":
    main()
