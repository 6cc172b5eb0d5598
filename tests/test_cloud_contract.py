"""One contract for every cloud: the same scenarios on the four providers' fakes, driven by
their real SDKs through `qrun` processes, and on the memory cloud in this process.

What each scenario holds a provider to:
- a campaign runs, its results show what the circuits do, a re-apply sends nothing, and the
  credential stays out of every output and state file;
- a busy service (429/5xx on a share of requests) costs retries, never a second job;
- jobs the provider fails fail their experiments with the provider's words, are not sent
  again blindly, and `qrun retry` runs exactly those once the cause is gone;
- answers lost after the provider created the job are reconciled by the job's tag;
- SIGKILL at random moments, then re-apply: one job per experiment at the provider;
- a job over its timeout is cancelled at the provider; `qrun cancel` cancels there too.

Providers not named for a scenario in CI run it under `pytest -m slow` (the suite's time
budget; every cloud runs every scenario there). Provider-specific behaviour (its physics,
its SDK's refusals, its adapter's calls one by one) stays in the test_cloud_<name> files."""

from __future__ import annotations

import json
import random
import re
import signal

import pytest

from . import clouds
from .conftest import kill_after_more_accepted, qrun, start_apply, wait_until

ALL = ("memory", *sorted(clouds.CLOUDS))
BY_NAME = {"memory": clouds.Memory, **clouds.CLOUDS}


def on(*in_ci: str, out_of_process: bool = False):
    """Parametrize over every cloud; those not in `in_ci` run under `-m slow` only.
    `out_of_process`: the scenario needs a process of its own (a kill, a Ctrl-C), so the
    in-process memory cloud is left out."""
    names = [n for n in ALL if not (out_of_process and n == "memory")]
    return pytest.mark.parametrize("cloud_name", [
        pytest.param(name, marks=() if name in in_ci else pytest.mark.slow) for name in names])


@pytest.fixture
def cloud(cloud_name, monkeypatch):
    case = BY_NAME[cloud_name]()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "400")  # tables print reasons whole
    yield case
    case.stop()


def _output(result) -> str:
    return result.stdout + result.stderr


def _apply(cloud, manifest, command: str = "apply", *args: str):
    return cloud.run(command, manifest, "--no-progress", *args)


def _each_tag_once(cloud) -> None:
    assert set(cloud.accepted().values()) == {1}, cloud.accepted()


def _all_done_and_right(cloud, db, experiments: int) -> None:
    stored = clouds.results(db)
    assert len(stored) == experiments
    assert clouds.experiment_states(db) == {"done": experiments}
    for circuit, params, counts in stored.values():
        assert cloud.looks_right(circuit, params, counts), (circuit, params, counts)


def _secret_absent(cloud, state_dir, *results) -> None:
    if cloud.in_process:
        return  # the memory cloud takes no credential
    secret = clouds.SECRET
    for result in results:
        assert secret not in _output(result)
    files = [p for p in state_dir.iterdir() if p.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


@on(*ALL)
def test_a_campaign_runs_and_the_credential_stays_out(cloud, project, _state_dir):
    cloud.start()
    manifest = cloud.campaign(project, "runs")
    db = _state_dir / "runs.sqlite"
    applied = _apply(cloud, manifest)
    assert applied.returncode == 0, _output(applied)
    experiments = cloud.experiments()
    _all_done_and_right(cloud, db, experiments)
    assert len(cloud.accepted()) == experiments
    _each_tag_once(cloud)
    status = cloud.run("status", manifest, "-o", "json")
    remote_ids = {job["remote_id"] for job in json.loads(status.stdout)["remote_jobs"]}
    assert len(remote_ids) == experiments and None not in remote_ids
    again = _apply(cloud, manifest)
    assert again.returncode == 0, _output(again)
    assert cloud.total_accepted() == experiments  # nothing new was sent
    exported = cloud.run("export", manifest, "-o", "-", "-f", "csv")
    _secret_absent(cloud, _state_dir, applied, status, again, exported)


@on(*ALL)
def test_a_busy_service_costs_retries_never_a_second_job(cloud, project, _state_dir):
    cloud.start(error_rate=0.3, seed=3)
    manifest = cloud.campaign(project, "busy", points=5)
    applied = _apply(cloud, manifest)
    assert applied.returncode == 0, _output(applied)
    _all_done_and_right(cloud, _state_dir / "busy.sqlite", cloud.experiments(5))
    assert len(cloud.accepted()) == cloud.experiments(5)
    _each_tag_once(cloud)
    busy = cloud.fake.injected["429"] + cloud.fake.injected["503"]
    assert busy >= 3, cloud.fake.injected  # the service was busy, really


@on("memory", "braket", "ibm")
def test_failed_jobs_then_retry_once_the_cause_is_gone(cloud, project, _state_dir):
    cloud.start(fail_jobs=0.5, seed=4)
    manifest = cloud.campaign(project, "some", points=9)
    db = _state_dir / "some.sqlite"
    applied = _apply(cloud, manifest)
    assert applied.returncode == 1, _output(applied)
    assert cloud.failure_text in applied.stderr
    states = clouds.experiment_states(db)
    failed = states["failed"]
    assert failed and states["done"] == cloud.experiments(9) - failed, states
    assert cloud.fake.injected["failed job"] == failed
    _each_tag_once(cloud)  # a failed job is not sent again blindly
    status = json.loads(cloud.run("status", manifest, "-o", "json").stdout)
    assert status["experiments"]["failed"] == failed
    assert all(cloud.failure_text in f["error"] for f in status["failures"]), status["failures"]
    cloud.set_fault("fail_jobs", 0.0)  # the cause is removed
    retried = _apply(cloud, manifest, "retry")
    assert retried.returncode == 0, _output(retried)
    _all_done_and_right(cloud, db, cloud.experiments(9))
    assert len(cloud.accepted()) == cloud.experiments(9) + failed  # only the failed ones again
    _each_tag_once(cloud)


@on(*ALL)
def test_answers_lost_after_the_job_was_created_are_found_by_tag(cloud, project, _state_dir):
    cloud.start(lose_after_accept=1.0)  # every created job's answer is lost
    manifest = cloud.campaign(project, "lossy")
    applied = _apply(cloud, manifest)  # each one is found by its tag in the same run
    assert applied.returncode == 0, _output(applied)
    _all_done_and_right(cloud, _state_dir / "lossy.sqlite", cloud.experiments())
    assert len(cloud.accepted()) == cloud.experiments()
    _each_tag_once(cloud)
    assert cloud.fake.injected["lost"] >= cloud.experiments()  # (an SDK may retry a create itself)


@on("braket", out_of_process=True)
def test_sigkill_at_random_moments_never_pays_twice(cloud, project, _state_dir):
    # Latency widens the window between the provider's accept and the handle's commit.
    cloud.start(latency=0.05, lose_after_accept=0.2, seed=7)
    manifest = cloud.campaign(project, "crashy", points=7)
    experiments = cloud.experiments(7)
    db = _state_dir / "crashy.sqlite"
    rng = random.Random(11)
    caught = []
    for _ in range(3):  # each run resumes the previous one's work and is killed in turn
        _, running = kill_after_more_accepted(manifest, cloud.total_accepted, rng, most=3)
        caught.append(running and len(clouds.results(db)) < experiments)
    assert any(caught), "the kills must land during the campaign"
    for _ in range(3):
        final = _apply(cloud, manifest)
        if final.returncode == 0:
            break
    assert final.returncode == 0, _output(final)
    _all_done_and_right(cloud, db, experiments)
    assert len(cloud.accepted()) == experiments
    _each_tag_once(cloud)
    assert set(cloud.accepted()) <= set(clouds.attempt_tags(db))


@on("memory", "braket", "ibm")
def test_a_job_over_its_timeout_is_cancelled_at_the_provider(cloud, project, _state_dir):
    cloud.start(stall=True)
    manifest = cloud.campaign(project, "slow", points=1, extra="timeout: 1s")
    applied = _apply(cloud, manifest)
    assert applied.returncode == 1, _output(applied)
    # Read as a person reads the table: a cell's text wraps within its column when the
    # table is wider than the console (it did at 80 columns in CI: "... job was" / "cancelled").
    shown = " ".join(re.sub(r"[│┃]", " ", applied.stderr).split())
    assert "timed out after 1 s; the remote job was cancelled" in shown, _output(applied)
    assert len(cloud.accepted()) == cloud.experiments(1) and cloud.cancelled()
    assert clouds.experiment_states(_state_dir / "slow.sqlite") == {"failed": cloud.experiments(1)}


@on("braket", "quandela", out_of_process=True)  # Quandela: Ctrl-C once did nothing there
def test_cancel_cancels_at_the_provider(cloud, project, _state_dir):
    cloud.start(stall=True)
    manifest = cloud.campaign(project, "held", points=1)
    experiments = cloud.experiments(1)
    process = start_apply(manifest)
    assert wait_until(lambda: cloud.total_accepted() >= experiments, process, timeout=120)
    assert wait_until(lambda: clouds.job_states(_state_dir / "held.sqlite")["submitted"] == experiments,
                      process, timeout=60)
    process.send_signal(signal.SIGINT)  # Ctrl-C: submitted jobs stay with the provider
    assert process.wait(timeout=60) == 130
    cancelled = qrun("cancel", manifest)
    assert cancelled.returncode == 0, _output(cancelled)
    assert f"cancelled {experiments} remote" in cancelled.stdout
    assert cloud.cancelled()
    assert clouds.experiment_states(_state_dir / "held.sqlite") == {"failed": experiments}
