"""Braket program sets: what 1,000 experiments cost in tasks (task fees) and wall time.

1,000 experiments (one circuit swept over 1,000 angles) against the local fake Braket
service with 50 ms added to every request, its devices declaring program sets as a QPU
does (``--program-sets``: 100 executables, 200,000 shots a set). The fake answers every
executable with all-zero outcomes at once (simulate=False): the figures are the clients',
not a simulator's.

    .venv/bin/python bench/program_sets.py [--experiments 1000] [--latency 0.05]

Sides, measured in the same run, each as one command from start to exit:
  * qrun apply: jobs cut by the device's program-set action, one task each;
  * the Braket SDK's AwsQuantumTaskBatch (max_parallel 50): one task per circuit, the
    SDK's own way to send many (the issue's target: >= 20x fewer tasks, >= 10x less time);
  * the SDK's own program sets, written by hand (``ProgramSet`` of ``CircuitBinding``s,
    ``split`` to the device's maximumExecutables, ``AwsDevice.run`` per part, the results
    merged back): the strongest peer, what a skilled user writes once they know of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import clean_env, machine, scratch  # noqa: E402
from bench.remote_concurrency import AWS_SESSION_AT_FAKE, CIRCUIT, PEER  # noqa: E402
from qrun.providers.braket_aws.fake import FakeBraket  # noqa: E402

DEVICE = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"

# The SDK's program sets as its docs show them: one parametric circuit bound to its inputs,
# split into parts the device takes, each part run as one task.
HAND_WRITTEN = AWS_SESSION_AT_FAKE + '''
from braket.aws import AwsDevice
from braket.circuits import Circuit, FreeParameter
from braket.program_sets import CircuitBinding, ProgramSet
from braket.tasks import ProgramSetQuantumTaskResult

device = AwsDevice("{device}", aws_session=aws)
theta = FreeParameter("theta")
circuit = Circuit().rx(0, theta).cnot(0, 1)
program_set = ProgramSet(CircuitBinding(circuit, input_sets={{"theta": [3.14159 * i / {n} for i in range({n})]}}),
                         shots_per_executable=100)
limit = device.properties.action["braket.ir.openqasm.program_set"].maximumExecutables
parts, index_map = program_set.split(limit)
tasks = [device.run(part, s3_destination_folder=("bench", "hand")) for part in parts]
merged = ProgramSetQuantumTaskResult.merge([task.result() for task in tasks], program_set, index_map)
assert sum(len(entry) for entry in merged.entries) == {n}
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    n = args.experiments

    root = scratch("program-sets")
    (root / "rot.qasm").write_text(CIRCUIT)
    fake = FakeBraket(latency=args.latency, simulate=False, program_sets=True)
    url = fake.start()
    import braket.default_simulator.openqasm.parser.openqasm_parser  # noqa: F401 (paid before timing)
    (root / "campaign.yaml").write_text(f"""
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: program-sets-bench}}
spec:
  shots: 100
  circuits:
    - {{name: rot, source: rot.qasm, sweep: {{theta: {{linspace: [0, 3.14159, {n}]}}}}}}
  backends:
    - name: qpu
      provider: braket.aws
      device: {DEVICE}
      options: {{endpoint: "{url}"}}
""")
    (root / "batch.py").write_text(PEER.format(url=url, jobs=n, parallel=50, circuit=CIRCUIT))
    (root / "hand.py").write_text(HAND_WRITTEN.format(url=url, device=DEVICE, n=n))
    env = clean_env(root, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                    AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    import subprocess

    def side(command) -> tuple[float, int]:
        before = len(fake.tasks)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=root)
        if done.returncode != 0:
            sys.exit(f"{command} failed:\n{done.stderr}")
        return time.perf_counter() - started, len(fake.tasks) - before

    qrun_s, qrun_tasks = side([sys.executable, "-m", "qrun", "apply", str(root / "campaign.yaml"),
                               "--no-progress", "--state-dir", str(root / "state")])
    batch_s, batch_tasks = side([sys.executable, str(root / "batch.py")])
    hand_s, hand_tasks = side([sys.executable, str(root / "hand.py")])
    fake.stop()
    print(f"{n} experiments at {args.latency * 1000:.0f} ms per request, devices taking program sets")
    print(f"qrun apply {qrun_s:.2f} s, {qrun_tasks} tasks")
    print(f"AwsQuantumTaskBatch {batch_s:.2f} s, {batch_tasks} tasks: qrun makes "
          f"{batch_tasks / qrun_tasks:.0f}x fewer tasks (target >= 20) in "
          f"{batch_s / qrun_s:.1f}x less time (target >= 10)")
    print(f"the SDK's program sets by hand {hand_s:.2f} s, {hand_tasks} tasks: qrun / hand "
          f"{qrun_s / hand_s:.2f}")
    print(json.dumps({"benchmark": "program_sets", "experiments": n, "latency_s": args.latency,
                      "qrun_s": round(qrun_s, 3), "qrun_tasks": qrun_tasks,
                      "batch_s": round(batch_s, 3), "batch_tasks": batch_tasks,
                      "hand_s": round(hand_s, 3), "hand_tasks": hand_tasks,
                      "fewer_tasks": round(batch_tasks / qrun_tasks, 1),
                      "less_time": round(batch_s / qrun_s, 2),
                      "ratio_to_hand": round(qrun_s / hand_s, 3), **machine()}))


if __name__ == "__main__":
    main()
