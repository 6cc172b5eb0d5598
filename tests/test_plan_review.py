"""Plans that say why: a reason for every experiment, what changed (before -> after), what
is retired; `plan -o json` and `-o md`; saved plans (`plan --out`, `apply FILE`) and the
stale-plan rule. The provider is the in-process memory cloud (tests/memory_cloud.py) or
Aer, so each test takes well under a second to a few seconds."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest
from click.testing import CliRunner

from qrun import api, planmd
from qrun.cli import main
from qrun.errors import PlanFileError, StalePlanError
from qrun.store import Store, read

from .conftest import write
from .memory_cloud import MemoryCloud

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"

MANIFEST = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: review}
    spec:
      shots: 100
      seed: 7
      circuits:
        - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.0, 1.0, 2.0]}}
        - {name: flip, source: circuits/flip.qasm}
      backends:
        - name: cloud
          provider: braket.aws
          device: DEVICE
          options: {endpoint: "http://127.0.0.1:9"}
      split: {max_experiments_per_job: 1}
      retry: {max_attempts: 2, backoff: {initial: 10ms, max: 20ms}}
"""


@pytest.fixture
def cloud(monkeypatch):
    memory = MemoryCloud()
    monkeypatch.setattr("qrun.providers.adapter_for", lambda *args, **kwargs: memory)
    yield memory
    memory.released.set()


def _manifest(project, *edits):
    text = MANIFEST.replace("DEVICE", SV1)
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return write(project, "campaign.yaml", text)


def _applied(project, *edits):
    path = _manifest(project, *edits)
    assert api.apply(path).all_done
    return path


def _fields(changes: list) -> list:
    return [(c["field"], c["before"], c["after"]) for c in changes]


# ---------------------------------------------------------------- reasons


@pytest.mark.parametrize(("edit", "changed", "expected"), [
    (("shots: 100", "shots: 250"), 4, [("shots", 100, 250)]),
    (("seed: 7", "seed: 8"), 4, [("seed", 7, 8)]),
    ((SV1, DM1), 4, [("device", SV1, DM1)]),
    (("127.0.0.1:9", "127.0.0.1:10"), 4, [("endpoint", "http://127.0.0.1:9", "http://127.0.0.1:10")]),
    (("1.0, 2.0]", "1.0, 2.5]"), 1, [("params.theta", 2.0, 2.5)]),
])
def test_a_changed_key_names_what_changed_from_what_to_what(project, cloud, edit, changed, expected):
    _applied(project)
    report = api.plan(_manifest(project, edit))
    assert report.totals["changed"] == changed
    assert report.totals["cached"] == 4 - changed
    assert report.totals["new"] == report.totals["retired"] == 0
    assert report.to_run == changed
    assert [_fields(g["changes"]) for g in report.changes] == [expected] * len(report.changes)
    assert sum(g["experiments"] for g in report.changes) == changed
    listed = [e for e in report.experiments if e["reason"] == "changed"]
    assert len(listed) == changed and all(_fields(e["changes"]) == expected for e in listed)
    # Each names the stored experiment it replaces: one of the last apply's, not produced now.
    with read(report.state_path) as state:
        stored = {e.key: e for e in state.experiments()}
    assert all(e["replaces"] in stored and e["replaces"] != e["key"] for e in listed)


TARGETS = """      split: {max_experiments_per_job: 1}
      targets:
        - {circuits: [rot], backends: [cloud], shots: FIRST}
        - {circuits: [rot], backends: [cloud], shots: SECOND}
"""


def _targets(project, first, second):
    return _manifest(project, ("      split: {max_experiments_per_job: 1}\n",
                               TARGETS.replace("FIRST", str(first)).replace("SECOND", str(second))))


def test_listings_of_one_circuit_and_backend_pair_in_shots_order(project, cloud):
    assert api.apply(_targets(project, 100, 200)).all_done
    report = api.plan(_targets(project, 150, 250))  # each point stored twice: ranked pairs
    assert report.totals["changed"] == 6 and report.totals["retired"] == 0
    assert sorted(_fields(g["changes"])[0] for g in report.changes) == [
        ("shots", 100, 150), ("shots", 200, 250)]
    assert all(g["experiments"] == 3 for g in report.changes)


def test_two_new_listings_for_one_stored_pair_once_the_other_is_new(project, cloud):
    assert api.apply(_targets(project, 100, 100)).all_done  # the same work listed twice: once
    report = api.plan(_targets(project, 150, 250))
    assert (report.totals["changed"], report.totals["new"], report.totals["retired"]) == (3, 3, 0)
    assert [_fields(g["changes"]) for g in report.changes] == [[("shots", 100, 150)]]
    assert {e["params"]["theta"] for e in report.experiments if e["reason"] == "new"} == {0.0, 1.0, 2.0}


def test_swept_values_changed_at_several_points_are_one_group_whose_values_vary(project, cloud):
    _applied(project)
    report = api.plan(_manifest(project, ("[0.0, 1.0, 2.0]", "[0.0, 1.5, 2.5]")))
    assert (report.totals["changed"], report.totals["cached"], report.totals["retired"]) == (2, 2, 0)
    (group,) = report.changes
    assert group["experiments"] == 2
    assert group["changes"] == [{"field": "params.theta", "before": 1.0, "after": 1.5, "varies": True}]
    listed = {e["params"]["theta"]: _fields(e["changes"]) for e in report.experiments}
    assert listed == {1.5: [("params.theta", 1.0, 1.5)], 2.5: [("params.theta", 2.0, 2.5)]}
    assert "params.theta 1 → 1.5 (first of them)" in planmd.markdown(report)


def test_an_edited_source_is_named_with_its_file_and_both_digests(project, cloud):
    import hashlib

    _applied(project)
    old = (project / "circuits/rot.qasm").read_bytes()
    (project / "circuits/rot.qasm").write_bytes(old.replace(b"rx(theta) q[0];", b"rx(theta) q[0];\nz q[0];"))
    report = api.plan(_manifest(project))
    assert (report.totals["changed"], report.totals["cached"]) == (3, 1)
    (group,) = report.changes
    ((field, before, after),) = _fields(group["changes"])
    assert field == "source" and before.startswith("circuits/rot.qasm") and after.startswith("circuits/rot.qasm")
    with read(report.state_path) as state:
        programs = {e.program for e in state.experiments() if e.circuit == "rot"}
    assert any(digest[:12] in before for digest in programs)
    assert before != after and hashlib.sha256(old).hexdigest()[:12] not in after


def test_new_points_and_retired_ones_whose_results_are_kept(project, cloud):
    _applied(project)
    report = api.plan(_manifest(project, ("[0.0, 1.0, 2.0]", "[0.0, 1.0]")))
    assert (report.totals["retired"], report.totals["cached"], report.to_run) == (1, 3, 0)
    assert report.retired == [{"key": report.retired[0]["key"], "circuit": "rot", "backend": "cloud",
                               "params": {"theta": 2.0}, "state": "done"}]
    assert "results are kept" in planmd.markdown(report)
    assert api.apply(_manifest(project, ("[0.0, 1.0, 2.0]", "[0.0, 1.0]"))).all_done
    with read(report.state_path) as state:
        assert report.retired[0]["key"] in {r.experiment for r in state.results()}

    grown = api.plan(_manifest(project, ("[0.0, 1.0, 2.0]", "[0.0, 1.0, 2.0, 3.0]")))
    assert (grown.totals["new"], grown.totals["cached"], grown.totals["retired"]) == (1, 4, 0)
    (fresh,) = [e for e in grown.experiments if e["reason"] == "new"]
    assert fresh["params"] == {"theta": 3.0} and "changes" not in fresh


def test_going_back_to_an_earlier_manifest_reuses_its_results_and_retires_the_last(project, cloud):
    _applied(project)
    _applied(project, ("shots: 100", "shots: 200"))
    report = api.plan(_manifest(project))  # as first applied: stored, though not by the last apply
    assert (report.totals["cached"], report.to_run, report.totals["retired"]) == (4, 0, 4)
    assert {r["params"].get("theta") for r in report.retired} == {0.0, 1.0, 2.0, None}
    assert report.changes == []


def test_two_diffs_on_one_connection_give_the_same_answer(project, cloud):
    from qrun import planner

    path = _applied(project)
    manifest = api.validate(_manifest(project, ("shots: 100", "shots: 200")))
    with Store.open(api.state_path(api.validate(path)), readonly=True) as store:
        first, second = (store.diff_plan(planner.experiments(manifest), store.latest_plan_apply(), 10)
                         for _ in range(2))
    assert first == second and first.reasons == [("rot", "cloud", "braket.aws", "changed", 3),
                                                  ("flip", "cloud", "braket.aws", "changed", 1)]


def test_resume_retry_failed_and_cached_follow_the_stored_state(project, cloud):
    manifest = api.validate(_manifest(project))
    with Store.open(api.state_path(manifest)) as store:
        apply_id = store.begin_apply("apply", str(manifest.path), manifest.sha256, None, None, "test")
        api.store_plan(store, manifest, apply_id)
        jobs = store.ready_jobs(apply_id, 10)
        assert len(jobs) == 4
        keys = [store.job_work(job.id)[0].experiment for job in jobs]
        failed, retried, done = jobs[:3]
        for job, retry_at in ((failed, None), (retried, time.time() + 3600)):
            attempt = store.start_attempt(apply_id, job)
            store.fail_attempt(apply_id, job.id, attempt, "broken (planted)", retry_at, tag_absent=True)
        attempt = store.start_attempt(apply_id, done)
        store.complete_job(apply_id, done.id, attempt, [(keys[2], 0, {"0": 100})], [], {})
        store.finish_apply(apply_id, "interrupted")
    report = api.plan(manifest.path)
    reasons = {e["key"]: e["reason"] for e in report.experiments}
    assert reasons == {keys[0]: "failed", keys[1]: "retry", keys[3]: "resume"}  # cached not listed
    assert report.totals == {"new": 0, "changed": 0, "resume": 1, "retry": 1, "failed": 1,
                             "cached": 1, "retired": 0}
    assert report.to_run == 2


def test_a_database_of_schema_4_is_read_and_what_it_did_not_record_is_said(project, cloud):
    path = _applied(project)
    db = api.state_path(api.validate(path))
    raw = sqlite3.connect(db)
    for column in ("point", "seed", "backend_identity"):
        raw.execute(f"ALTER TABLE experiments DROP COLUMN {column}")
    raw.execute("DROP TABLE backend_identities")
    raw.execute("PRAGMA user_version = 4")
    raw.commit()
    raw.close()
    shots = api.plan(_manifest(project, ("shots: 100", "shots: 300")))  # read-only: not migrated
    assert {tuple(f) for g in shots.changes for f in _fields(g["changes"])} == {("shots", 100, 300)}
    seed = api.plan(_manifest(project, ("seed: 7", "seed: 9")))
    assert seed.totals["changed"] == 4
    assert ("seed", "not recorded", 9) in _fields(seed.changes[0]["changes"])
    with Store.open(db, readonly=True) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert api.apply(_manifest(project, ("seed: 7", "seed: 9"))).all_done  # migrates it
    again = api.plan(_manifest(project, ("seed: 7", "seed: 10")))
    assert _fields(again.changes[0]["changes"]) == [("seed", 9, 10)]


# ---------------------------------------------------------------- output: json and md


def test_plan_json_has_a_format_version_and_documented_fields(project, cloud):
    _applied(project)
    _manifest(project, ("shots: 100", "shots: 200"))
    result = CliRunner().invoke(main, ["plan", str(project / "campaign.yaml"), "-o", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format_version"] == 1
    docs = (api.__file__.rsplit("/qrun/", 1)[0] + "/docs/plan.md")
    documented = open(docs, encoding="utf-8").read()
    for name in document:
        assert f"`{name}`" in documented, f"{name} is not documented in docs/plan.md"
    assert document["totals"]["changed"] == 4 and document["to_run"] == 4


LONG = "a_rotation_with_a_name_long_enough_to_fill_comments"


def test_plan_md_is_a_comment_under_githubs_limit_with_the_gist_first(project, tmp_path):
    path = write(tmp_path, "big.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: big}}
        spec:
          shots: 10
          circuits:
            - {{name: {LONG}, source: {project}/circuits/rot.qasm, sweep: {{theta: {{linspace: [0, 3, 3000]}}}}}}
          backends:
            - {{name: aer, provider: qiskit.aer}}
    """)
    result = CliRunner().invoke(main, ["plan", str(path), "-o", "md", "--root", "/"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    first = text.splitlines()[0]
    assert first.startswith("**qrun plan** `big`: **3,000 to run** (3,000 new), 0 cached")
    assert "estimated cost **0.00 USD**" in first
    assert text.splitlines()[2] == "<details><summary>Details</summary>"
    assert text.rstrip().endswith("</details>")
    assert len(text) < planmd.GITHUB_LIMIT
    rows = [line for line in text.splitlines() if line.startswith("| new |")]
    more = [line for line in text.splitlines() if line.startswith("… and ")]
    assert more == [f"… and {3000 - len(rows):,} more experiments not cached"]
    assert 500 < len(rows) < 1000
    small = planmd.markdown(api.plan(path, root="/"), limit=8000)  # a tighter limit holds too
    assert len(small) < 8000 and "… and " in small and small.rstrip().endswith("</details>")


# ---------------------------------------------------------------- saved plans


@pytest.fixture
def no_signal_handlers(monkeypatch):
    """`qrun apply` in-process must not leave its SIGTERM handler in pytest."""
    monkeypatch.setattr(signal, "signal", lambda *args: None)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _db_snapshot(db) -> dict:
    with read(db) as state:
        return {"applies": len(state.applies()), "attempts": len(state.attempts()),
                "events": len(state.events()), "results": len(state.results())}


def test_a_saved_plan_runs_exactly_and_matches_a_plain_apply(project, tmp_path, no_signal_handlers):
    aer = write(project, "aer.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: saved}
        spec:
          shots: 200
          seed: 11
          circuits:
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.3, 2.0]}}
            - {name: flip, source: circuits/flip.qasm}
          backends:
            - {name: aer, provider: qiskit.aer}
    """)
    plain, planned = tmp_path / "plain", tmp_path / "planned"
    assert api.apply(aer, state_dir=plain).all_done
    plan_file = tmp_path / "reviewed.plan"  # not .json: known by its content
    made = _invoke("plan", aer, "--state-dir", planned, "--out", plan_file)
    assert made.exit_code == 0, made.output
    saved = json.loads(plan_file.read_text())
    assert saved["kind"] == "qrun/plan" and saved["campaign"] == "saved"
    assert len(saved["experiments"]["run_keys"]) == 3
    ran = _invoke("apply", plan_file, "--state-dir", planned, "--no-progress")
    assert ran.exit_code == 0, ran.output
    with read(plain / "saved.sqlite") as a, read(planned / "saved.sqlite") as b:
        expected = {r.experiment: r.counts for r in a.results()}
        assert {r.experiment: r.counts for r in b.results()} == expected
    assert set(expected) == set(saved["experiments"]["run_keys"])
    again = _invoke("apply", plan_file, "--state-dir", planned)  # the state moved on
    assert again.exit_code == 1 and "changed since the plan" in again.output


def test_a_plan_made_before_the_manifest_changed_is_refused_and_nothing_written(project, cloud, tmp_path,
                                                                                 no_signal_handlers):
    path = _applied(project)
    _manifest(project, ("shots: 100", "shots: 200"))
    plan_file = tmp_path / "p.json"
    assert _invoke("plan", path, "--out", plan_file).exit_code == 0
    db = api.state_path(api.validate(path))
    before = _db_snapshot(db)
    _manifest(project, ("shots: 100", "shots: 300"))
    refused = _invoke("apply", plan_file)
    assert refused.exit_code == 1
    assert "campaign.yaml changed since the plan" in refused.output and "nothing was run" in refused.output
    assert _db_snapshot(db) == before
    assert len(cloud.accepted) == 4  # the first apply's jobs only

    _manifest(project, ("shots: 100", "shots: 200"))  # back as it was reviewed: runs
    assert _invoke("apply", plan_file, "--no-progress").exit_code == 0
    assert len(cloud.accepted) == 8


def test_a_plan_made_before_another_apply_is_refused(project, cloud, tmp_path, no_signal_handlers):
    path = _manifest(project)
    plan_file = tmp_path / "p.json"
    assert _invoke("plan", path, "--out", plan_file).exit_code == 0  # before any state exists
    assert api.apply(path).all_done
    db = api.state_path(api.validate(path))
    before = _db_snapshot(db)
    with pytest.raises(StalePlanError, match="the state .* changed since the plan .* apply #1"):
        api.apply(plan_file)
    assert _db_snapshot(db) == before


def test_a_plan_is_refused_when_a_source_changed_or_the_state_is_gone(project, cloud, tmp_path):
    path = _applied(project)
    _manifest(project, ("shots: 100", "shots: 200"))
    plan_file = tmp_path / "p.json"
    api_plan = api.plan(path, keep_run_keys=True)
    from qrun import planfile

    planfile.write(api_plan, plan_file)
    rot = project / "circuits/rot.qasm"
    original = rot.read_text()
    rot.write_text(original.replace("rx(theta)", "ry(theta)"))
    with pytest.raises(StalePlanError, match="not those of the plan"):
        api.apply(plan_file)
    rot.write_text(original)
    db = api.state_path(api.validate(path))
    db.rename(db.with_suffix(".moved"))
    with pytest.raises(StalePlanError, match="made against is gone"):
        api.apply(plan_file)
    assert not db.exists()  # refused before anything was opened for writing


def test_a_plan_of_another_campaign_is_refused(project, cloud, tmp_path):
    path = _manifest(project)
    plan_file = tmp_path / "p.json"
    from qrun import planfile

    planfile.write(api.plan(path, keep_run_keys=True), plan_file)
    document = json.loads(plan_file.read_text())
    document["campaign"] = "someone-else"
    plan_file.write_text(json.dumps(document))
    with pytest.raises(StalePlanError, match="plan of campaign someone-else, but .* is campaign review"):
        api.apply(plan_file)
    assert not api.state_path(api.validate(path)).exists()


@pytest.mark.parametrize("damage", ["truncated", "tampered keys", "missing field", "newer format",
                                    "not an object"])
def test_a_corrupt_plan_file_is_a_clear_error(project, cloud, tmp_path, damage, no_signal_handlers):
    path = _manifest(project)
    plan_file = tmp_path / "p.json"
    assert _invoke("plan", path, "--out", plan_file).exit_code == 0
    text = plan_file.read_text()
    document = json.loads(text)
    if damage == "truncated":
        plan_file.write_text(text[: len(text) // 2])
    elif damage == "tampered keys":
        document["experiments"]["run_keys"].pop()
        plan_file.write_text(json.dumps(document))
    elif damage == "missing field":
        del document["state"]
        plan_file.write_text(json.dumps(document))
    elif damage == "newer format":
        document["format_version"] = 99
        plan_file.write_text(json.dumps(document))
    else:
        plan_file.write_text('{"kind": "qrun/plan", "format_version": 1, "campaign": ["x"]}')
    with pytest.raises(PlanFileError):
        api.apply(plan_file)
    result = _invoke("apply", plan_file)
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert not api.state_path(api.validate(path)).exists()


def test_bad_input_to_plan_and_apply_is_a_message(project, cloud, tmp_path, no_signal_handlers):
    path = _manifest(project)
    missing_folder = _invoke("plan", path, "--out", tmp_path / "no" / "such" / "p.json")
    assert missing_folder.exit_code == 2 and "cannot write the plan" in missing_folder.output
    bad = write(project, "bad.yaml", "apiVersion: qrun/v1\nkind: Campaign\n")
    assert _invoke("plan", bad, "-o", "md").exit_code == 2
    plan_file = tmp_path / "p.json"
    assert _invoke("plan", path, "--out", plan_file).exit_code == 0
    retried = _invoke("retry", plan_file)
    assert retried.exit_code == 2 and "qrun retry` takes the manifest" in retried.output
    assert _invoke("apply", tmp_path / "absent.json").exit_code == 2
    path.rename(path.with_name("moved.yaml"))  # the plan's manifest is gone
    gone = _invoke("apply", plan_file)
    assert gone.exit_code == 2 and "campaign.yaml" in gone.output and "Traceback" not in gone.output
