"""qiskit.ibm batch mode: one Batch per campaign and device, kept across applies, closed once
nothing is left to send; a batch that stops taking jobs costs no job and no second job.

The real qiskit-ibm-runtime SDK against the fake IBM service (sessions as the Runtime API
keeps them: mode, accepting_jobs, state, max_ttl), driven through the CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time

import pytest

from . import clouds
from .conftest import qrun

pytestmark = pytest.mark.usefixtures("_state_dir")


@pytest.fixture
def ibm(monkeypatch):
    cloud = clouds.IBM()
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    yield cloud
    cloud.stop()


def _batches(fake) -> dict:
    """session id -> the tags of the jobs created in it (creation order)."""
    batches: dict = {sid: [] for sid in fake.sessions}
    for job in sorted(fake.jobs.values(), key=lambda j: j.number):
        batches.setdefault(job.session_id, []).append(job.tags[0])
    return batches


def _apply(manifest, code=0):
    applied = qrun("apply", manifest, "--no-progress")
    assert applied.returncode == code, applied.stdout + applied.stderr
    return applied


def test_the_apply_after_a_stop_sends_the_rest_into_the_same_batch(ibm, project, _state_dir):
    ibm.start()
    ibm.fake.quota_jobs = 2  # the period's quota stops the apply after two jobs
    manifest = ibm.campaign(project, "kept", points=5)  # 6 jobs
    _apply(manifest, code=1)
    (batch, first), = _batches(ibm.fake).items()
    assert len(first) == 2
    assert ibm.fake.sessions[batch]["accepting_jobs"] is True  # kept open: work is left
    ibm.fake.quota_jobs, ibm.fake.quota_spent = None, False  # the period renews
    _apply(manifest)
    assert clouds.experiment_states(_state_dir / "kept.sqlite") == {"done": 6}
    assert list(_batches(ibm.fake)) == [batch]  # no second batch
    assert len(_batches(ibm.fake)[batch]) == 6 and set(ibm.accepted().values()) == {1}
    session = ibm.fake.sessions[batch]
    assert session["mode"] == "batch" and session["accepting_jobs"] is False  # closed once all was sent
    assert ibm.fake.requests.get("DELETE /api/v1/sessions/{id}/close", 0) == 0  # never cancel()
    _apply(manifest)  # nothing to do: no batch opened, none closed
    assert len(ibm.fake.sessions) == 1 and ibm.fake.requests["PATCH /api/v1/sessions/{id}"] == 1


def test_a_batch_that_ended_between_applies_is_not_rejoined(ibm, project, _state_dir):
    ibm.start()
    ibm.fake.quota_jobs = 1
    manifest = ibm.campaign(project, "ended", points=2)  # 3 jobs
    _apply(manifest, code=1)
    (old,) = ibm.fake.sessions
    ibm.fake.expire_session(old)  # its maximum time ran out meanwhile
    ibm.fake.quota_jobs, ibm.fake.quota_spent = None, False
    posted = ibm.fake.requests["POST /api/v1/jobs"]
    _apply(manifest)
    assert clouds.experiment_states(_state_dir / "ended.sqlite") == {"done": 3}
    batches = _batches(ibm.fake)
    assert len(batches) == 2 and len(batches[old]) == 1
    (new,) = set(batches) - {old}
    assert len(batches[new]) == 2 and set(ibm.accepted().values()) == {1}
    # Read (Batch.from_id, details), never sent into: its record said it was closed.
    assert ibm.fake.requests["POST /api/v1/jobs"] - posted == 2
    assert ibm.fake.requests["GET /api/v1/sessions/{id}"] >= 1


def test_a_batch_ending_mid_apply_costs_no_job_and_no_second_job(ibm, project, _state_dir):
    ibm.start(run_time=0.2)
    manifest = ibm.campaign(project, "midway", points=6)  # 7 jobs
    stop = threading.Event()

    def expire_after_two_jobs():
        while not stop.is_set():
            if len(ibm.fake.jobs) >= 2:
                ibm.fake.expire_session(next(iter(ibm.fake.sessions)))
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=expire_after_two_jobs, daemon=True)
    watcher.start()
    try:
        _apply(manifest)
    finally:
        stop.set()
        watcher.join()
    assert clouds.experiment_states(_state_dir / "midway.sqlite") == {"done": 7}
    assert set(ibm.accepted().values()) == {1} and len(ibm.accepted()) == 7  # never twice
    batches = _batches(ibm.fake)
    assert len(batches) >= 2 and sum(map(len, batches.values())) == 7
    refused = ibm.fake.requests["POST /api/v1/jobs"] - 7  # turned away by the ended batch
    assert refused >= 1
    with clouds.read(_state_dir / "midway.sqlite") as state:
        assert all(job.attempts == 1 for job in state.jobs())  # the refusal was no attempt


def test_a_charge_pending_at_fetch_is_read_again_by_a_later_apply(ibm, project, _state_dir):
    """IBM settles a job's charge after its results: the apply that fetched them records it
    unknown (never 0, never a partial sum); a later apply reads it again and keeps it."""
    ibm.start(usage_pending_for=3600)
    manifest = ibm.campaign(project, "charged", points=1)  # 2 jobs
    _apply(manifest)

    def reported():
        status = qrun("status", manifest, "-o", "json")
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)["spend"]["backends"]
        return row["reported"], status

    pending, _ = reported()
    assert pending["seconds"] is None and pending["shots"] == 400 and pending["jobs"] == 2
    shown = qrun("status", manifest)
    assert "2 jobs' usage not settled" in shown.stdout, shown.stdout
    assert pending["unsettled"] == 2
    ibm.fake.usage_pending_for = 0  # the charges are final now
    metrics = ibm.fake.requests["GET /api/v1/jobs/{id}/metrics"]
    again = _apply(manifest)  # nothing to run: only the charges are read
    assert "0 experiments run" in again.stdout and len(ibm.accepted()) == 2
    final, _ = reported()
    charged = sum(job.charged_seconds for job in ibm.fake.jobs.values())
    assert final["seconds"] == pytest.approx(charged) and final["shots"] == 400
    assert final["unknown_for"] == {} and final["unsettled"] == 0
    asked = ibm.fake.requests["GET /api/v1/jobs/{id}/metrics"]
    assert asked > metrics  # read again (the SDK reads metrics for the usage and the properties)
    _apply(manifest)  # final: not asked again
    assert ibm.fake.requests["GET /api/v1/jobs/{id}/metrics"] == asked
    _spend_exports_agree(manifest, project, charged)


def _spend_exports_agree(manifest, project, charged) -> None:
    """`export --layout spend`: one row per backend, in every format, the provider's figures."""
    for fmt in ("jsonl", "csv", "parquet"):
        exported = qrun("export", manifest, "--layout", "spend", "-o", str(project / f"spend.{fmt}"))
        assert exported.returncode == 0, exported.stderr
    (row,) = [json.loads(line) for line in (project / "spend.jsonl").read_text().splitlines()]
    assert (row["backend"], row["provider"], row["device"]) == ("manila", "qiskit.ibm", "fake_manila")
    assert (row["tasks_sent"], row["shots_sent"], row["reported_jobs"]) == (2, 400, 2)
    assert row["reported_seconds"] == pytest.approx(charged) and row["unsettled_jobs"] == 0
    assert row["calibrations"] == 1 and row["latest_calibration"].endswith("Z")
    (csv_row,) = csv.DictReader(io.StringIO((project / "spend.csv").read_text()))
    assert float(csv_row["reported_seconds"]) == pytest.approx(charged)
    # Read in a process of its own: pyarrow beside Qiskit in one process is Qiskit#16925.
    read = subprocess.run([sys.executable, "-c", "import json, sys, pyarrow.parquet as pq; "
                           "print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))",
                           str(project / "spend.parquet")], capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    (parquet_row,) = json.loads(read.stdout)
    assert parquet_row == {**row, "unknown_for": None}
