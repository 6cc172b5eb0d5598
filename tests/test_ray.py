"""--executor ray: local simulation on a Ray cluster, the coordinator the only writer.

The cluster is a real Ray head started by the test on this machine (`ray start --head`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qrun.providers import faults

from .conftest import qrun, write

pytest.importorskip("ray")  # declared in the test extra; skipped only where Ray cannot install

RAY = str(Path(sys.executable).parent / "ray")
CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: NAME}
    spec:
      shots: 100
      seed: 5
      circuits:
        - {name: flip, source: circuits/flip.qasm}
        - {name: rot, source: circuits/rot.qasm, sweep: {theta: {linspace: [0, 3.14159, 12]}}}
      backends:
        - {name: aer, provider: qiskit.aer}
        - {name: sv, provider: braket.local, device: braket_sv}
      split: {max_experiments_per_job: 2}
      retry: {max_attempts: 3, backoff: {initial: 0.05s, max: 0.2s}}
"""
EXPERIMENTS = 2 * 13


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head on this machine, two CPUs, no dashboard, no usage reporting."""
    home = tmp_path_factory.mktemp("ray-home")
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _rows(manifest) -> list[dict]:
    exported = qrun("export", manifest, "-o", "-", "-f", "jsonl")
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def test_campaign_runs_on_the_ray_cluster(project, ray_cluster, _state_dir):
    manifest = write(project, "onray.yaml", CAMPAIGN.replace("NAME", "onray"))
    applied = qrun("apply", manifest, "--executor", "ray", env={"QRUN_RAY_ADDRESS": ray_cluster})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    rows = _rows(manifest)
    assert len(rows) == EXPERIMENTS and all(r["state"] == "done" for r in rows)
    assert all(r["metadata"].get("ray_node") for r in rows), "every job ran as a Ray task"
    assert all(r["counts"] == {"100": 100} for r in rows if r["circuit"] == "flip")
    # The coordinator wrote everything once: one result per experiment, one attempt per job.
    with sqlite3.connect(_state_dir / "onray.sqlite") as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT experiment) FROM results").fetchone() \
            == (EXPERIMENTS, EXPERIMENTS)
        jobs, attempts = conn.execute("SELECT count(*), sum(attempts) FROM jobs").fetchone()
    assert attempts == jobs
    # Done is done, whichever executor ran it.
    again = qrun("apply", manifest)
    assert again.returncode == 0 and "0 experiments run" in again.stdout


@pytest.mark.slow  # suite budget: the Ray campaign runs in CI
def test_faults_and_retries_behave_on_ray_as_on_local_workers(project, ray_cluster, _state_dir):
    manifest = write(project, "rayfaults.yaml", CAMPAIGN.replace("NAME", "rayfaults"))
    env = {"QRUN_RAY_ADDRESS": ray_cluster, faults.ENV: "transient=0.3,permanent=0.3,seed=2",
           "COLUMNS": "300"}
    applied = qrun("apply", manifest, "--executor", "ray", env=env)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    rows = _rows(manifest)
    failed = [r for r in rows if r["state"] == "failed"]
    assert failed and len(failed) < EXPERIMENTS
    assert all(faults.PERMANENT_ERROR in r["error"] for r in failed)
    assert faults.PERMANENT_ERROR in applied.stderr
    fixed = qrun("retry", manifest, "--executor", "ray", env={"QRUN_RAY_ADDRESS": ray_cluster})
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert all(r["state"] == "done" for r in _rows(manifest))


def test_no_cluster_at_the_address_is_a_clear_error(project, _state_dir):
    manifest = write(project, "nocluster.yaml", CAMPAIGN.replace("NAME", "nocluster"))
    applied = qrun("apply", manifest, "--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}",
                   timeout=60)
    assert applied.returncode == 2 and "Traceback" not in applied.stderr
    assert "no Ray cluster answers at 127.0.0.1:" in applied.stderr
