"""Kill qrun in the middle of a campaign; the next apply must finish it without redoing work."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from qrun import store
from qrun.errors import StateError

from .conftest import write

CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: crash}
    spec:
      shots: 100
      seed: 1
      circuits:
        - name: rot
          source: circuits/rot.qasm
          sweep: {theta: {linspace: [0, 3.14159, 240]}}
      backends: [{name: aer, provider: qiskit.aer}]
      split: {max_experiments_per_job: 1}
"""


def _start_apply(manifest) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qrun", "apply", str(manifest), "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _done_count(db) -> int:
    if not db.exists():
        return 0
    try:
        with store.read(db) as state:
            return len(state.results())
    except StateError:  # tables not created yet
        return 0


def _wait_for_results(process, db, at_least: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _done_count(db) < at_least:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "campaign made no progress"
        time.sleep(0.05)


def _finish(process) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _kill_group(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def campaign(project, _state_dir):
    manifest = write(project, "crash.yaml", CAMPAIGN)
    return manifest, _state_dir / "crash.sqlite"


def test_sigkill_then_resume_runs_each_experiment_once(campaign):
    manifest, db = campaign
    process = _start_apply(manifest)
    try:
        _wait_for_results(process, db, at_least=40)
        process.send_signal(signal.SIGKILL)  # the coordinator only, as a crash would
        process.wait(timeout=30)
    finally:
        _kill_group(process)  # orphaned workers, if any
    with store.read(db) as state:
        done_at_kill = {r.experiment: r.completed_at for r in state.results()}
    assert 40 <= len(done_at_kill) < 240, "the kill must land in the middle of the campaign"

    resumed = _finish(_start_apply(manifest))
    assert resumed.returncode == 0, resumed.stderr

    with sqlite3.connect(db) as conn:
        results = dict(conn.execute("SELECT experiment, completed_at FROM results"))
        assert len(results) == 240
        assert conn.execute("SELECT count(*) FROM experiments WHERE state != 'done'").fetchone()[0] == 0
        # Finished work was not run again: same result rows, no attempt in the second apply.
        assert all(results[key] == stamp for key, stamp in done_at_kill.items())
        second_apply = conn.execute("SELECT max(id) FROM applies").fetchone()[0]
        rerun = conn.execute(
            f"""SELECT count(*) FROM attempts a JOIN slices s ON s.job_id = a.job_id
                WHERE a.apply_id = ? AND s.experiment IN ({','.join('?' * len(done_at_kill))})""",
            (second_apply, *done_at_kill)).fetchone()[0]
        assert rerun == 0
        # Every job has exactly one successful attempt.
        per_job = conn.execute("SELECT job_id, count(*) FROM attempts WHERE state='done' "
                               "GROUP BY job_id").fetchall()
        assert len(per_job) == 240 and {n for _, n in per_job} == {1}
        # The lock of the killed process was taken over, and that was logged.
        assert conn.execute("SELECT count(*) FROM events WHERE entity='lock' "
                            "AND state='taken-over'").fetchone()[0] == 1


def test_ctrl_c_checkpoints_and_exits_130(campaign):
    manifest, db = campaign
    process = _start_apply(manifest)
    try:
        _wait_for_results(process, db, at_least=20)
        process.send_signal(signal.SIGINT)
        interrupted = _finish(process)
    finally:
        _kill_group(process)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert "resume" in interrupted.stderr
    with store.read(db) as state:
        done = len(state.results())
        running = len(state.jobs(state="running"))
        assert state.applies()[0].outcome == "interrupted"
        assert state.locks() == []
    assert 20 <= done < 240
    assert running == 0, "a graceful stop leaves no job marked running"

    resumed = _finish(_start_apply(manifest))
    assert resumed.returncode == 0, resumed.stderr
    with store.read(db) as state:
        assert len(state.results()) == 240
