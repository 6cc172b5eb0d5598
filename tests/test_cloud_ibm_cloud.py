"""qiskit.ibm: the real qiskit-ibm-runtime SDK against qrun's local fake of IBM Quantum
Platform (qrun.providers.ibm_cloud.fake), driven through the CLI as a user would.

Nothing here leaves 127.0.0.1: the adapter points the SDK's Runtime API, IAM, Global Search
and Global Catalog addresses at the fake (see qrun/backends/ibm_cloud.py)."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from qrun.providers.ibm_cloud.fake import FakeIBMQuantum

from .conftest import qrun, write

KEY_VARIABLE = "QRUN_TEST_IBM_API_KEY"
SECRET = "planted-ibm-key-" + "".join(random.choice("abcdefghjkmnpqrstuvwxyz23456789")
                                      for _ in range(24))

CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: NAME}
    spec:
      shots: 1000
      seed: 5
      circuits:
        - {name: ghz, source: circuits/ghz.qasm}
        - {name: flip, source: circuits/flip.qasm}
        - name: rot
          source: circuits/rot.qasm
          sweep: {theta: THETAS}
      backends:
        - name: manila
          provider: qiskit.ibm
          device: fake_manila
          options: {endpoint: URL}
          credentials: {env: QRUN_TEST_IBM_API_KEY}
          EXTRA
      split: {max_experiments_per_job: PER_JOB}
      retry: {max_attempts: 2, backoff: {initial: 200ms, max: 1s}}
      export: [{path: out/NAME.jsonl}]
"""


@pytest.fixture(autouse=True)
def _planted_key(monkeypatch):
    """The API key lives in an environment variable (subprocesses inherit it); the manifest
    names only the variable."""
    monkeypatch.setenv(KEY_VARIABLE, SECRET)


@pytest.fixture
def fake():
    """Start fakes on free ports; each is stopped at the end of the test."""
    started = []

    def start(**faults) -> FakeIBMQuantum:
        service = FakeIBMQuantum(credential=SECRET, backends=("fake_manila",), **faults)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def _manifest(project, service, name="ibm", thetas="[0.0, 3.14159]", per_job=2, extra=""):
    text = (CAMPAIGN.replace("NAME", name).replace("URL", service.url)
            .replace("THETAS", thetas).replace("PER_JOB", str(per_job))
            .replace("EXTRA", extra))
    return write(project, f"{name}.yaml", text)


def _rows(project, name) -> dict:
    lines = (project / f"out/{name}.jsonl").read_text().splitlines()
    return {(r["circuit"], json.dumps(r["params"])): r for r in map(json.loads, lines)}


def _check_physics(rows) -> None:
    """fake_manila's noise: mostly right, never perfect; qrun's bit order (bit 0 leftmost)."""
    ghz = rows[("ghz", "{}")]["counts"]
    assert sum(ghz.values()) == 1000
    assert ghz.get("000", 0) + ghz.get("111", 0) >= 800 and min(ghz["000"], ghz["111"]) >= 300
    flip = rows[("flip", "{}")]["counts"]  # x q[0]: classical bit 0 is 1
    assert flip.get("100", 0) >= 700 and max(flip, key=flip.get) == "100", flip
    assert rows[("rot", '{"theta": 0.0}')]["counts"].get("0", 0) >= 800
    assert rows[("rot", '{"theta": 3.14159}')]["counts"].get("1", 0) >= 800


def _outputs(*results) -> str:
    return "".join(r.stdout + r.stderr for r in results)


@pytest.mark.slow  # suite budget: test_cloud_contract's campaign runs on this fake in CI
def test_campaign_runs_on_the_fake_with_remote_ids_and_no_secret(project, fake, _state_dir):
    service = fake()
    manifest = _manifest(project, service)
    applied = qrun("apply", manifest)
    assert applied.returncode == 0, applied.stderr
    assert "4 experiments run" in applied.stdout
    rows = _rows(project, "ibm")
    _check_physics(rows)
    # Two jobs (two experiments each), each accepted once, under qrun's tag.
    assert len(service.accepted) == 2 and set(service.accepted.values()) == {1}
    assert all(tag.startswith("qrun-") for tag in service.accepted)
    remote_ids = {r["remote_ids"][0] if isinstance(r["remote_ids"], list) else r["remote_ids"]
                  for r in rows.values()}
    assert remote_ids == set(service.jobs), "the export names the provider's job ids"
    assert all(r["metadata"]["device"] == "fake_manila" and r["metadata"]["provider"] == "qiskit.ibm"
               for r in rows.values())
    # Batch mode: every job ran in a batch session that qrun closed behind it.
    assert all(service.sessions[j.session_id]["mode"] == "batch" for j in service.jobs.values())
    assert not any(s["accepting_jobs"] for s in service.sessions.values())

    status = qrun("status", manifest, "-o", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["experiments"]["done"] == 4
    assert {j["remote_id"] for j in report["remote_jobs"]} == set(service.jobs)
    assert {j["provider_state"] for j in report["remote_jobs"]} <= {"DONE", "QUEUED", "RUNNING", None}
    exported = qrun("export", manifest, "-o", "-", "-f", "csv")
    assert exported.returncode == 0 and all(job_id in exported.stdout for job_id in service.jobs)

    again = qrun("apply", manifest)  # nothing left to do: the provider is not asked again
    assert again.returncode == 0 and "0 experiments run, 4 cached" in again.stdout
    assert sum(service.accepted.values()) == 2

    # The planted key: sent to the fake's IAM, written nowhere.
    _assert_secret_absent(_state_dir, project, applied, status, exported, again)


def _assert_secret_absent(state_dir, project, *results) -> None:
    needle = SECRET.encode()
    files = [p for p in state_dir.rglob("*") if p.is_file()] + \
            [p for p in (project / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for path in files:  # database, WAL and shared-memory files, exports
        assert needle not in path.read_bytes(), f"the secret leaked into {path}"
    for db in state_dir.glob("*.sqlite"):
        with sqlite3.connect(db) as conn:
            events = conn.execute("SELECT * FROM events").fetchall()
            dump = "\n".join(conn.iterdump())
        assert events and SECRET not in repr(events) and SECRET not in dump
    assert SECRET not in _outputs(*results)


def test_adapter_contract_in_process(fake, monkeypatch):
    """The adapter's calls one by one: submit, find, poll, fetch, cancel, a bad circuit."""
    from qrun.providers.base import Task, TaskFailed
    from qrun.providers.ibm_cloud import adapter as ibm_cloud

    from .conftest import FLIP_FIRST, ROT3

    for variable in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(variable, raising=False)  # restored after the test
    monkeypatch.setattr(ibm_cloud, "_process_endpoint", [])
    service = fake(run_time=0.5)
    adapter = ibm_cloud.Adapter("fake_manila", {"endpoint": service.url}, {"env": KEY_VARIABLE})
    tasks = [Task("qasm3", FLIP_FIRST.encode(), 0, "flip", {}, 500),
             Task("qasm2", b"OPENQASM 2.0; this is not a circuit", 0, "bad", {}, 500),
             Task("qasm3", ROT3.encode(), 0, "rot", {"theta": 3.14159}, 500)]
    handle = adapter.submit(tasks, 1, "qrun-direct-1")
    assert adapter.find("qrun-direct-1") == handle and adapter.find("qrun-unknown-1") is None
    first = adapter.poll(handle)
    assert first.state in ("queued", "running") and not first.finished
    deadline = time.time() + 30
    while not (status := adapter.poll(handle)).finished:
        assert time.time() < deadline
        time.sleep(0.1)
    assert (status.state, status.provider_state) == ("done", "DONE")
    flip, bad, rot = adapter.fetch(handle, tasks)
    assert max(flip, key=flip.get) == "100" and sum(flip.values()) == 500
    assert isinstance(bad, TaskFailed) and "QASM" in bad.error.upper()
    assert rot.get("1", 0) >= 400
    # Re-attached by a fresh adapter (as after a crash): same counts from the service.
    again = ibm_cloud.Adapter("fake_manila", {"endpoint": service.url}, {"env": KEY_VARIABLE})
    assert again.fetch(handle, tasks)[0] == flip
    # Cancel: a queued job is cancelled; a finished one is left alone.
    stalled = adapter.submit(tasks[:1], 1, "qrun-direct-2")
    adapter.cancel(stalled)
    assert adapter.poll(stalled).state == "cancelled"
    adapter.cancel(handle)
    assert adapter.poll(handle).state == "done"
    assert adapter.metadata()["sdk"]["qiskit-ibm-runtime"].startswith("0.51")
    assert SECRET not in json.dumps(adapter.metadata())
    # The real service and a fake cannot share one process (the SDK reads IAM's address from
    # the environment): refused, before any key is sent anywhere.
    real = ibm_cloud.Adapter("ibm_brisbane", {}, {"env": KEY_VARIABLE})
    with pytest.raises(RuntimeError, match="several IBM endpoints"):
        real.find("qrun-direct-1")
    assert os.environ["IAM_URL"] == f"{service.url}/iam"


def test_wrong_key_is_a_deterministic_error(fake, monkeypatch):
    from qrun.providers.base import TransientBackendError
    from qrun.providers.ibm_cloud import adapter as ibm_cloud

    for variable in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(ibm_cloud, "_process_endpoint", [])
    service = fake()
    monkeypatch.setenv("QRUN_TEST_WRONG_KEY", "not-the-key")
    adapter = ibm_cloud.Adapter("fake_manila", {"endpoint": service.url}, {"env": "QRUN_TEST_WRONG_KEY"})
    with pytest.raises(Exception) as caught:
        adapter.find("qrun-x-1")
    assert not isinstance(caught.value, TransientBackendError)
    assert "not-the-key" not in str(caught.value)
    missing = ibm_cloud.Adapter("fake_manila", {"endpoint": service.url}, {"env": "QRUN_TEST_UNSET"})
    with pytest.raises(RuntimeError, match="QRUN_TEST_UNSET"):
        missing.find("qrun-x-1")


def test_a_failed_backend_listing_is_not_a_missing_backend(fake, monkeypatch):
    """qiskit-ibm-runtime's backends() swallows a failed listing (a 429 here: the SDK itself
    retries only 5xx) and says "No backend matches the criteria"; with 20 % faults that
    failed up to half a campaign for good. A backend is "not found" only when a clean
    listing lacks it; a listing that fails is transient."""
    from qiskit.providers.exceptions import QiskitBackendNotFoundError

    from qrun.providers.base import TransientBackendError
    from qrun.providers.ibm_cloud import adapter as ibm_cloud

    for variable in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(ibm_cloud, "_process_endpoint", [])
    monkeypatch.setattr(ibm_cloud.Adapter, "policy", replace(ibm_cloud.Adapter.policy, wait_max=0.05))
    service = fake()
    listing = "GET /api/v1/backends"

    def adapter(device="fake_manila"):
        return ibm_cloud.Adapter(device, {"endpoint": service.url}, {"env": KEY_VARIABLE})

    service.throttle_next[listing] = 2  # the listing fails, and so does the first check
    assert adapter().backend.name == "fake_manila"
    assert service.throttle_next[listing] == 0 and service.requests[listing] >= 3

    service.throttle_next[listing] = 1000  # the listing keeps failing: transient, never "not found"
    with pytest.raises(TransientBackendError, match="did not list its backends"):
        adapter().backend  # noqa: B018

    service.throttle_next[listing] = 0
    with pytest.raises(QiskitBackendNotFoundError, match="no backend 'ibm_nowhere'.*lists: fake_manila"):
        adapter("ibm_nowhere").backend  # noqa: B018


# -- account limits: wait for room (3458), stop cleanly on a spent quota (4317)


@pytest.fixture
def ibm(monkeypatch):
    from . import clouds

    cloud = clouds.IBM()
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "400")
    yield cloud
    cloud.stop()


def test_a_pending_job_limit_makes_jobs_wait_and_none_fails(ibm, project, _state_dir):
    from . import clouds

    ibm.start(max_pending_jobs=1, run_time=0.3)
    manifest = ibm.campaign(project, "limited", points=7)  # 8 jobs, one in flight at a time
    applied = qrun("apply", manifest, "--no-progress")
    output = applied.stdout + applied.stderr
    assert applied.returncode == 0, output
    turned_away = ibm.fake.injected["3458"]
    assert turned_away >= 20, ibm.fake.injected  # the service said "no room" that often
    assert clouds.experiment_states(_state_dir / "limited.sqlite") == {"done": 8}
    assert set(ibm.accepted().values()) == {1} and len(ibm.accepted()) == 8  # never a second job
    assert "waited for room at the provider" in output and "3458" in output, output
    with clouds.read(_state_dir / "limited.sqlite") as state:
        refused = [a for a in state.attempts() if a.tag_state == "absent"]
        assert len(refused) == turned_away  # each turned-away attempt is known absent
        assert all(job.attempts == 1 for job in state.jobs())  # none counted against the retry policy


def test_a_spent_quota_stops_submitting_and_a_later_apply_finishes(ibm, project, _state_dir):
    from . import clouds

    ibm.start()
    ibm.fake.quota_spent = True
    manifest = ibm.campaign(project, "spent", points=2)
    applied = qrun("apply", manifest, "--no-progress")
    output = applied.stdout + applied.stderr
    assert applied.returncode == 1, output
    assert "the quota is spent" in output and "4317" in output, output
    # Refused at most once per job already on its way when the first answer came; no job
    # was sent after it.
    assert not ibm.accepted() and 1 <= ibm.fake.injected["4317"] <= 3
    assert ibm.fake.requests["POST /api/v1/jobs"] == ibm.fake.injected["4317"]
    db = _state_dir / "spent.sqlite"
    assert clouds.experiment_states(db) == {"pending": 3}  # nothing failed for it
    ibm.fake.quota_spent = False  # the period renews
    again = qrun("apply", manifest, "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    assert clouds.experiment_states(db) == {"done": 3}
    assert set(ibm.accepted().values()) == {1}


# -- what IBM reports of a done job: its usage (metrics) and the calibration it ran under


def _calibration_time(calibration) -> datetime:
    return datetime.fromisoformat(calibration["properties_last_update"].replace("Z", "+00:00"))


def test_status_and_export_show_the_usage_and_calibration_ibm_reported(project, fake, _state_dir):
    service = fake()
    manifest = _manifest(project, service, name="reported")
    applied = qrun("apply", manifest)
    assert applied.returncode == 0, applied.stderr
    jobs = list(service.jobs.values())
    assert len(jobs) == 2 and all(j.status == "Completed" for j in jobs)
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    (row,) = status["spend"]["backends"]
    reported = row["reported"]
    # What the fake says each job used (its own record), summed over the campaign's jobs.
    assert (reported["jobs"], reported["tasks"], reported["shots"]) == (2, 2, sum(j.shots for j in jobs))
    assert reported["shots"] == 4000
    assert reported["seconds"] == pytest.approx(sum(j.charged_seconds for j in jobs))
    (calibration,) = reported["calibrations"]
    assert calibration["backend"] == "fake_manila"
    assert _calibration_time(calibration) == service.properties_last_update("fake_manila")
    # Each result carries the calibration its job ran under.
    rows = _rows(project, "reported")
    assert len(rows) == 4
    assert all(r["metadata"]["calibration"] == calibration for r in rows.values())


def test_a_pending_charge_is_reported_unknown_never_zero(fake, monkeypatch):
    """``job.usage()`` says 0 while IBM's usage status is "pending"; qrun says None (unknown),
    then the charge once it is final."""
    from qrun.providers.base import Task
    from qrun.providers.ibm_cloud import adapter as ibm_cloud

    from .conftest import FLIP_FIRST

    for variable in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(ibm_cloud, "_process_endpoint", [])
    service = fake(usage_pending_for=3600)
    adapter = ibm_cloud.Adapter("fake_manila", {"endpoint": service.url}, {"env": KEY_VARIABLE})
    tasks = [Task("qasm3", FLIP_FIRST.encode(), 0, "flip", {}, 300),
             Task("qasm3", FLIP_FIRST.encode(), 0, "flip", {}, 300)]
    handle = adapter.submit(tasks, 1, "qrun-report-1")
    deadline = time.time() + 30
    while not adapter.poll(handle).finished:
        assert time.time() < deadline
        time.sleep(0.1)
    adapter.fetch(handle, tasks)
    job = service.jobs[handle]
    pending = adapter.job_report(handle)
    assert pending["usage"]["status"] == "pending" and pending["usage"]["seconds"] is None
    assert pending["usage"]["shots"] == job.shots == 600 and pending["usage"]["tasks"] == 1
    assert pending["usage"]["timestamps"]["running"] == job.running
    assert service.requests["GET /api/v1/jobs/{id}/metrics"] >= 1
    service.usage_pending_for = 0  # the charge is final now
    final = adapter.job_report(handle)["usage"]
    assert final["status"] == "completed"
    assert final["seconds"] == final["qpu_charge_time_seconds"] == job.charged_seconds == 2.6
    # The properties in force when the job ran: the snapshot older than its running time.
    calibration = adapter.job_report(handle)["calibration"]
    assert _calibration_time(calibration) == service.properties_last_update("fake_manila")
    # A time before that snapshot: the service has none, and the SDK says None.
    backend = adapter.backend
    early = service.properties_last_update("fake_manila") - timedelta(days=1)
    assert backend.properties(datetime=early) is None
