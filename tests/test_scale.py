"""Campaigns of thousands of experiments: killed and resumed through the CLI, and status,
export and plan in memory that does not grow with the campaign (bench/scale.py measures
the same at 100,000)."""

from __future__ import annotations

import csv
import json
import sqlite3
import tracemalloc

from qrun import __version__, api, planner
from qrun import manifest as manifests
from qrun.errors import StateError
from qrun.store import Store
from qrun.store import read as read_state

from .conftest import kill, qrun, start_apply, wait_until, write

EXPERIMENTS = 2000

CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {{name: {name}}}
    spec:
      shots: 10
      seed: 4
      circuits:
        - name: rot
          source: circuits/rot.qasm
          sweep: {{theta: {{linspace: [0, 3.14159, {count}]}}}}
      backends: [{{name: aer, provider: qiskit.aer}}]
"""


def _campaign(project, name: str, count: int):
    return write(project, f"{name}.yaml", CAMPAIGN.format(name=name, count=count))


def _results(db) -> dict:
    if not db.exists():
        return {}
    try:
        with read_state(db) as state:
            return {r.experiment: r.completed_at for r in state.results()}
    except StateError:  # tables not created yet
        return {}


def _status(manifest) -> dict:
    shown = qrun("status", manifest, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


# 6-12 s here (27 s while other test suites loaded the 2 cores): not marked slow.
def test_thousands_killed_mid_run_resume_and_export_once_each(project, _state_dir, tmp_path):
    manifest = _campaign(project, "many", EXPERIMENTS)
    db = _state_dir / "many.sqlite"

    process = start_apply(manifest, env={})
    reached = wait_until(lambda: len(_results(db)) >= EXPERIMENTS // 4, process, timeout=240)
    kill(process)  # SIGKILL to its process group: coordinator and workers
    assert reached, "the apply ended before a quarter of its results were in"
    at_kill = _results(db)
    assert EXPERIMENTS // 4 <= len(at_kill) < EXPERIMENTS, "the kill must land mid-campaign"

    # Status reads the killed campaign as it is: finished work done, the rest pending.
    report = _status(manifest)
    assert report["experiments"] == {"total": EXPERIMENTS, "done": len(at_kill), "failed": 0,
                                     "pending": EXPERIMENTS - len(at_kill)}
    assert report["lock"] is not None and not report["lock"]["alive"]

    resumed = qrun("apply", manifest, "--no-progress", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    results = _results(db)
    assert len(results) == EXPERIMENTS
    assert all(results[key] == stamp for key, stamp in at_kill.items()), "finished work reran"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM (SELECT job_id FROM attempts WHERE "
                            "state='done' GROUP BY job_id HAVING count(*) > 1)").fetchone()[0] == 0

    report = _status(manifest)
    assert report["experiments"] == {"total": EXPERIMENTS, "done": EXPERIMENTS, "failed": 0,
                                     "pending": 0}
    assert report["jobs"] == {"done": EXPERIMENTS // 25}

    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"many.{fmt}"
        exported = qrun("export", manifest, "-o", out, "-f", fmt)
        assert exported.returncode == 0, exported.stderr
        with open(out, newline="") as handle:
            rows = [json.loads(line) for line in handle] if fmt == "jsonl" \
                else list(csv.DictReader(handle))
        assert len(rows) == EXPERIMENTS
        assert {row["key"] for row in rows} == set(results)
        assert {row["state"] for row in rows} == {"done"}
        counts = [row["counts"] if fmt == "jsonl" else json.loads(row["counts"]) for row in rows]
        assert all(sum(c.values()) == 10 for c in counts)


# -- memory: what reads a stored campaign must not hold the campaign

def _stored(project, state_dir, count: int):
    """A campaign of ``count`` experiments, planned and stored (not run), as apply stores it."""
    path = _campaign(project, f"stored{count}", count)
    manifest = manifests.load(path)
    with Store.open(api.state_path(manifest, state_dir)) as store:
        apply_id = store.begin_apply("apply", str(path), manifest.sha256, None, None, __version__)
        api.store_plan(store, manifest, apply_id)
        store.finish_apply(apply_id, "interrupted")
    return path, manifest


def _peak_mb(work) -> float:
    """Peak of Python's allocations while ``work`` runs, in MB."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_plan_status_export_memory_does_not_grow_with_the_campaign(project, _state_dir, tmp_path):
    # 18,000 more experiments: a list, set or dict of them costs several MB (a key alone is
    # a 64-character string); streaming costs the same at both sizes.
    peaks = {}
    for count in (2000, 20000):
        path, manifest = _stored(project, _state_dir, count)
        peaks[count] = {
            # Each measured at once (the defaults bind this round's campaign).
            "expand": _peak_mb(lambda m=manifest: sum(1 for _ in planner.experiments(m))),
            "plan": _peak_mb(lambda p=path: api.plan(p)),
            "status": _peak_mb(lambda p=path: api.status(p)),
            "export jsonl": _peak_mb(lambda p=path: api.export(p, tmp_path / "out.jsonl")),
            "export csv": _peak_mb(lambda p=path: api.export(p, tmp_path / "out.csv")),
        }
    growth = {name: round(peaks[20000][name] - peaks[2000][name], 2) for name in peaks[2000]}
    assert all(grown < 1.0 for grown in growth.values()), (growth, peaks)
