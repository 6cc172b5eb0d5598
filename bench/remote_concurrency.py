"""How close qrun gets to the network's own limit when it drives a slow cloud in parallel.

The fake answers tasks at once with all-zero results (simulate=False), so the figure is
qrun's (and the Braket SDK's) handling of 1,000 remote jobs, not a simulator's speed.

1,000 jobs (braket.aws: one circuit per task) against the local fake Braket service with
50 ms added to every request, `max_parallel: 50`. The ideal is the latency alone: every
request the service received, 50 ms each, 50 at a time. The ratio is qrun's wall time for
`qrun apply` (the whole command) over that ideal. Target: <= 1.3.

    .venv/bin/python bench/remote_concurrency.py [--jobs 1000] [--latency 0.05] [--parallel 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import machine  # noqa: E402
from qrun.fakes.braket_aws import FakeBraket  # noqa: E402

CIRCUIT = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=50)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="qrun-bench-remote-"))
    (scratch / "rot.qasm").write_text(CIRCUIT)
    fake = FakeBraket(latency=args.latency, simulate=False)  # measure qrun, not a simulator
    url = fake.start()
    (scratch / "campaign.yaml").write_text(f"""
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: remote-bench}}
spec:
  shots: 100
  circuits:
    - {{name: rot, source: rot.qasm, sweep: {{theta: {{linspace: [0, 3.14159, {args.jobs}]}}}}}}
  backends:
    - name: sv1
      provider: braket.aws
      device: arn:aws:braket:::device/quantum-simulator/amazon/sv1
      options: {{endpoint: "{url}"}}
      limits: {{max_parallel: {args.parallel}}}
""")
    env = {**os.environ, "HOME": str(scratch), "MPLCONFIGDIR": str(scratch / "mpl"),
           "XDG_DATA_HOME": str(scratch / "data"), "XDG_CACHE_HOME": str(scratch / "cache"),
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    import subprocess

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qrun", "apply", str(scratch / "campaign.yaml"),
                           "--no-progress", "--state-dir", str(scratch / "state")],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    fake.stop()
    if done.returncode != 0:
        sys.exit(f"qrun apply failed:\n{done.stderr}")
    requests = fake.requests
    ideal = requests * args.latency / args.parallel
    duplicates = sum(n - 1 for n in fake.accepted.values())
    print(f"{args.jobs} jobs, {requests} requests at {args.latency * 1000:.0f} ms, "
          f"max_parallel {args.parallel}")
    print(f"qrun apply {wall:.2f} s; ideal (latency alone) {ideal:.2f} s; "
          f"ratio {wall / ideal:.2f} (target <= 1.3); jobs accepted twice: {duplicates}")
    print(json.dumps({"benchmark": "remote_concurrency", "jobs": args.jobs,
                      "latency_s": args.latency, "max_parallel": args.parallel,
                      "requests": requests, "requests_per_job": round(requests / args.jobs, 2),
                      "qrun_s": round(wall, 3), "ideal_s": round(ideal, 3),
                      "ratio": round(wall / ideal, 3), "target_ratio": 1.3,
                      "duplicates": duplicates, **machine()}))


if __name__ == "__main__":
    main()
