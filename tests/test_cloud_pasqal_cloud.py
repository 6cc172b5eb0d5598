"""pasqal.cloud: the real pasqal-cloud SDK driven by qrun against the local fake Pasqal Cloud.

The fake runs in this test process; qrun runs as users run it, in a subprocess, pointed at
the fake by `options.endpoint`, with a planted token in an environment variable."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from qrun.providers.base import Task, TaskFailed, TransientBackendError
from qrun.providers.pasqal_cloud.fake import FakePasqal

from .conftest import EXAMPLES, qrun, write

TOKEN_VAR = "QRUN_TEST_PASQAL_TOKEN"
WIDE = {"COLUMNS": "500"}  # rich wraps long errors in tables at 80 columns


@pytest.fixture
def secret():
    return "pcs-" + secrets.token_hex(20)


@pytest.fixture
def fakes():
    """Start fakes with given faults; all stopped at the end of the test."""
    started = []

    def start(**options) -> FakePasqal:
        fake = FakePasqal(**options)
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def _flip_first_atom() -> str:
    """Two atoms far apart; a local pi pulse on atom q0 only: the outcome is '10'."""
    import numpy as np
    from pulser import Pulse, Register, Sequence
    from pulser.devices import DigitalAnalogDevice

    seq = Sequence(Register({"q0": (0, 0), "q1": (0, 30)}), DigitalAnalogDevice)
    seq.declare_channel("local", "rydberg_local", initial_target="q0")
    duration = seq.declare_variable("duration", dtype=int)
    seq.add(Pulse.ConstantPulse(duration, 2 * np.pi, 0.0, 0.0), "local")
    return seq.to_abstract_repr()


@pytest.fixture(scope="module")
def flip_first_atom() -> str:
    return _flip_first_atom()


@pytest.fixture
def atoms(project, flip_first_atom):
    shutil.copy(EXAMPLES / "circuits" / "rabi.json", project / "circuits" / "rabi.json")
    (project / "circuits" / "flip0.json").write_text(flip_first_atom)
    return project


def _manifest(folder: Path, url: str, name: str = "pasqal", durations=(500, 1000),
              per_job: int | None = None, flip: bool = True, attempts: int = 3) -> Path:
    split = f"\n  split: {{max_experiments_per_job: {per_job}}}" if per_job else ""
    flip_circuit = "\n    - {name: flip0, source: circuits/flip0.json, sweep: {duration: [500]}}" \
        if flip else ""
    text = f"""\
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  shots: 200
  seed: 5
  circuits:
    - {{name: rabi, source: circuits/rabi.json, sweep: {{duration: {list(durations)}}}}}{flip_circuit}
  backends:
    - name: pasqal
      provider: pasqal.cloud
      device: EMU_FREE
      options: {{endpoint: "{url}"}}
      credentials: {{env: {TOKEN_VAR}}}
  retry: {{max_attempts: {attempts}, backoff: {{initial: 200ms, max: 1s}}}}{split}
"""
    return write(folder, f"{name}.yaml", text)


def _rows(manifest, env) -> list[dict]:
    exported = qrun("export", manifest, "-o", "-", "-f", "jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def _results_per_experiment(db: Path) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT experiment, count(*) FROM results GROUP BY experiment"))


# -- 1 and 5: a campaign, its physics, its remote ids; the secret nowhere


def test_campaign_runs_on_the_fake_and_the_token_stays_secret(atoms, fakes, secret, _state_dir, tmp_path):
    fake = fakes(credential=secret)  # the fake accepts the planted token and no other
    manifest = _manifest(atoms, fake.url)
    env = {TOKEN_VAR: secret}
    outputs = []

    applied = qrun("apply", manifest, env=env)
    outputs.append(applied)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    rows = {(r["circuit"], r["params"]["duration"]): r for r in _rows(manifest, env)}
    assert len(rows) == 3 and all(r["state"] == "done" for r in rows.values())
    # A resonant pi pulse (500 ns at 2 pi rad/us) flips the atom; 2 pi brings it back.
    assert rows[("rabi", 500)]["counts"] == {"1": 200}
    assert rows[("rabi", 1000)]["counts"] == {"0": 200}
    # Bit order: atom 0 (q0), the only one driven, is the leftmost character.
    assert rows[("flip0", 500)]["counts"] == {"10": 200}

    # One qrun job, one Pasqal batch holding the three experiments, found in the export.
    (batch_id,) = fake.batches
    for row in rows.values():
        assert row["remote_ids"] == [batch_id]
        assert row["metadata"]["remote_id"] == batch_id
        assert row["metadata"]["provider"] == "pasqal.cloud"
        assert row["metadata"]["sdk"]["pasqal-cloud"]
    batch = fake.batches[batch_id]
    assert batch["device_type"] == "EMU_FREE" and len(batch["job_ids"]) == 3
    assert len(batch["tags"]) == 1 and batch["tags"][0].startswith("qrun-")
    assert dict(fake.accepted) == {batch["tags"][0]: 1}
    # The int variable travels as an int; the other sequence as its own job sequence.
    jobs = [fake.jobs[j] for j in batch["job_ids"]]
    assert sorted((j["variables"] or {}).get("duration", 0) for j in jobs) == [0, 500, 1000]
    assert sum(j["sequence"] is not None for j in jobs) == 1

    status = qrun("status", manifest, "-o", "json", env=env)
    outputs.append(status)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["experiments"]["done"] == 3
    assert batch_id in status.stdout  # the remote id is shown

    # What Pasqal recorded of the batch (its jobs' runs, its start and end) is what status
    # reports; the calibration is the specs the fake serves, on every result.
    (spent,) = [b for b in report["spend"]["backends"] if b["backend"] == "pasqal"]
    reported = spent["reported"]
    start, end = (datetime.fromisoformat(batch[k]) for k in ("start_datetime", "end_datetime"))
    assert (reported["jobs"], reported["tasks"], reported["shots"]) == (1, 1, sum(j["runs"] for j in jobs))
    assert reported["shots"] == 600
    assert reported["seconds"] == pytest.approx((end - start).total_seconds()) and reported["seconds"] > 0
    specs = fake.specs["EMU_FREE"]
    calibration = {"device_type": "EMU_FREE", "version": json.loads(specs)["version"],
                   "pulser_version": json.loads(specs)["pulser_version"],
                   "specs_sha256": hashlib.sha256(specs.encode()).hexdigest()}
    assert calibration["version"] == "1" and calibration["pulser_version"]
    assert reported["calibrations"] == [calibration]
    assert all(row["metadata"]["calibration"] == calibration for row in rows.values())
    assert fake.requests["GET /core-fast/api/v1/devices/specs"] == 1  # read once, not per job

    csv_path = tmp_path / "out" / "results.csv"
    exported = qrun("export", manifest, "-o", csv_path, env=env)
    outputs.append(exported)
    assert exported.returncode == 0 and batch_id in csv_path.read_text()

    # A wrong token: refused by the service, with its message, and never echoed either.
    wrong = "pcs-" + secrets.token_hex(20)
    refused_manifest = _manifest(atoms, fake.url, name="refused", flip=False, durations=(500,))
    refused = qrun("apply", refused_manifest, env={TOKEN_VAR: wrong, **WIDE})
    outputs.append(refused)
    assert refused.returncode == 1
    assert "401" in refused.stdout + refused.stderr and "invalid token" in refused.stdout + refused.stderr

    # 5: the planted secret (and the wrong one) appear nowhere qrun writes.
    places = [p for p in _state_dir.rglob("*") if p.is_file()] + [csv_path]
    assert any(p.name == "pasqal.sqlite" for p in places)
    for path in places:
        data = path.read_bytes()
        assert secret.encode() not in data and wrong.encode() not in data, path
    for output in outputs:
        assert secret not in output.stdout + output.stderr
        assert wrong not in output.stdout + output.stderr
    with sqlite3.connect(_state_dir / "pasqal.sqlite") as conn:
        events = " ".join(map(str, conn.execute("SELECT * FROM events").fetchall()))
    assert events and secret not in events


# -- 2: transient faults


# -- 3: failing jobs, lost answers


# -- 4: crash safety


def _handles(db: Path) -> set:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {tag for tag, in conn.execute("SELECT tag FROM attempts WHERE remote_id IS NOT NULL")}
    except sqlite3.OperationalError:
        return set()


# -- the adapter itself: logins, projects, refusals


def _task(content: str, duration, shots=100) -> Task:
    return Task(program_format="pulser", program_content=content.encode(), program_item=0,
                program_digest=str(hash(content)), params={"duration": duration}, shots=shots)


def _wait_done(adapter, handle, timeout=30):
    deadline = time.time() + timeout
    while not (status := adapter.poll(handle)).finished:
        assert time.time() < deadline
        time.sleep(0.1)
    return status


def test_email_password_login_and_a_refused_value(fakes, flip_first_atom, monkeypatch):
    from qrun.providers.pasqal_cloud.adapter import Adapter, PasqalCloudError

    fake = fakes(users={"ada@example.org": "correct horse"})
    monkeypatch.setenv("PASQAL_LOGIN", "ada@example.org:correct horse")
    adapter = Adapter("EMU_MPS", {"endpoint": fake.url}, {"env": "PASQAL_LOGIN"})
    tasks = [_task(flip_first_atom, 500), _task(flip_first_atom, 3)]  # 3 ns: too short
    handle = adapter.submit(tasks, None, "qrun-login-1")
    assert fake.requests["POST /oauth/token"] == 1
    assert adapter.find("qrun-login-1") == handle and adapter.find("qrun-other") is None
    assert _wait_done(adapter, handle).state == "done"
    counts, refused = adapter.fetch(handle, tasks)
    assert counts == {"10": 100}
    assert isinstance(refused, TaskFailed) and "16 ns" in refused.error
    assert len(fake.batches[handle]["job_ids"]) == 1  # the refused task was never sent

    monkeypatch.setenv("PASQAL_LOGIN", "ada@example.org:wrong")
    with pytest.raises(PasqalCloudError, match="Wrong email or password") as failure:
        Adapter("EMU_MPS", {"endpoint": fake.url}, {"env": "PASQAL_LOGIN"}).submit(tasks, None, "x")
    assert "wrong" not in str(failure.value).replace("Wrong", "")


def test_project_choice_cancel_and_unreachable_service(fakes, flip_first_atom, monkeypatch):
    from qrun.providers.pasqal_cloud.adapter import Adapter, PasqalCloudError

    monkeypatch.setenv("PASQAL_TOKEN", "any")
    two = [{"id": "11111111-1111-4111-8111-111111111111", "name": "a"},
           {"id": "22222222-2222-4222-8222-222222222222", "name": "b"}]
    fake = fakes(projects=two, stall=True)
    with pytest.raises(PasqalCloudError, match="set options.project_id.*2 active projects"):
        Adapter("EMU_FREE", {"endpoint": fake.url}, {"env": "PASQAL_TOKEN"}).find("t")
    adapter = Adapter("EMU_FREE", {"endpoint": fake.url, "project_id": two[1]["id"]},
                      {"env": "PASQAL_TOKEN"})
    handle = adapter.submit([_task(flip_first_atom, 500)], None, "qrun-stall-1")
    assert fake.batches[handle]["project_id"] == two[1]["id"]
    assert adapter.poll(handle).state == "queued"  # a stalled queue
    adapter.cancel(handle)
    assert adapter.poll(handle).state == "cancelled"
    adapter.cancel(handle)  # cancelling a finished batch again is harmless
    with pytest.raises(PasqalCloudError, match="Invalid device_type"):
        Adapter("EMU_NOPE", {"endpoint": fake.url, "project_id": two[0]["id"]},
                {"env": "PASQAL_TOKEN"}).submit([_task(flip_first_atom, 500)], None, "t2")
    assert "t2" not in fake.accepted

    monkeypatch.setattr(Adapter, "policy", replace(Adapter.policy, tries=2, wait_initial=0.01))
    port = fake.url.rsplit(":", 1)[1]
    fake.stop()
    gone = Adapter("EMU_FREE", {"endpoint": f"http://127.0.0.1:{port}", "project_id": two[0]["id"]},
                   {"env": "PASQAL_TOKEN"})
    with pytest.raises(TransientBackendError):
        gone.poll(handle)
    with pytest.raises(TransientBackendError):
        gone.submit([_task(flip_first_atom, 500)], None, "qrun-gone-1")


def test_faults_come_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("QRUN_FAKE_LATENCY", "0.05")
    monkeypatch.setenv("QRUN_FAKE_ERROR_RATE", "0.2")
    monkeypatch.setenv("QRUN_FAKE_STALL", "1")
    monkeypatch.setenv("QRUN_FAKE_LOSE_AFTER_ACCEPT", "0.5")
    with FakePasqal(fail_jobs=0.25, error_rate=0.0) as fake:
        faults = fake.faults
        assert (faults.latency, faults.error_rate, faults.fail_jobs, faults.stall, faults.lose_after_accept) \
            == (0.05, 0.0, 0.25, True, 0.5)


def test_a_lost_creation_answer_is_never_a_refusal_and_never_resent(fakes, flip_first_atom, monkeypatch):
    """A batch creation whose answer was lost may have made the batch: the submission must
    not read as refused (which would let `qrun retry` pay for it again), and the adapter
    neither sends it again nor looks it up itself: the engine looks the tag up before any
    new try (and a refused lookup there leaves the fate unknown: test_never_pay_twice)."""
    from qrun.providers.pasqal_cloud.adapter import Adapter

    monkeypatch.setenv("PASQAL_TOKEN", "any")
    fake = fakes(lose_after_accept=1.0)
    adapter = Adapter("EMU_FREE", {"endpoint": fake.url}, {"env": "PASQAL_TOKEN"})
    looked_up = []
    monkeypatch.setattr(adapter, "find", looked_up.append)
    with pytest.raises(TransientBackendError, match="may exist"):
        adapter.submit([_task(flip_first_atom, 500)], None, "qrun-doubt-1")
    assert dict(fake.accepted) == {"qrun-doubt-1": 1} and not looked_up


def test_a_batch_creation_answered_429_is_sent_again_in_place_and_made_once(fakes, flip_first_atom,
                                                                            monkeypatch):
    """429 is answered before any work: the creation rule sends the batch again at once (the
    status kept through qrun's session), instead of handing the engine a batch that "may
    exist" to look up by its tag."""
    from qrun.providers.pasqal_cloud.adapter import Adapter, _Transient

    monkeypatch.setenv("PASQAL_TOKEN", "any")
    fake = fakes()
    route = "POST /core-fast/api/v1/batches"
    fake.throttle_next[route] = 2  # the next two creations are answered 429
    adapter = Adapter("EMU_FREE", {"endpoint": fake.url}, {"env": "PASQAL_TOKEN"})
    looked_up = []
    monkeypatch.setattr(adapter, "find", looked_up.append)
    handle = adapter.submit([_task(flip_first_atom, 500)], None, "qrun-busy-1")
    assert fake.requests[route] == 3 and fake.injected["429"] == 2
    assert handle in fake.batches and dict(fake.accepted) == {"qrun-busy-1": 1} and not looked_up
    # The status each kind of answer leaves for the rule: 429 and 503 answered, none unanswered.
    assert adapter.answer_status(_Transient("POST /core-fast/api/v1/batches: HTTP 429", 2.0, 429)) == 429
    assert adapter.answer_status(_Transient("POST /core-fast/api/v1/batches: HTTP 503", None, 503)) == 503
    assert adapter.answer_status(_Transient("POST /core-fast/api/v1/batches: no answer")) is None
    assert adapter.limit_reached(_Transient("HTTP 429", None, 429)) is None  # a rate, not a full account
