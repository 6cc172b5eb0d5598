"""quandela.cloud: the real Perceval SDK (RemoteComputer over QuandelaCommunicationLayer)
against qrun's fake Quandela cloud on 127.0.0.1, through the CLI as a user runs it.

The fake runs in this test process; the qrun processes the tests start talk to it over HTTP.
A planted token travels in an environment variable named by the manifest; the fake accepts
only that token, so every run proves the token reached the SDK, and the tests prove it went
nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from qrun.providers.base import Task
from qrun.providers.quandela_cloud.fake import FakeQuandela

from .conftest import EXAMPLES, qrun, write

SECRET = "qrun-planted-quandela-token-7f3a9c"
TOKEN_VAR = "QRUN_TEST_QUANDELA_TOKEN"
ENV = {TOKEN_VAR: SECRET, "COLUMNS": "400"}  # wide tables: errors are shown whole


@pytest.fixture
def services():
    started = []

    def start(**faults) -> tuple[FakeQuandela, str]:
        fake = FakeQuandela(credential=SECRET, **faults)
        started.append(fake)
        return fake, fake.start()

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def lab(tmp_path):
    folder = tmp_path / "lab"
    for name in ("hom.pcvl", "mach-zehnder.pcvl"):
        (folder / "circuits").mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / "circuits" / name, folder / "circuits" / name)
    return folder


def _manifest(folder: Path, url: str, name: str = "photons", shots: int = 2000, split: int | None = None,
              mzi_points: int = 2, extra: str = "") -> Path:
    split_line = f"  split: {{max_experiments_per_job: {split}}}\n" if split else ""
    return write(folder, f"{name}.yaml", f"""
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  shots: {shots}
  seed: 5
  circuits:
    - {{name: hom, source: circuits/hom.pcvl, input: "|1,1>"}}
    - name: mzi
      source: circuits/mach-zehnder.pcvl
      input: "|1,0>"
      sweep: {{phi: {{linspace: [0, 3.14159, {mzi_points}]}}}}
  backends:
    - name: cloud
      provider: quandela.cloud
      device: "sim:slos"
      options: {{endpoint: "{url}"}}
      credentials: {{env: {TOKEN_VAR}}}
{extra}{split_line}""")


def _apply(manifest, command: str = "apply") -> subprocess.CompletedProcess:
    return qrun(command, manifest, "--no-progress", env=ENV, timeout=120)


def _export(manifest, folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    result = qrun("export", manifest, "-o", path, "-f", "jsonl", env=ENV)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in path.read_text().splitlines()]


def _experiments(state_dir: Path, campaign: str) -> list[dict]:
    """Each experiment's state, error and counts, read from the state database."""
    with sqlite3.connect(f"file:{state_dir / campaign}.sqlite?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT e.circuit, e.params, e.state, e.error, r.counts FROM experiments e "
                            "LEFT JOIN results r ON r.experiment = e.key").fetchall()
    return [{"circuit": c, "params": json.loads(p), "state": s, "error": e,
             "counts": json.loads(n) if n else None} for c, p, s, e, n in rows]


def _state_files(state_dir: Path) -> list[Path]:
    return [p for p in state_dir.rglob("*") if p.is_file()]


def _assert_secret_nowhere(state_dir: Path, *texts: str, folders=()) -> None:
    """Not in the database files (WAL included), events, exports, CLI output, nor $HOME."""
    needle = SECRET.encode()
    for path in [*_state_files(state_dir), *(p for f in folders for p in Path(f).rglob("*") if p.is_file())]:
        assert needle not in path.read_bytes(), f"the token leaked into {path}"
    for database in state_dir.glob("*.sqlite"):
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            for table, in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - our own tables
                    assert SECRET not in repr(row), f"the token leaked into table {table}"
    for text in texts:
        assert SECRET not in text
    for path in Path(os.environ["HOME"]).rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert needle not in path.read_bytes(), f"the token leaked into {path}"


def _hom_ok(counts: dict, shots: int) -> None:
    assert "|1,1>" not in counts and set(counts) == {"|2,0>", "|0,2>"}, counts
    assert sum(counts.values()) == shots
    assert 0.42 * shots <= counts["|2,0>"] <= 0.58 * shots


# -- 1. a campaign through the CLI


def test_campaign_runs_on_the_cloud_with_physics_and_remote_ids(services, lab, _state_dir):
    fake, url = services()
    manifest = _manifest(lab, url)
    applied = _apply(manifest)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    rows = {(r["circuit"], json.dumps(r["params"])): r for r in _export(manifest, lab)}
    _hom_ok(rows[("hom", "{}")]["counts"], 2000)
    # Mach-Zehnder: phi = 0 sends the photon to mode 1, phi = pi to mode 0 (as perceval.local).
    assert rows[("mzi", '{"phi": 0.0}')]["counts"] == {"|0,1>": 2000}
    assert rows[("mzi", '{"phi": 3.14159}')]["counts"] == {"|1,0>": 2000}
    # One qrun job, two programs: one cloud job per program, in one job group (the tag).
    (tag,) = {name.split(":")[0] for name in fake.accepted}
    assert dict(fake.accepted) == {f"{tag}:1/2": 1, f"{tag}:2/2": 1}
    job_ids = {job.id for job in fake.jobs.values()}
    for row in rows.values():
        assert row["state"] == "done" and row["metadata"]["provider"] == "quandela.cloud"
        assert row["metadata"]["device"] == "sim:slos"
        assert set(row["remote_ids"][0].split(",")) == job_ids
    status = qrun("status", manifest, "-o", "json", env=ENV)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["experiments"]["done"] == 3
    assert all(job_id in status.stdout for job_id in job_ids)
    # What the cloud recorded of its two jobs (shots used, durations) is what status reports;
    # the calibration is the platform details the fake serves, on every result.
    (spent,) = [b for b in report["spend"]["backends"] if b["backend"] == "cloud"]
    reported = spent["reported"]
    jobs = list(fake.jobs.values())
    assert all(job.shots is not None and job.duration is not None for job in jobs)
    assert (reported["jobs"], reported["tasks"]) == (1, 2)  # one qrun job, two cloud jobs
    assert reported["shots"] == sum(job.shots for job in jobs) == 3 * 2000
    assert reported["seconds"] == sum(job.duration for job in jobs)
    calibration = _served_calibration("sim:slos")
    assert calibration["pcvl_version"] and calibration["software_versions"]["perceval-quandela"]
    assert reported["calibrations"] == [calibration]
    assert all(row["metadata"]["calibration"] == calibration for row in rows.values())
    _assert_secret_nowhere(_state_dir, applied.stdout, applied.stderr, status.stdout, folders=[lab])


def _canonical_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _served_calibration(platform: str) -> dict:
    """The calibration the adapter should record, from the platform details the fake serves."""
    details = FakeQuandela.platform_details(platform)
    return {"platform": platform, "pcvl_version": details["specs"]["pcvl_version"],
            "software_versions": details["specs"]["software_versions"],
            "perfs_sha256": _canonical_sha256(details["perfs"]),
            "specs_sha256": _canonical_sha256(details["specs"])}


# -- 2. transient faults


# -- 3. jobs that fail, answers that are lost


def test_a_service_without_lookup_leaves_the_job_unresolved_instead_of_paying_twice(services, lab, _state_dir):
    fake, url = services(lose_after_accept=1.0, lookup=False)  # Quandela's published API
    manifest = _manifest(lab, url, name="nolookup", shots=100, split=1, mzi_points=1)
    for command in ("apply", "retry"):  # neither sends the job again on its own
        applied = _apply(manifest, command)
        assert applied.returncode == 1
        assert "cannot look up job group" in applied.stdout + applied.stderr
        assert len(fake.accepted) == 2 and set(fake.accepted.values()) == {1}
        assert {r["state"] for r in _experiments(_state_dir, "nolookup")} == {"pending"}
    # The user looked at the cloud's job list (the lost answers' jobs are there, in the fake)
    # and chose to pay again: an explicit flag, never a default.
    fake.faults.lose_after_accept = 0.0
    resubmitted = qrun("retry", manifest, "--no-progress", "--resubmit-unresolved", env=ENV, timeout=120)
    assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
    assert len(fake.accepted) == 4 and set(fake.accepted.values()) == {1}
    assert {r["state"] for r in _experiments(_state_dir, "nolookup")} == {"done"}


# -- 4. crash safety


# -- 5. account limits: a full job queue makes jobs wait, never fail


def test_a_full_job_queue_makes_jobs_wait_and_none_fails(services, lab, _state_dir):
    from qrun.store import read

    fake, url = services(max_jobs_in_queue=2, run_time=1.0)  # room for two unfinished jobs
    retry = "  retry: {max_attempts: 2, backoff: {initial: 200ms, max: 1s}}\n"
    manifest = _manifest(lab, url, name="queue", shots=100, split=1, mzi_points=5, extra=retry)
    applied = _apply(manifest)  # 6 experiments, one per job
    output = applied.stdout + applied.stderr
    assert applied.returncode == 0, output
    assert [r["state"] for r in _experiments(_state_dir, "queue")] == ["done"] * 6
    assert fake.injected["no room"] >= 4, fake.injected  # the service said "no room" (4 at least)
    assert fake.most_unfinished == 2  # never more than the queue's room, and the room was used
    assert len(fake.accepted) == 6 and set(fake.accepted.values()) == {1}  # never a second job
    assert "waited for room at the provider" in output, output
    assert "Cannot create more than 2 jobs" in output, output
    with read(_state_dir / "queue.sqlite") as state:
        assert all(job.attempts == 1 for job in state.jobs())  # none counted against the retry policy


# -- the adapter itself, in this process


def _task(folder: Path, name: str, state: str, params: dict, shots: int) -> Task:
    content = json.dumps({"serialized": (folder / "circuits" / name).read_text(), "input": state}).encode()
    return Task(program_format="perceval", program_content=content, program_item=0,
                program_digest=hashlib.sha256(content).hexdigest(), params=params, shots=shots)


def _wait(adapter, handle: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while not (status := adapter.poll(handle)).finished:
        assert time.time() < deadline, status
        time.sleep(0.05)
    return status


def test_adapter_finds_a_half_submitted_group_and_sends_only_the_rest(services, lab, monkeypatch):
    from qrun.providers.quandela_cloud.adapter import Adapter

    monkeypatch.setenv(TOKEN_VAR, SECRET)
    fake, url = services()
    adapter = Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR})
    tasks = [_task(lab, "mach-zehnder.pcvl", "|1,0>", {"phi": 0.0}, 100),
             _task(lab, "hom.pcvl", "|1,1>", {}, 400),
             _task(lab, "mach-zehnder.pcvl", "|1,0>", {"phi": 3.14159}, 100)]
    assert adapter.find("qrun-half-1") is None
    # A crash after the first of two programs was accepted:
    adapter._submit_part([tasks[0], tasks[2]], 1, "qrun-half-1", "qrun-half-1:1/2")
    assert adapter.find("qrun-half-1") is None  # incomplete: not a handle
    handle = adapter.submit(tasks, 1, "qrun-half-1")
    assert dict(fake.accepted) == {"qrun-half-1:1/2": 1, "qrun-half-1:2/2": 1}
    assert adapter.find("qrun-half-1") == handle
    assert _wait(adapter, handle).state == "done"
    mzi0, hom, mzi1 = adapter.fetch(handle, tasks)
    assert mzi0 == {"|0,1>": 100} and mzi1 == {"|1,0>": 100}
    _hom_ok(hom, 400)
    report = adapter.job_report(handle)
    assert report["usage"] == {"tasks": 2, "shots": 600, "seconds": sum(j.duration for j in fake.jobs.values()),
                               "nb_shots_used": 600}
    assert report["calibration"] == _served_calibration("sim:slos")
    assert adapter.metadata() == {"provider": "quandela.cloud", "device": "sim:slos",
                                  "sdk": {"perceval-quandela": adapter.metadata()["sdk"]["perceval-quandela"]}}


def test_a_qpu_report_records_its_perfs_and_reads_the_platform_once(services, lab, monkeypatch):
    from qrun.providers.quandela_cloud.adapter import Adapter

    monkeypatch.setenv(TOKEN_VAR, SECRET)
    fake, url = services()
    adapter = Adapter("qpu:belenos", {"endpoint": url}, {"env": TOKEN_VAR})
    tasks = [_task(lab, "hom.pcvl", "|1,1>", {}, 50)]
    handles = [adapter.submit(tasks, 1, f"qrun-qpu-{i}") for i in range(2)]
    for handle in handles:
        assert _wait(adapter, handle).state == "done"
        adapter.fetch(handle, tasks)
    reads = fake.requests["GET /api/platform/{name}"]
    reports = [adapter.job_report(handle) for handle in handles]
    assert fake.requests["GET /api/platform/{name}"] - reads <= 1  # once per adapter, not per job
    assert FakeQuandela.platform_details("qpu:belenos")["perfs"] == {"Transmittance (%)": 5.2}
    assert all(r["calibration"] == _served_calibration("qpu:belenos") for r in reports)
    assert all(r["usage"]["shots"] == 50 and r["usage"]["tasks"] == 1 for r in reports)


def test_adapter_cancels_a_stalled_job(services, lab, monkeypatch):
    from qrun.providers.quandela_cloud.adapter import Adapter

    monkeypatch.setenv(TOKEN_VAR, SECRET)
    monkeypatch.setenv("QRUN_FAKE_STALL", "1")  # faults can come from the environment, read at start
    fake, url = services()
    assert fake.faults.stall
    adapter = Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR})
    tasks = [_task(lab, "hom.pcvl", "|1,1>", {}, 10)]
    handle = adapter.submit(tasks, None, "qrun-stall-1")
    time.sleep(0.2)
    status = adapter.poll(handle)
    assert (status.state, status.provider_state) == ("queued", "waiting")
    adapter.cancel(handle)
    assert adapter.poll(handle).state == "cancelled"
    adapter.cancel(handle)  # cancelling a finished job is not an error


def test_adapter_refusals_are_deterministic_and_keep_the_secret(services, lab, monkeypatch):
    from qrun.providers.base import TransientBackendError
    from qrun.providers.quandela_cloud.adapter import Adapter

    fake, url = services()
    tasks = [_task(lab, "hom.pcvl", "|1,1>", {}, 10)]
    monkeypatch.delenv(TOKEN_VAR, raising=False)
    with pytest.raises(RuntimeError, match=f"environment variable {TOKEN_VAR} is not set"):
        Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR}).submit(tasks, None, "t")
    monkeypatch.setenv(TOKEN_VAR, SECRET + "-wrong")
    with pytest.raises(RuntimeError, match="401") as refused:
        Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR}).submit(tasks, None, "t")
    assert SECRET not in str(refused.value)
    monkeypatch.setenv(TOKEN_VAR, SECRET)
    with pytest.raises(RuntimeError, match="404"):
        Adapter("sim:nowhere", {"endpoint": url}, {"env": TOKEN_VAR}).submit(tasks, None, "t")
    bad = [_task(lab, "hom.pcvl", "|1,1>", {"nope": 1.0}, 10)]
    with pytest.raises(Exception, match="nope") as invalid:
        Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR}).submit(bad, None, "t")
    assert not isinstance(invalid.value, TransientBackendError)
    assert not fake.accepted


def test_adapter_waits_for_room_in_the_queue_and_sends_a_group_only_once(services, lab, monkeypatch):
    from perceval.providers.quandela import QuandelaCommunicationLayer

    from qrun.providers.base import NoRoomYet, TransientBackendError
    from qrun.providers.quandela_cloud.adapter import Adapter

    monkeypatch.setenv(TOKEN_VAR, SECRET)
    fake, url = services(max_jobs_in_queue=2, stall=True)  # jobs stay waiting: the room stays taken
    adapter = Adapter("sim:slos", {"endpoint": url}, {"env": TOKEN_VAR})
    layer = QuandelaCommunicationLayer("sim:slos", token=SECRET, url=url)
    hom = _task(lab, "hom.pcvl", "|1,1>", {}, 10)
    mzi = _task(lab, "mach-zehnder.pcvl", "|1,0>", {"phi": 0.0}, 10)
    assert layer.get_availability() == 2  # what Perceval's RemoteComputer waits on
    first = adapter.submit([hom], None, "qrun-room-1")
    # A group of two programs with room for one: the first part is made, the second turned
    # away. Not NoRoomYet (that says nothing was made, and would give the tag up).
    with pytest.raises(TransientBackendError, match="turned away after 1 parts") as partial:
        adapter.submit([hom, mzi], None, "qrun-room-2")
    assert not isinstance(partial.value, NoRoomYet)
    assert layer.get_availability() == 0 and fake.injected["no room"] == 1
    with pytest.raises(NoRoomYet, match="Cannot create more than 2 jobs"):
        adapter.submit([mzi], None, "qrun-room-3")  # nothing of it was made
    assert "qrun-room-3" not in fake.accepted and fake.injected["no room"] == 2
    adapter.cancel(first)  # a job ends: its room comes back
    assert layer.get_availability() == 1
    assert adapter.find("qrun-room-2") is None  # the engine looks up first: a part is missing
    adapter.submit([hom, mzi], None, "qrun-room-2")  # sends only the missing part
    assert dict(fake.accepted) == {"qrun-room-1": 1, "qrun-room-2:1/2": 1, "qrun-room-2:2/2": 1}
    assert fake.most_unfinished == 2


def test_limit_answers_mean_wait_or_stop_and_other_refusals_stay_refusals():
    import requests

    from qrun.providers.base import NoRoomYet, QuotaSpent
    from qrun.providers.quandela_cloud.adapter import Adapter

    adapter = Adapter("sim:slos", {"endpoint": "http://127.0.0.1:9"}, {"env": TOKEN_VAR})

    def answered(status: int, error: str) -> requests.HTTPError:  # as Perceval's RPCHandler raises it
        return requests.HTTPError(f"Url: http://127.0.0.1:9/api/job answered with status code "
                                  f"{status} [{{'error': '{error}'}}]")

    waits = [answered(400, "Cannot create more than 5 jobs"),
             answered(401, "Not enough credits: all remaining credits are reserved by waiting "
                           "or running jobs")]
    stops = [answered(401, "Not enough credits"), answered(401, "Not enough qpu time left")]
    refusals = [answered(400, "Invalid max_shots, should be a positive number"),
                answered(401, "Invalid or expired job token"),
                answered(403, "Platform qpu:belenos is locked, please upgrade your offer to use it")]
    assert [adapter.limit_reached(e) for e in waits] == [NoRoomYet, NoRoomYet]
    assert [adapter.limit_reached(e) for e in stops] == [QuotaSpent, QuotaSpent]
    assert [adapter.limit_reached(e) for e in refusals] == [None, None, None]
    # The words alone are not the service's answer: no status, or a 5xx, is no limit.
    assert adapter.limit_reached(RuntimeError("Cannot create more than 5 jobs")) is None
    assert adapter.limit_reached(answered(503, "Cannot create more than 5 jobs")) is None
    # Through the creation rule: nothing is sent again in place, the engine is told to wait.
    sent = []

    def refused():
        sent.append(1)
        raise waits[0]

    with pytest.raises(NoRoomYet, match="Cannot create more than 5 jobs"):
        adapter.create(refused)
    assert sent == [1]
