"""The shipped examples validate and run (in a copy, so the repository stays clean)."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import EXAMPLES, qrun


@pytest.fixture
def examples(tmp_path):
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("results", "runs"))
    return copy


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_validates(name):
    result = qrun("validate", EXAMPLES / name)
    assert result.returncode == 0, result.stderr
    assert ": ok: campaign" in result.stdout


def test_quickstart_runs_and_exports(examples):
    result = qrun("apply", examples / "quickstart.yaml")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in (examples / "results/quickstart.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and all(r["state"] == "done" for r in rows)
    assert {r["provider"] for r in rows} == {"qiskit.aer", "braket.local", "qiskit.ibm-local",
                                             "pulser.local", "perceval.local"}
    flips = [r["counts"] for r in rows if r["circuit"] == "flip"]
    assert flips == [{"100": 1000}, {"100": 1000}]
    hom = next(r["counts"] for r in rows if r["circuit"] == "hom")
    assert "|1,1>" not in hom and sum(hom.values()) == 1000


def test_sweep_example_slices_and_merges_shots(examples):
    result = qrun("apply", examples / "sweep.yaml")
    assert result.returncode == 0, result.stderr
    import csv

    rows = list(csv.DictReader((examples / "results/sweep-demo.csv").open()))
    assert len(rows) == 8 + 12 + 3 + 8
    big = [r for r in rows if r["shots"] == "10000"]
    assert len(big) == 8
    for row in big:
        assert sum(json.loads(row["counts"]).values()) == 10000
        assert json.loads(row["metadata"])["slices"] == [5000, 5000]
    pairs = sorted(tuple(json.loads(r["params"]).values()) for r in rows
                   if r["circuit"] == "ramsey-pairs")
    assert pairs == [(0.0, 0.25), (0.5, 0.75), (1.0, 1.25)]  # (phi, theta), zipped
