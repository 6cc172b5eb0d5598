"""Unit tests of sweeps, experiment keys and job cutting (pure functions)."""

from __future__ import annotations

import pytest

from qrun import manifest as manifests
from qrun import planner, sweep
from qrun.providers import Limits

from .conftest import write


def test_sweep_value_forms():
    assert sweep.values_of("x", [1, 2.5]) == [1, 2.5]
    assert sweep.values_of("x", 0.5) == [0.5]
    assert sweep.values_of("x", {"values": [3]}) == [3]
    assert sweep.values_of("x", {"linspace": [0, 1, 5]}) == [0, 0.25, 0.5, 0.75, 1.0]
    assert sweep.values_of("x", {"linspace": [2, 3, 1]}) == [2.0]
    assert sweep.values_of("x", {"range": [3]}) == [0, 1, 2]
    assert sweep.values_of("x", {"range": [1, 3]}) == [1, 2]
    assert sweep.values_of("x", {"range": [0, 1, 0.25]}) == [0, 0.25, 0.5, 0.75]
    assert sweep.values_of("x", {"range": [3, 0, -1]}) == [3, 2, 1]
    # (0.4 - 0.1) / 0.1 is 3.0000000000000004 in floats: still three values, stop excluded.
    assert len(sweep.values_of("x", {"range": [0.1, 0.4, 0.1]})) == 3
    assert len(sweep.values_of("x", {"range": [0, 2.7, 0.3]})) == 9
    # A span far below the tolerance above still holds its start (hypothesis found [] here).
    assert sweep.values_of("x", {"range": [1.4944517072970477e-77]}) == [0]
    assert sweep.values_of("x", {"range": [5, 5 + 1e-12]}) == [5]


@pytest.mark.parametrize("spec, message", [
    ([], "empty"),
    ({"linspace": [0, 1]}, "linspace takes"),
    ({"linspace": [0, 1, 0]}, "count must be"),
    ({"range": [0, 1, 0]}, "must not be zero"),
    ({"range": [1, 0]}, "is empty"),
    ({"range": [0, 10**9]}, "at most"),
    ([1, "a"], "finite numbers"),
    ({"steps": [1]}, "expected a list"),
    (True, "must be a number"),
])
def test_sweep_value_errors(spec, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.values_of("x", spec)


def test_grid_and_zip_combinations():
    values = {"b": [1, 2], "a": [10, 20]}
    assert list(sweep.combinations(values, "grid")) == [
        {"a": 10, "b": 1}, {"a": 10, "b": 2}, {"a": 20, "b": 1}, {"a": 20, "b": 2}]
    assert list(sweep.combinations(values, "zip")) == [{"a": 10, "b": 1}, {"a": 20, "b": 2}]
    assert sweep.point_count(values, "grid") == 4
    assert sweep.point_count(values, "zip") == 2
    assert list(sweep.combinations({}, "grid")) == [{}]


def test_key_is_the_hash_of_the_canonical_content():
    import hashlib
    import json

    content = ["qrun/v1", "p1", {"b": 0.5, "a": 1}, "b1", 100, None]
    expected = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    assert planner.experiment_key("p1", {"a": 1, "b": 0.5}, "b1", 100, None) == expected.hexdigest()


def test_keys_depend_on_content_not_names():
    base = planner.experiment_key("p1", {"theta": 0.5}, "b1", 100, 7)
    assert base == planner.experiment_key("p1", {"theta": 0.5}, "b1", 100, 7)
    others = {
        planner.experiment_key("p2", {"theta": 0.5}, "b1", 100, 7),
        planner.experiment_key("p1", {"theta": 0.6}, "b1", 100, 7),
        planner.experiment_key("p1", {"theta": 0.5}, "b2", 100, 7),
        planner.experiment_key("p1", {"theta": 0.5}, "b1", 101, 7),
        planner.experiment_key("p1", {"theta": 0.5}, "b1", 100, None),
    }
    assert base not in others and len(others) == 5


def _manifest(project, body: str):
    write(project, "m.yaml", body)
    return manifests.load(project / "m.yaml")


def test_renaming_a_circuit_keeps_its_keys(project):
    text = """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: t}
        spec:
          circuits: [{name: NAME, source: circuits/ghz.qasm}]
          backends: [{name: aer, provider: qiskit.aer}]
    """
    first = list(planner.experiments(_manifest(project, text.replace("NAME", "ghz"))))
    second = list(planner.experiments(_manifest(project, text.replace("NAME", "renamed"))))
    assert [e.key for e in first] == [e.key for e in second]
    assert second[0].circuit == "renamed"


def test_tuning_options_do_not_change_keys(project):
    text = """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: t}
        spec:
          circuits: [{name: ghz, source: circuits/ghz.qasm}]
          backends: [{name: aer, provider: qiskit.aer, options: OPTIONS}]
    """
    plain = list(planner.experiments(_manifest(project, text.replace("OPTIONS", "{}"))))
    tuned = list(planner.experiments(_manifest(
        project, text.replace("OPTIONS", "{max_parallel_threads: 1}"))))
    precise = list(planner.experiments(_manifest(
        project, text.replace("OPTIONS", "{precision: single}"))))
    assert plain[0].key == tuned[0].key
    assert plain[0].key != precise[0].key


def test_duplicate_work_runs_once(project):
    m = _manifest(project, """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: t}
        spec:
          circuits:
            - {name: a, source: circuits/rot.qasm, sweep: {theta: [0.1, 0.2]}}
          backends: [{name: aer, provider: qiskit.aer}, {name: aer2, provider: qiskit.aer}]
          targets:
            - {circuits: [a], backends: [aer, aer2]}
            - {circuits: [a], backends: [aer]}
    """)
    # aer and aer2 are the same backend (same provider, device, options): 2 experiments.
    assert len(list(planner.experiments(m))) == 2


ROT2 = """\
OPENQASM 3.0;
include "stdgates.inc";
input float a;
input float b;
qubit[1] q;
bit[1] c;
rx(a) q[0];
rz(b) q[0];
c[0] = measure q[0];
"""


def test_repeats_are_found_wherever_they_can_occur(project):
    """Keys are deduplicated without a set of the whole campaign; every kind of repeat
    still runs once: within a grid, within zipped columns, across listings of one program."""
    for name in ("grid", "zipped", "distinct"):  # one program each: no listing shares keys
        write(project, f"circuits/{name}.qasm", f"// {name}\n" + ROT2)
    m = _manifest(project, """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: t}
        spec:
          circuits:
            - {name: grid, source: circuits/grid.qasm, sweep: {a: [0.1, 0.1, 1, 1.0], b: [0.5, 0.6]}}
            - name: zipped
              source: circuits/zipped.qasm
              sweep_mode: zip
              sweep: {a: [0.1, 0.1, 0.1, 0.2], b: [0.5, 0.5, 0.6, 0.5]}
            - name: distinct
              source: circuits/distinct.qasm
              sweep_mode: zip
              sweep: {a: [0.3, 0.3, 0.3], b: [0.1, 0.2, 0.3]}
            - {name: r1, source: circuits/rot.qasm, sweep: {theta: [0.1, 0.2]}}
            - {name: r2, source: circuits/rot.qasm, sweep: {theta: [0.2, 0.3]}}
          backends: [{name: aer, provider: qiskit.aer}]
    """)
    found = [(e.circuit, e.params) for e in planner.experiments(m)]
    assert len({e.key for e in planner.experiments(m)}) == len(found)
    assert found == [
        ("grid", {"a": 0.1, "b": 0.5}), ("grid", {"a": 0.1, "b": 0.6}),
        ("grid", {"a": 1, "b": 0.5}), ("grid", {"a": 1, "b": 0.6}),
        ("grid", {"a": 1.0, "b": 0.5}), ("grid", {"a": 1.0, "b": 0.6}),  # 1.0 is not 1 in a key
        ("zipped", {"a": 0.1, "b": 0.5}), ("zipped", {"a": 0.1, "b": 0.6}),
        ("zipped", {"a": 0.2, "b": 0.5}),
        ("distinct", {"a": 0.3, "b": 0.1}), ("distinct", {"a": 0.3, "b": 0.2}),
        ("distinct", {"a": 0.3, "b": 0.3}),
        ("r1", {"theta": 0.1}), ("r1", {"theta": 0.2}),
        ("r2", {"theta": 0.3}),  # theta 0.2 of rot.qasm on aer is r1's
    ]


def _cut(rows, limits):
    return list(planner.cut_jobs(rows, lambda backend: limits))


def test_jobs_respect_experiment_limit_and_group_by_backend_and_shots():
    rows = [("aer", f"k{i}", 100) for i in range(5)] + [("sv", "s1", 100), ("aer", "k9", 200)]
    jobs = _cut(rows, Limits(max_experiments_per_job=2))
    shapes = sorted((j.backend, tuple(s.experiment for s in j.slices)) for j in jobs)
    assert shapes == [("aer", ("k0", "k1")), ("aer", ("k2", "k3")), ("aer", ("k4",)),
                      ("aer", ("k9",)), ("sv", ("s1",))]


def test_shots_over_the_cap_are_sliced_evenly():
    jobs = _cut([("aer", "big", 25_000)], Limits(max_shots_per_job=10_000))
    assert [(j.slices[0].index, j.slices[0].shots) for j in jobs] == [(0, 8334), (1, 8333), (2, 8333)]
    assert sum(j.slices[0].shots for j in jobs) == 25_000
    assert len({j.key for j in jobs}) == 3


def test_limits_take_the_stricter_value():
    device = Limits(max_shots_per_job=100_000, max_qubits=26)
    manifest_split = Limits(max_shots_per_job=10_000, max_experiments_per_job=50)
    merged = device.tightened(manifest_split)
    assert merged.max_shots_per_job == 10_000
    assert merged.max_experiments_per_job == 50
    assert merged.max_qubits == 26


def test_derived_seeds_are_fixed_and_distinct():
    assert planner.derived_seed(None, "job") is None
    assert planner.derived_seed(7, "job-a") == planner.derived_seed(7, "job-a")
    assert planner.derived_seed(7, "job-a") != planner.derived_seed(7, "job-b")
    assert planner.derived_seed(7, "job-a") != planner.derived_seed(8, "job-a")


def test_local_job_size_defaults_under_device_caps_unless_the_manifest_chooses(project):
    body = """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: t}
        spec:
          circuits: [{name: ghz, source: circuits/ghz.qasm}]
          backends:
            - {name: manila, provider: qiskit.ibm-local, device: fake_manila LIMITS}
            - {name: aer, provider: qiskit.aer}
          SPLIT
    """
    plain = _manifest(project, body.replace("LIMITS", "").replace("SPLIT", ""))
    assert planner.job_limits(plain, "manila").max_experiments_per_job == planner.LOCAL_EXPERIMENTS_PER_JOB
    assert planner.job_limits(plain, "aer").max_experiments_per_job == planner.LOCAL_EXPERIMENTS_PER_JOB
    chosen = _manifest(project, body.replace("LIMITS", ", limits: {max_experiments_per_job: 200}")
                       .replace("SPLIT", ""))
    assert planner.job_limits(chosen, "manila").max_experiments_per_job == 200
    split = _manifest(project, body.replace("LIMITS", "").replace(
        "SPLIT", "split: {max_experiments_per_job: 60}"))
    assert planner.job_limits(split, "manila").max_experiments_per_job == 60
    assert planner.job_limits(split, "aer").max_experiments_per_job == 60
