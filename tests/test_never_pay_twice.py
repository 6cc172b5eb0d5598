"""Never pay twice, on each of the four clouds, in the ways an independent chaos run broke
it or nearly did (issue 8):

- a crash leaves submissions accepted but unrecorded, and the next apply's lookup of their
  tags is refused (a credential expired): the jobs must stay unresolved, and once the
  credential is fixed `qrun retry` must find them, not submit them again;
- the service forgets a job (restored from a backup, a purged job): a handle it answers 404
  for is looked up by tag, found nowhere, and run again, instead of being polled for ever;
- the service accepts connections and never answers: the apply ends within its bound and
  says which service did not answer, leaving the work for the next apply.

Each test drives the real SDK through `qrun` subprocesses against the provider's fake."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from . import clouds
from .conftest import kill, qrun, start_apply, wait_until

EXPERIMENTS = 3  # every campaign of clouds.py: three experiments, one per job


def on_clouds(*in_ci: str):
    """Run a test on every cloud; those not named in `in_ci` only under `-m slow` (the
    suite's time budget). Every cloud runs every scenario with `pytest -m slow`."""
    return pytest.mark.parametrize("cloud_name", [
        pytest.param(name, marks=() if name in in_ci else pytest.mark.slow)
        for name in sorted(clouds.CLOUDS)])


EVERY_CLOUD = tuple(clouds.CLOUDS)


@pytest.fixture
def cloud(cloud_name, monkeypatch):
    case = clouds.CLOUDS[cloud_name]()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "400")  # tables print reasons whole
    yield case
    case.stop()


def _apply(manifest, command="apply", timeout=240):
    return qrun(command, manifest, "--no-progress", timeout=timeout)


def _output(result) -> str:
    return result.stdout + result.stderr


def _all_right(cloud, db) -> None:
    stored = clouds.results(db)
    assert len(stored) == EXPERIMENTS
    for circuit, params, counts in stored.values():
        assert cloud.looks_right(circuit, params, counts), (circuit, params, counts)


def _crash_with_submissions_unrecorded(cloud, manifest, db) -> None:
    """Kill an apply after the provider accepted every job, before their answers came."""
    process = start_apply(manifest)
    caught = wait_until(lambda: cloud.total_accepted() >= EXPERIMENTS, process, timeout=120)
    out = kill(process)
    assert caught, _output(out)
    assert clouds.job_states(db)["submitting"] == EXPERIMENTS, clouds.job_states(db)


@on_clouds(*EVERY_CLOUD)
def test_a_refused_lookup_never_leads_to_a_second_payment(cloud, project, _state_dir):
    cloud.start(latency=0.3)  # every answer comes 0.3 s after the work: a window for the kill
    manifest = cloud.campaign(project, "refused")
    db = _state_dir / "refused.sqlite"
    _crash_with_submissions_unrecorded(cloud, manifest, db)
    first_tags = set(cloud.accepted())
    assert len(first_tags) == EXPERIMENTS

    # The credential expired meanwhile: every lookup of those tags is refused.
    cloud.set_latency(0.0)
    cloud.rotate_credential()
    for command in ("apply", "retry"):  # retry, as a user told "fix the cause, then retry" would
        refused = _apply(manifest, command)
        assert refused.returncode == 1, _output(refused)
        assert "refused the lookup" in refused.stderr, _output(refused)
        assert "why 3 experiments are pending" in refused.stderr, _output(refused)
        assert "Traceback" not in _output(refused)
        assert clouds.job_states(db)["submitting"] == EXPERIMENTS
        assert set(cloud.accepted()) == first_tags and set(cloud.accepted().values()) == {1}

    # Fixed: the lookups answer, the jobs are found and followed; nothing is sent again.
    cloud.restore_credential()
    fixed = _apply(manifest, "retry")
    assert fixed.returncode == 0, _output(fixed)
    assert set(cloud.accepted()) == first_tags and set(cloud.accepted().values()) == {1}
    _all_right(cloud, db)


def _submitted_then_forgotten(cloud, manifest, db) -> set:
    """An apply submits every job (which stay queued) and is killed; the service then comes
    back from a backup that has never heard of them. Returns the forgotten jobs' tags."""
    process = start_apply(manifest)
    submitted = wait_until(lambda: clouds.job_states(db)["submitted"] == EXPERIMENTS, process,
                           timeout=120)
    out = kill(process)
    assert submitted, _output(out)
    forgotten = set(cloud.accepted())
    cloud.stop()
    cloud.start()
    return forgotten


@on_clouds("pasqal")  # where it was found: Pasqal stuck for ever (Braket's slots held: slow)
def test_a_job_the_provider_forgot_is_looked_up_then_run_again(cloud, project, _state_dir):
    cloud.start(stall=True)  # accepted jobs stay queued
    manifest = cloud.campaign(project, "forgot")
    db = _state_dir / "forgot.sqlite"
    forgotten = _submitted_then_forgotten(cloud, manifest, db)
    started = time.monotonic()
    again = _apply(manifest)
    assert again.returncode == 0, _output(again)
    assert time.monotonic() - started < 120, "a forgotten job must not be polled for minutes"
    # Each forgotten job's tag was looked up (not found), and each ran once anew.
    assert len(cloud.accepted()) == EXPERIMENTS and set(cloud.accepted().values()) == {1}
    assert not set(cloud.accepted()) & forgotten
    _all_right(cloud, db)


@on_clouds("pasqal")  # where `qrun cancel` failed with the 404
def test_cancel_of_a_job_the_provider_forgot(cloud, project, _state_dir):
    cloud.start(stall=True)
    manifest = cloud.campaign(project, "gone")
    db = _state_dir / "gone.sqlite"
    _submitted_then_forgotten(cloud, manifest, db)
    cancelled = qrun("cancel", manifest)
    assert cancelled.returncode == 0, _output(cancelled)
    assert clouds.job_states(db)["cancelled"] == EXPERIMENTS
    retried = _apply(manifest, "retry")
    assert retried.returncode == 0, _output(retried)
    _all_right(cloud, db)


class _SilentService:
    """Accepts connections, reads what comes, never answers."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self):
        self.socket.close()
        for connection in self.connections:
            connection.close()


@on_clouds("braket")  # where it ran past 15 minutes (IBM's SDK, which reads without a timeout: slow)
def test_a_service_that_never_answers_is_left_within_the_bound(cloud, project, _state_dir, monkeypatch):
    silent = _SilentService()
    try:
        cloud.url = silent.url
        manifest = cloud.campaign(project, "silent")
        monkeypatch.setenv("QRUN_SILENCE_LIMIT", "4")
        started = time.monotonic()
        result = _apply(manifest, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 1, _output(result)
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "gave no answer for" in result.stderr and silent.url in result.stderr, _output(result)
    assert "why 3 experiments are pending" in result.stderr
    assert "Traceback" not in _output(result)
    assert clouds.experiment_states(_state_dir / "silent.sqlite") == {"pending": EXPERIMENTS}
