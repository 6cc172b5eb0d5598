"""End-to-end tests through the CLI, as a user runs qrun."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

from qrun import store

from .conftest import qrun, write

MANIFEST = """
    # yaml-language-server: $schema=../schemas/qrun-v1.schema.json
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: e2e}
    spec:
      shots: 200
      seed: 3
      circuits:
        - {name: ghz, source: circuits/ghz.qasm}
        - name: rot
          source: circuits/rot.qasm
          sweep: {theta: THETAS}
      backends:
        - {name: aer, provider: qiskit.aer}
        - {name: sv, provider: braket.local}
      split: {max_experiments_per_job: 2}
      export: [{path: out/results.jsonl}]
"""


def _manifest(project, thetas="[0.0, 3.14159]"):
    return write(project, "campaign.yaml", MANIFEST.replace("THETAS", thetas))


def _state(state_dir, name="e2e"):
    return store.read(state_dir / f"{name}.sqlite")


def _attempt_count(state_dir) -> int:
    with _state(state_dir) as state:
        return len(state.attempts())


def _completed(state_dir) -> dict:
    with _state(state_dir) as state:
        return {r.experiment: r.completed_at for r in state.results()}


def test_apply_runs_everything_then_nothing(project, _state_dir):
    manifest = _manifest(project)
    plan = qrun("plan", manifest, "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "6 to run (6 new" in plan.stdout
    assert not (_state_dir / "e2e.sqlite").exists(), "plan must not write state"

    first = qrun("apply", manifest)
    assert first.returncode == 0, first.stderr
    assert "6 experiments run" in first.stdout
    rows = [json.loads(line) for line in (project / "out/results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["state"] == "done" for r in rows)
    assert all(sum(r["counts"].values()) == 200 for r in rows)

    attempts_before = _attempt_count(_state_dir)
    second = qrun("apply", manifest)
    assert second.returncode == 0, second.stderr
    assert "0 experiments run, 6 cached" in second.stdout
    assert _attempt_count(_state_dir) == attempts_before

    assert qrun("plan", manifest, "--detailed-exitcode").returncode == 0


def test_edited_manifest_runs_only_new_keys(project, _state_dir):
    manifest = _manifest(project)
    assert qrun("apply", manifest).returncode == 0
    done_before = _completed(_state_dir)

    _manifest(project, "[0.0, 3.14159, 1.0]")  # one new sweep point, on two backends
    plan = qrun("plan", manifest, "-o", "json")
    assert json.loads(plan.stdout)["totals"] == {"new": 2, "changed": 0, "resume": 0, "retry": 0,
                                                 "failed": 0, "cached": 6, "retired": 0}
    again = qrun("apply", manifest)
    assert again.returncode == 0, again.stderr
    assert "2 experiments run, 6 cached" in again.stdout
    done_after = _completed(_state_dir)
    assert len(done_after) == 8
    assert all(done_after[k] == t for k, t in done_before.items()), "cached results were rerun"


def test_status_json_and_exports(project, _state_dir, tmp_path):
    manifest = _manifest(project)
    before = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert before["experiments"] == {"total": 6, "done": 0, "failed": 0, "pending": 6}
    assert qrun("apply", manifest).returncode == 0
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert status["campaign"] == "e2e"
    assert status["experiments"] == {"total": 6, "done": 6, "failed": 0, "pending": 0}

    out_csv = tmp_path / "r.csv"
    result = qrun("export", manifest, "--format", "csv", "-o", out_csv)
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(out_csv.open()))
    assert len(table) == 6
    assert {"key", "circuit", "backend", "provider", "params", "shots", "counts", "state",
            "attempts", "remote_ids", "manifest_sha256", "git_commit"} <= set(table[0])
    rot = [r for r in table if r["circuit"] == "rot"]
    assert {json.loads(r["params"])["theta"] for r in rot} == {0.0, 3.14159}
    assert all(r["attempts"] == "1" for r in table)

    lines = qrun("export", manifest, "-o", "-", "--format", "jsonl").stdout.splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["manifest_sha256"] == status["last_apply"]["manifest_sha256"]


def test_physics_of_the_results(project, _state_dir):
    manifest = _manifest(project)
    assert qrun("apply", manifest).returncode == 0
    rows = [json.loads(x) for x in qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]
    for row in rows:
        counts = row["counts"]
        if row["circuit"] == "ghz":  # GHZ: only 000 and 111, about half each
            assert set(counts) <= {"000", "111"}
            assert 60 <= counts.get("000", 0) <= 140
        elif row["params"]["theta"] == 0.0:
            assert counts == {"0": 200}
        else:  # rx(pi) flips the qubit
            assert counts.get("1", 0) >= 198


def test_provenance_git_commit_and_dirty(project, _state_dir):
    manifest = _manifest(project)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "."], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=project, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True,
                            text=True).stdout.strip()
    assert qrun("apply", manifest).returncode == 0
    (project / "circuits/ghz.qasm").write_text((project / "circuits/ghz.qasm").read_text() + "\n")
    assert qrun("apply", manifest).returncode == 0
    with _state(_state_dir) as state:
        applies = [(a.git_commit, a.git_dirty, a.manifest_sha256) for a in state.applies()]
    assert applies[0][:2] == (commit, 0)
    assert applies[1][:2] == (commit, 1)
    import hashlib
    assert applies[0][2] == hashlib.sha256(manifest.read_bytes()).hexdigest()


def test_bad_manifest_exits_2_without_state(project, _state_dir):
    manifest = write(project, "bad.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: bad}
        spec:
          shots: 0
          circuits: [{name: ghz, source: circuits/nope.qasm}]
          backends: [{name: aer, provider: qiskit.aer}]
    """)
    for command in ("validate", "plan", "apply", "status"):
        result = qrun(command, manifest)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        assert f"{manifest}:5: spec.shots:" in result.stderr
    assert not _state_dir.exists()


def test_help_imports_no_provider_sdk():
    probe = ("import sys\nfrom qrun.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = {'qiskit', 'qiskit_aer', 'braket', 'rich', 'sqlite_utils', 'jsonschema'}\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_usage_errors_exit_2(project):
    assert qrun("apply").returncode == 2
    assert qrun("frobnicate").returncode == 2
    missing = qrun("apply", project / "missing.yaml")
    assert missing.returncode == 2 and "no such file" in missing.stderr
