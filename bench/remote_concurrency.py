"""How close qrun gets to the network's own limit when it drives a slow cloud in parallel.

The fake answers tasks at once with all-zero results (simulate=False), so the figure is
qrun's (and the Braket SDK's) handling of 1,000 remote jobs, not a simulator's speed.

1,000 jobs (braket.aws: one circuit per task) against the local fake Braket service with
50 ms added to every request, `max_parallel: 50`. The ideal is the latency alone: every
request the service received, 50 ms each, 50 at a time. The ratio is qrun's wall time for
`qrun apply` (the whole command) over that ideal. Target: <= 1.3.

    .venv/bin/python bench/remote_concurrency.py [--jobs 1000] [--latency 0.05] [--parallel 50]

Peer, same run: the same tasks through the Braket SDK's own AwsQuantumTaskBatch.
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
from qrun.providers.braket_aws.fake import FakeBraket  # noqa: E402

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
    # The fake checks programs with Braket's OpenQASM parser, whose first import costs a
    # second of CPU in this process: paid here, before either side is timed.
    import braket.default_simulator.openqasm.parser.openqasm_parser  # noqa: F401
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
    (scratch / "peer.py").write_text(PEER.format(url=url, jobs=args.jobs, parallel=args.parallel,
                                                  circuit=CIRCUIT))
    import subprocess

    def timed(command) -> tuple:
        fake.requests.clear()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{command[2]} failed:\n{done.stderr}")
        return time.perf_counter() - started, fake.total_requests

    wall, requests = timed([sys.executable, "-m", "qrun", "apply", str(scratch / "campaign.yaml"),
                            "--no-progress", "--state-dir", str(scratch / "state")])
    duplicates = sum(n - 1 for n in fake.accepted.values())
    peer_wall, peer_requests = timed([sys.executable, str(scratch / "peer.py")])
    fake.stop()
    ideal = requests * args.latency / args.parallel
    print(f"{args.jobs} jobs at {args.latency * 1000:.0f} ms per request, max_parallel {args.parallel}")
    print(f"qrun apply {wall:.2f} s for {requests} requests; ideal (latency alone) {ideal:.2f} s; "
          f"ratio {wall / ideal:.2f} (target <= 1.3); jobs accepted twice: {duplicates}")
    print(f"peer: the Braket SDK's AwsQuantumTaskBatch (max_parallel {args.parallel}) "
          f"{peer_wall:.2f} s for {peer_requests} requests; qrun / peer {wall / peer_wall:.2f}")
    print(json.dumps({"benchmark": "remote_concurrency", "jobs": args.jobs,
                      "latency_s": args.latency, "max_parallel": args.parallel,
                      "requests": requests, "requests_per_job": round(requests / args.jobs, 2),
                      "qrun_s": round(wall, 3), "ideal_s": round(ideal, 3),
                      "ratio": round(wall / ideal, 3), "target_ratio": 1.3,
                      "peer_s": round(peer_wall, 3), "peer_requests": peer_requests,
                      "ratio_to_peer": round(wall / peer_wall, 3),
                      "duplicates": duplicates, **machine()}))


# A peer script's AwsSession whose every client (Braket, S3) goes to the fake at {url}: the
# SDK's code unchanged, as qrun's own endpoint option does it.
AWS_SESSION_AT_FAKE = '''
import boto3
from braket.aws import AwsSession

class AtFake(boto3.Session):
    def client(self, *a, **k):
        k.setdefault("endpoint_url", "{url}")
        return super().client(*a, **k)
    def resource(self, *a, **k):
        k.setdefault("endpoint_url", "{url}")
        return super().resource(*a, **k)
boto_session = AtFake(region_name="us-east-1")
aws = AwsSession(boto_session=boto_session, braket_client=boto_session.client("braket"))
'''

# The peer: the same tasks through the Braket SDK's own batch runner, as its docs show it
# (a thread pool creating tasks, each polled until done, results read from S3).
PEER = AWS_SESSION_AT_FAKE + '''
from braket.aws import AwsQuantumTaskBatch
from braket.ir.openqasm import Program
from qrun.providers.braket_local import program as braket_program
from qrun.providers.braket_aws.devices import SV1_OPERATIONS
from qrun.sources.gate import parse_circuit

# The program as qrun writes it for SV1 (both sides send the same text).
sv1 = braket_program.Device("sv1", frozenset(SV1_OPERATIONS))
source = braket_program.translate(parse_circuit("qasm3", b"""{circuit}"""), sv1).source
programs = [Program(source=source, inputs={{"theta": 3.14159 * i / {jobs}}}) for i in range({jobs})]
batch = AwsQuantumTaskBatch(aws, "arn:aws:braket:::device/quantum-simulator/amazon/sv1", programs,
                            ("bench", "peer"), 100, max_parallel={parallel},
                            max_workers={parallel}, poll_interval_seconds=0.25)
results = batch.results()
assert len(results) == {jobs} and all(r is not None for r in results)
'''


if __name__ == "__main__":
    main()
