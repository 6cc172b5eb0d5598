"""The engine's rules for remote jobs, in-process against tests/memory_cloud.py.

qrun's API, store and engine run as in `qrun apply`; only the provider is replaced (the
engine asks `adapter_for`, which is patched to hand out the memory cloud). Each test takes
milliseconds to a second: the same scenarios against the real SDKs and fakes are in
test_never_pay_twice.py and the test_cloud_* files."""

from __future__ import annotations

import threading
import time

import pytest

import qrun.engine.loop  # noqa: F401 - its STOP_GRACE is patched below
from qrun import api, engine
from qrun.store import FAILED, SUBMITTING, Store, read

from .conftest import write
from .memory_cloud import MemoryCloud

EXPERIMENTS = 3


@pytest.fixture
def cloud(monkeypatch):
    memory = MemoryCloud()
    monkeypatch.setattr("qrun.providers.adapter_for", lambda *args, **kwargs: memory)
    yield memory
    memory.released.set()  # calls left hanging end with the test


@pytest.fixture
def manifest(project):
    return write(project, "memory.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: memory}
        spec:
          shots: 100
          circuits:
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.0, 1.0, 2.0]}}
          backends:
            - name: cloud
              provider: braket.aws
              device: arn:aws:braket:::device/quantum-simulator/amazon/sv1
              options: {endpoint: "http://127.0.0.1:9"}
          retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
    """)


def _store(manifest) -> Store:
    return Store.open(api.state_path(api.validate(manifest)), readonly=True)


def _results_name_their_jobs(manifest, cloud) -> None:
    """Every stored result came from the job its attempt's tag names at the provider."""
    store = _store(manifest)
    rows = list(store.export_rows(store.latest_plan_apply()))
    assert len(rows) == EXPERIMENTS and all(r["state"] == "done" for r in rows)
    for row in rows:
        (handle,) = row["counts"]
        assert cloud.jobs[handle]["tag"] in _tags_of(manifest, row["key"])


def _state(manifest):
    return read(api.state_path(api.validate(manifest)))


def _tags_of(manifest, key) -> set:
    with _state(manifest) as state:
        jobs = {s.job_id for s in state.slices() if s.experiment == key}
        return {a.tag for a in state.attempts() if a.job_id in jobs}


def _unresolved(manifest) -> int:
    with _state(manifest) as state:
        return sum(a.tag_state == "unknown" for a in state.attempts())


def test_lost_answers_are_found_by_tag(cloud, manifest):
    cloud.lose_answers = True
    report = api.apply(manifest)
    assert report.all_done
    assert len(cloud.accepted) == EXPERIMENTS and set(cloud.accepted.values()) == {1}
    _results_name_their_jobs(manifest, cloud)


def test_refused_lookups_leave_jobs_unresolved_until_they_answer(cloud, manifest):
    cloud.lose_answers = True
    cloud.refuse_lookups = True
    refused = api.apply(manifest)
    assert refused.state["pending"] == EXPERIMENTS and not refused.run.failed
    assert {c["job_state"] for c in refused.pending_causes} == {SUBMITTING}
    assert all("refused the lookup" in c["reason"] for c in refused.pending_causes)
    again = api.apply(manifest, retry_failed=True)  # retry changes nothing while refused
    assert again.state["pending"] == EXPERIMENTS
    assert len(cloud.accepted) == EXPERIMENTS and _unresolved(manifest) == EXPERIMENTS
    cloud.refuse_lookups = cloud.lose_answers = False
    assert api.apply(manifest, retry_failed=True).all_done
    assert len(cloud.accepted) == EXPERIMENTS and set(cloud.accepted.values()) == {1}
    assert _unresolved(manifest) == 0
    _results_name_their_jobs(manifest, cloud)


def test_retry_looks_up_the_unknown_tags_of_failed_jobs_first(cloud, manifest):
    """A state written by a qrun that failed jobs whose fate was unknown (as before schema
    3 did): `qrun retry` finds their submissions by tag and follows them instead."""
    cloud.lose_answers = True
    cloud.refuse_lookups = True
    api.apply(manifest)
    path = api.state_path(api.validate(manifest))
    with Store.open(path) as store:  # what the old qrun did with a refused lookup
        plan = store.latest_plan_apply()
        for job, attempt_id, _ in store.unfinished_jobs(plan):
            store.fail_attempt(plan, job.id, attempt_id, "lookup refused (old qrun)", None)
        assert store.state_counts(plan)[FAILED] == EXPERIMENTS
    cloud.refuse_lookups = cloud.lose_answers = False
    report = api.apply(manifest, retry_failed=True)
    assert report.all_done
    assert len(cloud.accepted) == EXPERIMENTS and set(cloud.accepted.values()) == {1}
    _results_name_their_jobs(manifest, cloud)
    with read(path) as state:  # the attempt opened to resubmit: never sent
        states = [a.state for a in state.attempts()]
    assert states.count("superseded") == EXPERIMENTS


def test_a_handle_naming_another_job_is_not_trusted(cloud, manifest):
    cloud.stall = True
    path = api.state_path(api.validate(manifest))
    done = threading.Event()

    def apply_until_submitted():
        api.apply(manifest)
        done.set()
    worker = threading.Thread(target=apply_until_submitted, daemon=True)
    worker.start()
    deadline = time.time() + 10
    while len(cloud.accepted) < EXPERIMENTS:
        assert time.time() < deadline
        time.sleep(0.01)
    # The service restarts from scratch and hands the same ids to other people's jobs.
    cloud.forget_everything(reuse_ids=True)
    cloud.stall = False
    for _ in range(EXPERIMENTS):
        cloud.plant("someone-else", [100])
    assert done.wait(20)
    report_store = Store.open(path, readonly=True)
    assert report_store.state_counts(report_store.latest_plan_apply())["done"] == EXPERIMENTS
    _results_name_their_jobs(manifest, cloud)
    with read(path) as state:
        errors = [a.error for a in state.attempts() if a.error is not None]
    assert len(errors) == EXPERIMENTS and all("carries other tags" in e and "lost" in e for e in errors)


def test_cancel_finds_a_submission_by_its_tag_and_cancels_it_there(cloud, manifest):
    cloud.lose_answers = True
    cloud.refuse_lookups = True
    cloud.stall = True
    api.apply(manifest)
    cloud.refuse_lookups = False
    summary = api.cancel(manifest)
    assert summary == {"cancelled_remote": EXPERIMENTS, "cancelled_local": 0, "errors": []}
    assert {job["state"] for job in cloud.jobs.values()} == {"cancelled"}


def test_cancel_leaves_a_job_whose_lookup_is_refused(cloud, manifest):
    cloud.lose_answers = True
    cloud.refuse_lookups = True
    api.apply(manifest)
    summary = api.cancel(manifest)
    assert summary["cancelled_remote"] == 0 and len(summary["errors"]) == EXPERIMENTS
    assert all("left as it is" in error for error in summary["errors"])
    assert _unresolved(manifest) == EXPERIMENTS


def test_a_silent_service_is_left_within_the_silence_limit(cloud, manifest, monkeypatch):
    monkeypatch.setenv("QRUN_SILENCE_LIMIT", "0.5")
    cloud.silent.set()
    started = time.monotonic()
    report = api.apply(manifest)
    assert time.monotonic() - started < 5
    assert report.run.left_backends == ["cloud"]
    assert report.state["pending"] == EXPERIMENTS
    assert all("gave no answer" in c["reason"] for c in report.pending_causes)
    cloud.silent.clear()
    cloud.released.set()
    assert api.apply(manifest).all_done  # the next apply looks the tags up, then submits
    assert set(cloud.accepted.values()) == {1}


def test_bad_silence_limit_is_a_usage_error(manifest, monkeypatch):
    from qrun.errors import QrunError

    monkeypatch.setenv("QRUN_SILENCE_LIMIT", "soon")
    with pytest.raises(QrunError, match="QRUN_SILENCE_LIMIT"):
        api.apply(manifest)


def test_ctrl_c_does_not_wait_for_a_silent_service(cloud, manifest, monkeypatch):
    import _thread

    monkeypatch.setattr(engine.loop, "STOP_GRACE", 0.5)
    cloud.silent.set()
    threading.Thread(target=lambda: cloud.hanging.wait(30) and _thread.interrupt_main(), daemon=True).start()
    started = time.monotonic()
    report = api.apply(manifest)
    assert report.interrupted and time.monotonic() - started < 4
    assert _unresolved(manifest) == EXPERIMENTS  # their tags are looked up by the next apply
    cloud.silent.clear()
    cloud.released.set()
    assert api.apply(manifest).all_done and set(cloud.accepted.values()) == {1}


def test_a_tag_found_absent_then_sent_again_is_looked_up_again(cloud, manifest):
    """A 429 leaves the tag's fate unknown; the next try finds it absent and sends the job
    under the same tag; that answer is lost. The tag is unknown again (the send may have
    landed), so the third try must look it up, not send a second job (found by the fake
    Braket's lost answers: it paid twice)."""
    cloud.busy_submissions = EXPERIMENTS  # each job's first submission: 429
    cloud.lose_answers = True  # every later one is created, its answer lost
    report = api.apply(manifest)
    assert set(cloud.accepted.values()) == {1}, cloud.accepted
    assert len(cloud.accepted) == EXPERIMENTS and report.all_done
    _results_name_their_jobs(manifest, cloud)


def test_no_room_at_the_provider_is_waited_for_without_spinning(cloud, manifest):
    """Every job turned away (NoRoomYet) twelve times in all, with nothing else in flight: the
    jobs wait with backoff, none fails, none is paid twice, and the loop sleeps meanwhile
    rather than asking the store in a busy loop."""
    # One job in flight at a time: while one waits for room, the others are ready but held.
    manifest.write_text(manifest.read_text()
                        .replace("initial: 10ms, max: 20ms", "initial: 300ms, max: 300ms")
                        .replace('options: {endpoint: "http://127.0.0.1:9"}',
                                 'options: {endpoint: "http://127.0.0.1:9"}\n      limits: {max_parallel: 1}'))
    api.plan(manifest)  # imports and parsing paid before the measure
    cloud.full_submissions = 12
    wall, cpu = time.monotonic(), time.process_time()
    report = api.apply(manifest)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert report.all_done and cloud.injected["no room"] == 12
    assert set(cloud.accepted.values()) == {1} and len(cloud.accepted) == EXPERIMENTS
    _results_name_their_jobs(manifest, cloud)
    with _state(manifest) as state:
        assert all(job.attempts == 1 for job in state.jobs())  # waits are not attempts
        assert sum(a.tag_state == "absent" for a in state.attempts()) == 12
    assert any("waited for room" in notice for notice in report.run.notices), report.run.notices
    assert wall > 1.0 and cpu < 0.5 * wall, (wall, cpu)  # asleep, not spinning
