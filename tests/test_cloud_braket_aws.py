"""braket.aws through the real Braket SDK (boto3) against the local fake Braket service."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from qrun.fakes.braket_aws import FakeBraket

from .conftest import kill_after_more_accepted, qrun, write

SECRET = "s3cr3t-AKIA-planted-9f8e7d"
DEVICE = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"


@pytest.fixture
def aws_env(monkeypatch):
    # boto3 signs requests with these; the fake does not check them. The secret key is a
    # planted secret that must never show up in anything qrun writes or prints.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _campaign(project, url: str, thetas: int = 4, extra: str = "") -> object:
    return write(project, "cloud.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: cloud}}
        spec:
          shots: 200
          circuits:
            - {{name: ghz, source: circuits/ghz.qasm}}
            - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: {{linspace: [0, 3.14159, {thetas}]}}}}}}
          backends:
            - name: sv1
              provider: braket.aws
              device: {DEVICE}
              options: {{endpoint: "{url}", s3_bucket: results-bucket}}
              {extra}
          retry: {{max_attempts: 3, backoff: {{initial: 0.05s, max: 0.2s}}}}
          export: [{{path: out/cloud.jsonl}}]
    """)


@pytest.fixture
def fake():
    service = FakeBraket()
    yield service
    service.stop()


def _rows(manifest):
    return [json.loads(x) for x in qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]


def test_campaign_runs_on_braket_through_the_sdk(project, fake, aws_env, _state_dir):
    manifest = _campaign(project, fake.start())
    result = qrun("apply", manifest)
    assert result.returncode == 0, result.stderr
    rows = _rows(manifest)
    assert len(rows) == 5 and all(r["state"] == "done" for r in rows)
    ghz = next(r for r in rows if r["circuit"] == "ghz")
    assert set(ghz["counts"]) == {"000", "111"}
    assert all(len(r["remote_ids"]) == 1 and r["remote_ids"][0].startswith("arn:aws:braket")
               for r in rows)
    assert sorted(fake.accepted.values()) == [1] * 5
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert {j["provider_state"] for j in status["remote_jobs"]} <= {None, "COMPLETED", "QUEUED", "RUNNING"}
    assert {j["remote_id"] for j in status["remote_jobs"]} == {r["remote_ids"][0] for r in rows}
    assert qrun("apply", manifest).returncode == 0  # nothing new is sent
    assert sum(fake.accepted.values()) == 5


def test_transient_faults_and_lost_answers_never_double_submit(project, aws_env):
    fake = FakeBraket(error_rate=0.3, lose_after_accept=0.4, seed=3)
    try:
        manifest = _campaign(project, fake.start(), thetas=8)
        result = qrun("apply", manifest)
        assert result.returncode == 0, result.stderr
        assert len(fake.accepted) == 9 and set(fake.accepted.values()) == {1}
        assert all(r["state"] == "done" for r in _rows(manifest))
    finally:
        fake.stop()


def test_failed_jobs_report_the_provider_reason_then_retry(project, aws_env):
    fake = FakeBraket(fail_jobs=0.5, seed=4)
    try:
        manifest = _campaign(project, fake.start(), thetas=10)
        result = qrun("apply", manifest)
        assert result.returncode == 1
        assert "injected: the device failed this task" in result.stderr
        rows = _rows(manifest)
        failed = [r for r in rows if r["state"] == "failed"]
        assert failed and len(failed) < len(rows), "some tasks fail, the rest complete"
        fake.faults.fail_jobs = 0.0  # the cause is removed
        retried = qrun("retry", manifest)
        assert retried.returncode == 0, retried.stderr
        assert all(r["state"] == "done" for r in _rows(manifest))
        assert len(fake.accepted) == len(rows) + len(failed)  # only the failed ones again
        assert set(fake.accepted.values()) == {1}
    finally:
        fake.stop()


def test_timeout_cancels_the_remote_task(project, aws_env):
    fake = FakeBraket(stall=True)
    try:
        manifest = _campaign(project, fake.start(), thetas=1, extra="timeout: 1s")
        result = qrun("apply", manifest)
        assert result.returncode == 1
        assert "timed out after 1 s" in result.stderr
        assert {t.status for t in fake.tasks.values()} == {"CANCELLED"}
    finally:
        fake.stop()


def test_cancel_cancels_at_the_provider(project, aws_env, _state_dir):
    fake = FakeBraket(stall=True)
    try:
        manifest = _campaign(project, fake.start(), thetas=1)
        process = subprocess.Popen([sys.executable, "-m", "qrun", "apply", str(manifest)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(fake.tasks) < 2:
            assert time.time() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)  # Ctrl-C: submitted tasks stay with the provider
        assert process.wait(timeout=60) == 130
        cancelled = qrun("cancel", manifest)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled 2 remote" in cancelled.stdout
        assert {t.status for t in fake.tasks.values()} == {"CANCELLED"}
        status = json.loads(qrun("status", manifest, "-o", "json").stdout)
        assert status["experiments"]["failed"] == 2
    finally:
        fake.stop()


def _done(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_at_random_moments_never_pays_twice(project, aws_env, _state_dir):
    # Latency widens the window between the provider's accept and the handle's commit.
    fake = FakeBraket(latency=0.05, lose_after_accept=0.2, seed=7)
    rng = random.Random(11)
    try:
        manifest = _campaign(project, fake.start(), thetas=15)
        db = _state_dir / "cloud.sqlite"
        caught = []
        for _ in range(4):  # each run resumes the previous one's work and is killed in turn
            _, running = kill_after_more_accepted(manifest, lambda: len(fake.accepted), rng, most=4)
            caught.append(running and _done(db) < 16)
        assert any(caught), "the kills must land during the campaign"
        final = qrun("apply", manifest)
        assert final.returncode == 0, final.stderr
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 16
            assert conn.execute("SELECT count(*) FROM experiments WHERE state!='done'").fetchone()[0] == 0
        assert len(fake.accepted) == 16 and set(fake.accepted.values()) == {1}, fake.accepted
    finally:
        fake.stop()


def test_secrets_never_leave_the_environment(project, fake, aws_env, _state_dir):
    manifest = _campaign(project, fake.start())
    outputs = [qrun("apply", manifest), qrun("status", manifest), qrun("status", manifest, "-o", "json"),
               qrun("export", manifest, "-o", "-", "-f", "csv")]
    for output in outputs:
        assert SECRET not in output.stdout + output.stderr
    for path in [_state_dir / "cloud.sqlite", project / "out/cloud.jsonl",
                 *_state_dir.glob("cloud.sqlite-*")]:
        assert SECRET.encode() not in path.read_bytes()


def test_unreachable_service_is_left_for_the_next_apply(project, aws_env, _state_dir):
    down = FakeBraket()
    url = down.start()
    down.stop()  # nothing listens there now: every call fails to connect
    manifest = _campaign(project, url, thetas=1)
    started = time.time()
    result = qrun("apply", manifest)
    assert result.returncode == 1 and time.time() - started < 120
    with sqlite3.connect(_state_dir / "cloud.sqlite") as conn:
        states = {s for (s,) in conn.execute("SELECT state FROM jobs")}
        errors = [e for (e,) in conn.execute("SELECT error FROM jobs")]
    assert states == {"submitting"}, "outcome unknown: kept for reconciliation"
    assert all("left for the next apply" in e for e in errors)
    back = FakeBraket()
    back.start(int(url.rsplit(":", 1)[1]))  # the service returns at the same address
    try:
        assert qrun("apply", manifest).returncode == 0
        assert len(back.accepted) == 2 and set(back.accepted.values()) == {1}
    finally:
        back.stop()
