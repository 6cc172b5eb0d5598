"""Fault injection over every local provider (QRUN_FAULTS), and the retry policy around it.

The cloud providers get the same treatment from their fakes in tests/test_cloud_*.py:
30% of requests answered 429/5xx, jobs failing at the provider, answers lost after accept.
"""

from __future__ import annotations

import json
import shutil

import pytest

from qrun import store
from qrun.errors import QrunError
from qrun.providers import faults

from .conftest import EXAMPLES, qrun

# One small job per experiment, so that faults hit many jobs; all four local families.
MANIFEST = """\
apiVersion: qrun/v1
kind: Campaign
metadata: {name: NAME}
spec:
  shots: 200
  seed: 3
  circuits:
    - name: rot
      source: circuits/rot.qasm
      sweep: {theta: {linspace: [0, 3.14159, 6]}}
    - {name: flip, source: circuits/flip-first.qasm}
    - {name: rabi, source: circuits/rabi.json, sweep: {duration: [252, 500]}}
    - {name: hom, source: circuits/hom.pcvl, input: "|1,1>"}
  backends:
    - {name: aer, provider: qiskit.aer}
    - {name: sv, provider: braket.local, device: braket_sv}
    - {name: atoms, provider: pulser.local}
    - {name: photons, provider: perceval.local}
  targets:
    - {circuits: [rot, flip], backends: [aer, sv]}
    - {circuits: [rabi], backends: [atoms]}
    - {circuits: [hom], backends: [photons]}
  split: {max_experiments_per_job: 1}
  retry: {max_attempts: MAX_ATTEMPTS, backoff: {initial: 0.05s, max: 0.2s}}
"""
EXPERIMENTS = 2 * 7 + 2 + 1


@pytest.fixture
def lab(tmp_path):
    folder = tmp_path / "lab"
    shutil.copytree(EXAMPLES / "circuits", folder / "circuits")
    return folder


def _manifest(lab, name: str, max_attempts: int = 3):
    path = lab / f"{name}.yaml"
    path.write_text(MANIFEST.replace("NAME", name).replace("MAX_ATTEMPTS", str(max_attempts)))
    return path


def _rows(manifest) -> list[dict]:
    """What `qrun export` writes, read in this process (the CLI's export would validate the
    manifest again, importing four SDKs, for every look)."""
    from qrun import api
    from qrun.store import Store

    with Store.open(api.state_path(api.validate(manifest)), readonly=True) as store:
        return [json.loads(json.dumps(row.as_dict())) for row in store.export_rows(store.latest_plan_apply())]


def _attempts(db) -> int:
    with store.read(db) as state:
        return len(state.attempts())


def test_thirty_percent_transient_faults_still_complete_everything(lab, _state_dir):
    manifest = _manifest(lab, "flaky")
    applied = qrun("apply", manifest, env={faults.ENV: "transient=0.3,seed=1"})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Faults were injected" in applied.stderr  # a rehearsal never passes for a real run
    rows = _rows(manifest)
    assert len(rows) == EXPERIMENTS and all(r["state"] == "done" for r in rows)
    # Faults happened, and were absorbed inside attempts (tries), not by new attempts.
    tries = [r["metadata"].get("tries", 1) for r in rows]
    assert sum(t > 1 for t in tries) >= 2, tries
    assert max(tries) <= 5
    # The physics is unharmed: "100" on every flip, no |1,1> in the HOM dip.
    assert all(r["counts"] == {"100": 200} for r in rows if r["circuit"] == "flip")
    assert "|1,1>" not in next(r["counts"] for r in rows if r["circuit"] == "hom")


@pytest.mark.slow  # suite budget: test_cloud_core bounds the call policy, the contract suite runs a busy service
def test_faults_that_never_pass_end_after_the_policys_attempts(lab, _state_dir):
    manifest = _manifest(lab, "down", max_attempts=2)
    applied = qrun("apply", manifest, env={faults.ENV: "transient=1", "COLUMNS": "300"})
    assert applied.returncode == 1
    assert faults.TRANSIENT_ERROR in applied.stderr
    # Each job had exactly the policy's two attempts, each of them five tries inside.
    assert _attempts(_state_dir / "down.sqlite") == 2 * EXPERIMENTS
    assert all(r["state"] == "failed" for r in _rows(manifest))


@pytest.mark.slow  # suite budget: test_cloud_contract's failed-then-retry runs in CI
def test_permanent_failures_are_reported_once_and_retry_completes_after_the_fix(lab, _state_dir):
    manifest = _manifest(lab, "doomed")
    env = {faults.ENV: "permanent=0.4,transient=0.2,seed=5", "COLUMNS": "300"}
    applied = qrun("apply", manifest, env=env)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    rows = _rows(manifest)
    failed = [r for r in rows if r["state"] == "failed"]
    done = [r for r in rows if r["state"] == "done"]
    assert failed and done and len(failed) + len(done) == EXPERIMENTS  # the rest completed
    assert all(faults.PERMANENT_ERROR in r["error"] for r in failed)
    # The table says what failed and why; deterministic failures get no second attempt.
    assert "failed experiments" in applied.stderr and faults.PERMANENT_ERROR in applied.stderr
    assert all(r["attempts"] == 1 for r in failed)

    # Still broken: retry fails the same experiments again, and nothing else runs.
    again = qrun("retry", manifest, env=env)
    assert again.returncode == 1
    assert {r["key"] for r in _rows(manifest) if r["state"] == "failed"} == {r["key"] for r in failed}

    # The cause removed, retry completes the campaign without rerunning what was done.
    fixed = qrun("retry", manifest)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    final = {r["key"]: r for r in _rows(manifest)}
    assert all(r["state"] == "done" for r in final.values())
    assert all(final[r["key"]]["completed_at"] == r["completed_at"] for r in done)


@pytest.mark.parametrize("value", ["transient=30%", "transient=1.5", "flaky=0.1", "transient",
                                   "seed=x", "transient=0.1,transient=0.2"])
def test_bad_fault_settings_are_refused(value):
    with pytest.raises(QrunError, match=f"^{faults.ENV}: "):
        faults.from_env({faults.ENV: value})


def test_bad_fault_settings_stop_apply_before_anything_is_stored(lab, _state_dir):
    manifest = _manifest(lab, "typo")
    applied = qrun("apply", manifest, env={faults.ENV: "transient=30%"})
    assert applied.returncode == 2 and "Traceback" not in applied.stderr
    assert f"{faults.ENV}: transient must be a number" in applied.stderr
    assert not (_state_dir / "typo.sqlite").exists()


def test_doomed_experiments_are_chosen_by_content():
    from qrun.providers.base import Task, TaskFailed

    chosen = faults.Faults(permanent=0.5, seed=1)
    tasks = [Task("qasm3", b"", 0, "digest", {"theta": float(i)}, 10) for i in range(200)]
    first = chosen.after_run(tasks, ["ok"] * len(tasks))
    assert first == chosen.after_run(tasks, ["ok"] * len(tasks))  # the same ones, every time
    assert 60 < sum(isinstance(o, TaskFailed) for o in first) < 140
    other_seed = faults.Faults(permanent=0.5, seed=2).after_run(tasks, ["ok"] * len(tasks))
    assert first != other_seed
    assert faults.Faults().after_run(tasks, ["ok"] * 200) == ["ok"] * 200
