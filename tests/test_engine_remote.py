"""A remote job's phases and polling schedule, and a service's pace (qrun/engine/remote.py).

The engine's rules as a whole are tested against the memory cloud in test_engine_rules.py;
these pin the table they rest on: no call about a job starts while another is under way."""

from __future__ import annotations

import itertools
import time

import pytest

from qrun.engine.remote import POLL_MAX, TRANSITIONS, Call, IllegalPhaseChange, Phase, RemoteJob, Service
from qrun.store import JobRow


def _remote() -> RemoteJob:
    job = JobRow(id=7, key="k", backend="b", provider="p", backend_config={}, seed=None, attempts=0)
    return RemoteJob(job=job, attempt_id=1, tag="t-1", slices=[])


def _in(phase: Phase) -> RemoteJob:
    remote = _remote()
    remote.phase = phase
    return remote


@pytest.mark.parametrize("start, end", list(itertools.product(Phase, Phase)))
def test_every_phase_change_is_allowed_only_by_the_table(start, end):
    remote = _in(start)
    if end is start or end in TRANSITIONS[start]:
        remote.move(end)
        assert remote.phase is end
    else:
        with pytest.raises(IllegalPhaseChange, match=f"{start.value} -> {end.value}"):
            remote.move(end)
        assert remote.phase is start


def test_a_job_with_a_call_in_flight_takes_no_other_call():
    remote = _remote()
    assert remote.busy  # its submission
    with pytest.raises(IllegalPhaseChange):
        remote.start(Call.POLL)
    remote.follow("h-1")
    assert not remote.busy and remote.due(remote.next_poll)
    remote.start(Call.POLL)
    with pytest.raises(IllegalPhaseChange):
        remote.start(Call.CANCEL)  # a poll is under way
    assert not remote.due(remote.next_poll + 1e9)


def test_polls_slow_down_to_the_cap_with_jitter():
    remote = _remote()
    remote.follow("h-1")
    gaps = []
    for _ in range(30):
        remote.start(Call.POLL)
        asked = time.time()
        remote.poll_later()
        gaps.append(remote.interval)
        assert 0.8 * remote.interval <= remote.next_poll - asked <= 1.2 * remote.interval + 0.1
    assert gaps == sorted(gaps) and gaps[0] < 1 and gaps[-1] == POLL_MAX


def test_found_again_under_its_tag_the_schedule_starts_over():
    remote = _remote()
    remote.follow("h-1")
    for _ in range(10):
        remote.start(Call.POLL)
        remote.poll_later()
    remote.start(Call.POLL)
    remote.start(Call.FIND)
    remote.distrust = "the job behind h-1 carries other tags"
    remote.follow("h-2")
    assert (remote.handle, remote.distrust, remote.phase) == ("h-2", None, Phase.WAITING)
    assert remote.interval < 1


def test_a_re_attached_job_is_polled_at_once():
    remote = RemoteJob.attached(_remote().job, 3, "t-3", [], "h-9")
    assert remote.phase is Phase.WAITING and remote.handle == "h-9"
    assert remote.due(remote.submitted_at + 0.001)


def test_submit_rate_spaces_submissions_and_counts_only_those_let_through():
    service = Service()
    assert service.rate_allows(None, 100.0) and service.last_submit == 0.0
    assert service.rate_allows(2.0, 100.0)
    assert not service.rate_allows(2.0, 100.4)
    assert service.last_submit == 100.0
    assert service.rate_allows(2.0, 100.5)


def test_silence_is_counted_from_the_first_unanswered_call():
    service = Service()
    service.heard(False, 10.0)
    service.heard(False, 20.0)
    assert service.silent_since == 10.0
    service.heard(True, 30.0)
    assert service.silent_since is None


def test_an_adapter_without_the_remote_contract_is_refused_before_any_call(monkeypatch):
    import qrun.providers as providers
    from qrun.errors import BackendUnavailable

    class HalfAdapter:  # a plugin's adapter that never learned to look tags up or cancel
        def submit(self, tasks, seed, tag): ...
        def poll(self, handle): ...
        def fetch(self, handle, tasks): ...
        def metadata(self): ...

    monkeypatch.setattr(providers, "adapter_for", lambda *args, **kwargs: HalfAdapter())
    with pytest.raises(BackendUnavailable, match="lacks the remote adapter methods find, cancel"):
        providers.remote_adapter_for("braket.aws", "d", {})
