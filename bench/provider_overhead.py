"""qrun's overhead on every local provider: `qrun apply` against each SDK called directly.

For each provider, N small experiments, written once into a scratch folder:

  qiskit.aer        N seeded random circuits (5 qubits, 10 layers of h/x/rx/ry/rz/cx, all
                    measured), standard OpenQASM 3 files. Plain: qiskit.qasm3.load each file,
                    then batches of --batch through transpile(batch, AerSimulator()) and
                    sim.run(batch, shots, seed_simulator).result().
  qiskit.ibm-local  the same circuits on fake_manila. Plain: FakeManilaV2(), ONE
                    generate_preset_pass_manager(optimization_level=1, backend, seed_transpiler)
                    and pm.run(circuits), then batches of --batch through
                    executor_sampler.Sampler(mode=backend).run(pubs, shots) (seed_simulator set).
  braket.local      the same circuits on braket_sv. qrun reads the standard OpenQASM 3 files;
                    the plain script reads the same circuits written in Braket's dialect (no
                    stdgates.inc, `cnot`), as braket.ir.openqasm.Program, then batches of
                    --batch through LocalSimulator("braket_sv").run_batch(programs, shots)
                    .results() (each run_batch runs its tasks in a pool of cpu_count() processes).
  pulser.local      examples' Rabi sequence (abstract repr, `duration` int variable) swept over
                    N durations. Plain: Sequence.from_abstract_repr once, then per duration
                    seq.build(duration=d) and QutipBackendV2(built, config=QutipConfig(
                    observables=[BitStrings(num_shots=shots)])).run().final_bitstrings.
  perceval.local    examples' Mach-Zehnder interferometer (.pcvl, parameter phi), input |1,0>,
                    swept over N phases. Plain: perceval.serialization.deserialize the file,
                    pcvl.Experiment(circuit).with_input(...), one SimulatedComputer("SLOS"), and
                    per phase: set phi, ExecutionFactory(computer, experiment)
                    .sample_count(max_samples=shots).

Both sides run as fresh subprocesses (interpreter start and imports paid by both), qrun as
`qrun apply M.yaml --no-progress` with a fresh state folder (validation, plan in SQLite,
worker pool, results committed, lock, provenance), timed whole. Per provider: an untimed
warm-up on 2 experiments for both sides, then rounds in alternating order (qrun first in odd
rounds, plain first in even ones) while the provider's time budget allows, medians taken.
After the first round, qrun's counts are exported (untimed) and compared with the plain
script's, experiment by experiment (mean total variation distance, next to the distance two
independent samples of the plain script's distribution would have), so a side that computes
something else shows.

Prints a table, then ONE JSON line (last):
  {"benchmark": "provider_overhead", "providers": {"qiskit.aer": {"qrun_s", "sdk_s",
   "overhead_ms_per_experiment", "ratio", "experiments", ...}, ...}, ...}

    .venv/bin/python bench/provider_overhead.py                         # defaults, ~5 min
    .venv/bin/python bench/provider_overhead.py --gate 20 --pulser 5 --perceval 20 --repeats 1
    .venv/bin/python bench/provider_overhead.py --only braket.local,perceval.local
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import textwrap
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _circuits  # noqa: E402  (bench/_circuits.py, beside this script)
import _common  # noqa: E402

PROVIDERS = ("qiskit.aer", "qiskit.ibm-local", "braket.local", "pulser.local", "perceval.local")
EXAMPLES = _common.REPO / "examples" / "circuits"

# One script for every SDK; it imports only the SDK it is asked for. It reads a spec (files,
# parameter values, shots, seed) written by the benchmark and writes counts, SDK-native keys.
PLAIN_SCRIPT = textwrap.dedent('''
    """Each SDK called directly, the way its documentation shows it."""
    import json
    import sys
    from pathlib import Path

    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    provider, shots, seed, batch = spec["provider"], spec["shots"], spec["seed"], spec["batch"]
    counts = []

    if provider == "qiskit.aer":
        import qiskit.qasm3
        from qiskit import transpile
        from qiskit_aer import AerSimulator

        circuits = [qiskit.qasm3.load(f) for f in spec["files"]]
        sim = AerSimulator()
        for start in range(0, len(circuits), batch):
            compiled = transpile(circuits[start:start + batch], sim)
            result = sim.run(compiled, shots=shots, seed_simulator=seed).result()
            got = result.get_counts()
            counts.extend(got if isinstance(got, list) else [got])

    elif provider == "qiskit.ibm-local":
        import qiskit.qasm3
        from qiskit.transpiler import generate_preset_pass_manager
        from qiskit_ibm_runtime.executor_sampler import Sampler
        from qiskit_ibm_runtime.fake_provider import FakeManilaV2

        backend = FakeManilaV2()
        circuits = [qiskit.qasm3.load(f) for f in spec["files"]]
        pm = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=seed)
        isa = pm.run(circuits)
        sampler = Sampler(mode=backend)
        sampler.options.simulator.seed_simulator = seed
        for start in range(0, len(isa), batch):
            result = sampler.run(isa[start:start + batch], shots=shots).result()
            counts.extend(pub.join_data().get_counts() for pub in result)

    elif provider == "braket.local":
        from braket.devices import LocalSimulator
        from braket.ir.openqasm import Program

        programs = [Program(source=Path(f).read_text()) for f in spec["files"]]
        device = LocalSimulator("braket_sv")
        for start in range(0, len(programs), batch):
            tasks = device.run_batch(programs[start:start + batch], shots=shots)
            counts.extend(dict(r.measurement_counts) for r in tasks.results())

    elif provider == "pulser.local":
        import numpy as np
        from pulser import Sequence
        from pulser.backend import BitStrings
        from pulser_simulation import QutipBackendV2, QutipConfig

        sequence = Sequence.from_abstract_repr(Path(spec["files"][0]).read_text())
        np.random.seed(seed)
        for value in spec["values"]:
            built = sequence.build(duration=int(value))
            config = QutipConfig(observables=[BitStrings(num_shots=shots)])
            result = QutipBackendV2(built, config=config).run()
            counts.append({k: int(n) for k, n in result.final_bitstrings.items()})

    elif provider == "perceval.local":
        import perceval as pcvl
        from perceval.serialization import deserialize

        circuit = deserialize(Path(spec["files"][0]).read_text().strip())
        experiment = pcvl.Experiment(circuit)
        experiment.with_input(pcvl.BasicState(spec["input"]))
        phi = experiment.get_circuit_parameters()["phi"]
        computer = pcvl.SimulatedComputer("SLOS")
        pcvl.random_seed(seed)
        with computer.acquire():
            for value in spec["values"]:
                phi.set_value(value)
                result = pcvl.ExecutionFactory(computer, experiment).sample_count(max_samples=shots)
                counts.append({str(s): int(n) for s, n in result["results"].items()})

    out.write_text(json.dumps(counts))
    print(len(counts), "experiments run")
''')


class Workload:
    """One provider's experiments: qrun's manifest and the plain script's spec, in ``folder``."""

    def __init__(self, provider: str, folder: Path, args, count: int):
        self.provider, self.folder, self.count = provider, folder, count
        self.name = "po-" + provider.replace(".", "-")
        self.shots = args.pulser_shots if provider == "pulser.local" else args.shots
        self.seed = args.seed
        folder.mkdir(parents=True)
        spec = {"provider": provider, "shots": self.shots, "seed": args.seed,
                "batch": args.batch or count}
        if provider in ("qiskit.aer", "qiskit.ibm-local", "braket.local"):
            self.sweep = None
            spec.update(self._gate_model(args))
        elif provider == "pulser.local":
            # 100, 120, 140, ... ns: whole multiples of Pulser's 4 ns clock period.
            self.sweep = ("duration", [100 + 20 * i for i in range(count)])
            shutil.copy(EXAMPLES / "rabi.json", folder / "rabi.json")
            spec.update(files=[str(folder / "rabi.json")], values=self.sweep[1])
            self._manifest("atoms", "pulser.local", None,
                           ["    - name: rabi", "      source: rabi.json",
                            f"      sweep: {{duration: {{values: {self.sweep[1]}}}}}"])
        else:
            values = [round(math.pi * i / max(1, count - 1), 9) for i in range(count)]
            self.sweep = ("phi", values)
            shutil.copy(EXAMPLES / "mach-zehnder.pcvl", folder / "mzi.pcvl")
            spec.update(files=[str(folder / "mzi.pcvl")], values=values, input="|1,0>")
            self._manifest("photons", "perceval.local", "SLOS",
                           ["    - name: mzi", "      source: mzi.pcvl", '      input: "|1,0>"',
                            f"      sweep: {{phi: {{values: {values}}}}}"])
        self.spec = folder / "spec.json"
        self.spec.write_text(json.dumps(spec))

    def _gate_model(self, args) -> dict:
        ops_list = _circuits.circuits(self.count, args.qubits, args.depth, args.seed)
        (self.folder / "circuits").mkdir()
        dialect = "braket" if self.provider == "braket.local" else "std"
        plain_folder = self.folder / ("circuits" if dialect == "std" else dialect)
        plain_folder.mkdir(exist_ok=True)
        names, plain_files = [], []
        for i, ops in enumerate(ops_list):
            name = f"c{i:05d}"
            names.append(name)
            (self.folder / "circuits" / f"{name}.qasm").write_text(_circuits.qasm3(ops, args.qubits))
            plain = plain_folder / f"{name}.qasm"
            if dialect != "std":
                plain.write_text(_circuits.qasm3(ops, args.qubits, dialect))
            plain_files.append(str(plain))
        self.names = names
        backend = {"qiskit.aer": ("aer", "qiskit.aer", None),
                   "qiskit.ibm-local": ("manila", "qiskit.ibm-local", "fake_manila"),
                   "braket.local": ("sv", "braket.local", "braket_sv")}[self.provider]
        self._manifest(*backend, [f"    - {{name: {n}, source: circuits/{n}.qasm}}" for n in names])
        return {"files": plain_files}

    def _manifest(self, backend: str, provider: str, device: str | None, circuits: list) -> None:
        device_text = f", device: {device}" if device else ""
        lines = ["apiVersion: qrun/v1", "kind: Campaign", f"metadata: {{name: {self.name}}}",
                 "spec:", f"  shots: {self.shots}", f"  seed: {self.seed}", "  backends:",
                 f"    - {{name: {backend}, provider: {provider}{device_text}}}", "  circuits:"]
        self.manifest = self.folder / "campaign.yaml"
        self.manifest.write_text("\n".join(lines + circuits) + "\n")

    def normalized(self, counts: dict) -> dict:
        """SDK-native outcome keys in qrun's convention (Qiskit prints bit 0 rightmost)."""
        if self.provider.startswith("qiskit."):
            return {_circuits_key(k): v for k, v in counts.items()}
        return counts

    def label_of_row(self, row: dict):
        if self.sweep is None:
            return row["circuit"]
        return round(float(row["params"][self.sweep[0]]), 6)

    def labels(self) -> list:
        return list(self.names) if self.sweep is None else [round(float(v), 6) for v in self.sweep[1]]


def _circuits_key(key: str) -> str:
    return key.replace(" ", "")[::-1]


def expected_tvd(counts: dict, shots: int) -> float:
    """Mean distance between two independent samples of ``counts``' distribution, `shots` each.

    For each outcome, |X - Y| / shots of two binomial draws has mean about
    sqrt(4 p (1 - p) / (pi shots)); half their sum is the expected total variation distance.
    """
    total = sum(counts.values()) or 1
    return 0.5 * sum(math.sqrt(4 * (n / total) * (1 - n / total) / (math.pi * shots))
                     for n in counts.values())


def compare(work: Workload, qrun_rows: list, plain: list) -> dict:
    by_label = {work.label_of_row(row): row["counts"] for row in qrun_rows}
    tvds, floors = [], []
    for label, counts in zip(work.labels(), plain):
        counts = work.normalized(counts)
        if label in by_label and by_label[label]:
            tvds.append(_circuits.total_variation(by_label[label], counts))
            floors.append(expected_tvd(counts, work.shots))
    tvd = sum(tvds) / max(1, len(tvds))
    floor = sum(floors) / max(1, len(floors))
    return {"tvd": round(tvd, 4), "tvd_noise": round(floor, 4), "compared": len(tvds),
            "agree": len(tvds) == work.count and tvd <= 1.5 * floor + 0.02}


def measure(work: Workload, args, root: Path, env: dict, script: Path) -> dict:
    qrun_times, plain_times, qrun_cpu, plain_cpu, check = [], [], [], [], {}

    def run_qrun(round_: int) -> None:
        state = work.folder / f"state-{round_}"
        run = _common.measured(_common.qrun_command() + ["apply", str(work.manifest), "--no-progress",
                                                         "--state-dir", str(state)],
                               env, work.folder, tree_cpu=True)
        qrun_times.append(run.wall_s)
        qrun_cpu.append(run.cpu_s)
        stored = _common.stored_results(state / f"{work.name}.sqlite")
        if stored != work.count:
            raise SystemExit(f"{work.provider}: qrun stored {stored} results, expected {work.count}")
        if round_ == 0:
            out = work.folder / "qrun-export.jsonl"
            _common.timed(_common.qrun_command() + ["export", str(work.manifest), "-o", str(out),
                                                    "-f", "jsonl", "--state-dir", str(state)],
                          env, work.folder)
            check["qrun"] = [json.loads(line) for line in out.read_text().splitlines() if line]

    def run_plain(round_: int) -> None:
        out = work.folder / f"plain-{round_}.json"
        run = _common.measured([sys.executable, str(script), str(work.spec), str(out)], env, root,
                               tree_cpu=True)
        plain_times.append(run.wall_s)
        plain_cpu.append(run.cpu_s)
        got = json.loads(out.read_text())
        if len(got) != work.count:
            raise SystemExit(f"{work.provider}: plain script ran {len(got)}, expected {work.count}")
        if round_ == 0:
            check["plain"] = got

    def report(round_: int) -> None:
        print(f"    round {round_ + 1}: qrun apply {qrun_times[-1]:6.2f} s (CPU {qrun_cpu[-1]:6.2f})"
              f"   SDK script {plain_times[-1]:6.2f} s (CPU {plain_cpu[-1]:6.2f})", flush=True)

    _common.alternating_rounds(run_qrun, run_plain, args.repeats, args.budget, report)
    qrun_s, sdk_s = _common.median(qrun_times), _common.median(plain_times)
    qrun_c, sdk_c = _common.median(qrun_cpu), _common.median(plain_cpu)
    return {
        "experiments": work.count,
        "shots": work.shots,
        "qrun_s": round(qrun_s, 3),
        "sdk_s": round(sdk_s, 3),
        "overhead_ms_per_experiment": round(1000 * (qrun_s - sdk_s) / work.count, 2),
        "ratio": round(qrun_s / sdk_s, 3),
        "qrun_cpu_s": round(qrun_c, 3),
        "sdk_cpu_s": round(sdk_c, 3),
        "cpu_ratio": round(qrun_c / sdk_c, 3),
        "rounds": len(qrun_times),
        "qrun_runs_s": [round(t, 3) for t in qrun_times],
        "sdk_runs_s": [round(t, 3) for t in plain_times],
        **{f"results_{k}": v for k, v in compare(work, check["qrun"], check["plain"]).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gate", type=int, default=200,
                        help="experiments for qiskit.aer, qiskit.ibm-local and braket.local")
    parser.add_argument("--pulser", type=int, default=50, help="experiments for pulser.local")
    parser.add_argument("--perceval", type=int, default=200, help="experiments for perceval.local")
    parser.add_argument("--only", default="", help="comma-separated providers (default: all five)")
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--pulser-shots", type=int, default=500)
    parser.add_argument("--qubits", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch", type=int, default=100,
                        help="experiments per transpile/run, Sampler.run or run_batch call in the "
                             "gate-model plain scripts (0: all at once)")
    parser.add_argument("--repeats", type=int, default=3, help="at most this many rounds per provider")
    parser.add_argument("--budget", type=float, default=50.0,
                        help="seconds per provider: start another round only if it should end within this")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.only.split(",") if p.strip()] or list(PROVIDERS)
    unknown = set(chosen) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown providers: {', '.join(sorted(unknown))}; choose from {', '.join(PROVIDERS)}")

    root = _common.scratch("provider-overhead")
    env = _common.clean_env(root)
    origin = _common.qrun_origin(env, root)
    print(f"qrun: {origin['qrun_module']}" + (
        f" (repository at {origin['repo_commit']}{', qrun/ edited' if origin['repo_qrun_edited'] else ''})"
        if origin["qrun_from_repo"] else " (not the repository's: PYTHONPATH)"))
    script = root / "plain_sdk.py"
    script.write_text(PLAIN_SCRIPT)
    counts = {"pulser.local": args.pulser, "perceval.local": args.perceval}
    load_start = _common.load_average()
    started = time.perf_counter()
    figures: dict = {}
    for provider in chosen:
        count = counts.get(provider, args.gate)
        print(f"{provider}: {count} experiments, "
              f"{args.pulser_shots if provider == 'pulser.local' else args.shots} shots each", flush=True)
        # Untimed warm-up on 2 experiments, both sides (page cache, byte code, plugin caches).
        warm = Workload(provider, root / provider / "warmup", args, 2)
        _common.timed(_common.qrun_command() + ["apply", str(warm.manifest), "--no-progress",
                                                "--state-dir", str(warm.folder / "state")],
                      env, warm.folder)
        _common.timed([sys.executable, str(script), str(warm.spec), str(warm.folder / "out.json")],
                      env, root)
        work = Workload(provider, root / provider / "run", args, count)
        figures[provider] = measure(work, args, root, env, script)
        f = figures[provider]
        print(f"  median: qrun {f['qrun_s']:.2f} s, SDK {f['sdk_s']:.2f} s, ratio {f['ratio']:.2f}, "
              f"overhead {f['overhead_ms_per_experiment']:+.1f} ms per experiment; results "
              f"{'agree' if f['results_agree'] else 'DISAGREE'} (mean TVD {f['results_tvd']}, "
              f"sampling noise ~{f['results_tvd_noise']})", flush=True)

    print()
    print(f"{'provider':<18}{'N':>5}{'qrun s':>9}{'SDK s':>9}{'ratio':>7}{'ms/exp':>9}"
          f"{'CPU ratio':>11}  results")
    for provider, f in figures.items():
        print(f"{provider:<18}{f['experiments']:>5}{f['qrun_s']:>9.2f}{f['sdk_s']:>9.2f}"
              f"{f['ratio']:>7.2f}{f['overhead_ms_per_experiment']:>+9.1f}{f['cpu_ratio']:>11.2f}  "
              f"{'agree' if f['results_agree'] else 'DISAGREE'}")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s; load average at start {load_start}")
    _common.finish(root, {
        "benchmark": "provider_overhead",
        "providers": figures,
        "qubits": args.qubits,
        "depth": args.depth,
        "batch": args.batch,
        "total_s": round(total, 1),
        **origin,
        "loadavg_start": load_start,
        "loadavg_end": _common.load_average(),
        **_common.machine(),
    }, args.keep)


if __name__ == "__main__":
    main()
