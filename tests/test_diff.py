"""qrun diff: naming sides (files, git revisions), matching experiments, the distances and
the shot-noise test, and the command end to end on a local simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qrun import api, distances
from qrun import diff as diffs
from qrun.cli import main
from qrun.errors import ManifestError, QrunError, RevisionError, StateError
from qrun.executors import ExecutorChoice

from .conftest import write

# ---------------------------------------------------------------- distances, against hand values


def test_tvd_and_hellinger_fidelity_hand_computed():
    a, b = {"0": 30, "1": 70}, {"0": 60, "1": 40}
    assert distances.total_variation(a, b) == pytest.approx(0.3)
    # (sqrt(.3 * .6) + sqrt(.7 * .4))**2
    assert distances.hellinger_fidelity(a, b) == pytest.approx((0.4242640687 + 0.5291502622) ** 2)
    # Disjoint outcomes and scaled counts: no overlap at all, then none missing.
    assert distances.total_variation({"00": 5}, {"11": 7}) == pytest.approx(1.0)
    assert distances.hellinger_fidelity({"00": 5}, {"11": 7}) == 0.0
    assert distances.total_variation({"00": 50, "11": 50}, {"00": 100}) == pytest.approx(0.5)
    assert distances.hellinger_fidelity({"00": 50, "11": 50}, {"00": 100}) == pytest.approx(0.5)
    assert distances.hellinger_fidelity({"0": 1, "1": 3}, {"0": 10, "1": 30}) == pytest.approx(1.0)


def test_hellinger_fidelity_agrees_with_qiskit():
    from qiskit.quantum_info import hellinger_fidelity

    rng = np.random.default_rng(11)
    for _ in range(50):
        outcomes = [format(i, "04b") for i in range(16)]
        a = {k: int(n) for k, n in zip(outcomes, rng.integers(0, 40, 16)) if n}
        b = {k: int(n) for k, n in zip(outcomes, rng.integers(0, 40, 16)) if n}
        assert distances.hellinger_fidelity(a, b) == pytest.approx(hellinger_fidelity(a, b), abs=1e-12)


# ---------------------------------------------------------------- the test and its correction


def test_statistic_equals_scipy_on_a_table_without_rare_outcomes():
    from scipy.stats import chi2_contingency

    a, b = {"00": 480, "01": 20, "10": 30, "11": 470}, {"00": 900, "01": 60, "10": 35, "11": 1005}
    result = diffs.homogeneity_test(a, b)
    table = [[a[k] for k in sorted(a)], [b[k] for k in sorted(a)]]
    statistic, p, dof, _ = chi2_contingency(table, correction=False)
    assert (result.statistic, result.p_value, result.df) == (pytest.approx(statistic), pytest.approx(p), dof)


def test_rare_outcomes_are_pooled_before_testing():
    from scipy.stats import chi2_contingency

    # 01 and 10 are expected 2 and 3.5 times in the smaller sample: pooled into one bin
    # (expected 5.5), which then stands on its own.
    a, b = {"00": 500, "01": 3, "10": 4, "11": 493}, {"00": 480, "01": 1, "10": 3, "11": 516}
    result = diffs.homogeneity_test(a, b)
    statistic, p, dof, _ = chi2_contingency([[500, 7, 493], [480, 4, 516]], correction=False)
    assert (result.bins, result.df) == (3, dof)
    assert result.statistic == pytest.approx(statistic) and result.p_value == pytest.approx(p)
    # A pooled bin still too small joins the smallest other bin.
    small = diffs.homogeneity_test({"0": 100, "1": 100, "2": 1}, {"0": 100, "1": 90, "2": 2})
    reference = chi2_contingency([[100, 101], [100, 92]], correction=False)
    assert small.bins == 2 and small.statistic == pytest.approx(reference[0])
    # One bin left: nothing to disagree on.
    assert diffs.homogeneity_test({"0": 1000}, {"0": 997, "1": 3}).p_value == 1.0


def test_holm_hand_computed():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> kept monotone: .06
    assert diffs.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert diffs.holm([0.9, 0.02]) == pytest.approx([0.9, 0.04])
    assert diffs.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # monotone: never below an earlier step
    assert diffs.holm([]) == []


def _sample(rng, probabilities, shots, size):
    outcomes = [format(i, "b") for i in range(len(probabilities))]
    draws = rng.multinomial(shots, probabilities, size=size)
    return [{k: int(n) for k, n in zip(outcomes, row) if n} for row in draws]


# A noisy 3-qubit GHZ: two large outcomes, six rare ones (expected 1 to 12 times).
NOISY_GHZ = np.array([0.47, 0.004, 0.006, 0.01, 0.012, 0.008, 0.005, 0.485])


@pytest.mark.parametrize("probabilities, shots_a, shots_b", [
    (NOISY_GHZ, 1000, 3000),
    (np.random.default_rng(5).dirichlet(np.full(64, 0.3)), 200, 200),  # sparse: 64 outcomes, 200 shots
])
def test_false_positive_rate_on_identical_distributions(probabilities, shots_a, shots_b):
    rng = np.random.default_rng(2024)
    trials = 2000
    samples = zip(_sample(rng, probabilities, shots_a, trials), _sample(rng, probabilities, shots_b, trials))
    rejected = sum(diffs.homogeneity_test(a, b).p_value < 0.05 for a, b in samples)
    # The level is 5 %: 100 of 2000 expected, binomial sd ~9.7. Never well above it.
    assert rejected / trials <= 0.065, rejected
    assert rejected / trials >= 0.02, rejected  # and not so conservative it has no power


def test_family_wise_false_alarms_stay_under_alpha_with_holm():
    rng = np.random.default_rng(7)
    families, size = 300, 20
    alarms = 0
    for _ in range(families):
        pairs = zip(_sample(rng, NOISY_GHZ, 1000, size), _sample(rng, NOISY_GHZ, 1000, size))
        adjusted = diffs.holm([diffs.homogeneity_test(a, b).p_value for a, b in pairs])
        alarms += min(adjusted) < 0.05
    # Uncorrected, 1 - 0.95**20 = 64 % of families would raise an alarm.
    assert alarms / families <= 0.08, alarms


def _shifted(tvd):
    moved = NOISY_GHZ.copy()
    moved[0] += tvd
    moved[7] -= tvd
    return moved


def test_power_on_a_shifted_distribution_is_the_theoretical_one():
    from scipy.stats import chi2, ncx2

    rng = np.random.default_rng(99)
    trials, shots = 500, 4000
    for tvd in (0.04, 0.06):
        shifted = _shifted(tvd)
        samples = zip(_sample(rng, NOISY_GHZ, shots, trials), _sample(rng, shifted, shots, trials))
        power = sum(diffs.homogeneity_test(a, b).p_value < 0.05 for a, b in samples) / trials
        # Pearson's X**2 under the alternative: noncentral chi-square, 7 df (no outcome is
        # rare at 4000 shots), noncentrality n_a n_b / (n_a + n_b) * sum (p - q)**2 / mean.
        pooled = (NOISY_GHZ + shifted) / 2
        noncentrality = shots / 2 * np.sum((NOISY_GHZ - shifted) ** 2 / pooled)
        expected = ncx2.sf(chi2.isf(0.05, 7), 7, noncentrality)  # 0.77 at TVD 0.04, 0.99 at 0.06
        assert abs(power - expected) <= 0.06, (tvd, power, expected)
    assert power >= 0.97


def test_one_shifted_pair_among_twenty_is_found_after_holm():
    rng = np.random.default_rng(3)
    shifted, found = _shifted(0.06), 0
    for _ in range(100):
        p_values = [diffs.homogeneity_test(a, b).p_value for a, b in
                    zip(_sample(rng, NOISY_GHZ, 4000, 19), _sample(rng, NOISY_GHZ, 4000, 19))]
        a, b = _sample(rng, NOISY_GHZ, 4000, 1)[0], _sample(rng, shifted, 4000, 1)[0]
        adjusted = diffs.holm(p_values + [diffs.homogeneity_test(a, b).p_value])
        found += adjusted[-1] < 0.05 and min(adjusted[:-1]) >= 0.05
    assert found >= 75, found  # power at alpha / 20 is 0.92 (noncentral chi-square), times ~0.95


# ---------------------------------------------------------------- naming the sides


def test_parse_sides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("x")
    (tmp_path / "main").write_text("a file that is also a branch name")
    side = diffs.Side
    assert diffs.parse_sides("c.yaml", "c.yaml@HEAD~1") == (side(Path("c.yaml")), side(Path("c.yaml"), "HEAD~1"))
    assert diffs.parse_sides("c.yaml", "@HEAD~1")[1] == side(Path("c.yaml"), "HEAD~1")
    assert diffs.parse_sides("c.yaml", "HEAD~1")[1] == side(Path("c.yaml"), "HEAD~1", bare=True)
    assert diffs.parse_sides("c.yaml", "origin/main")[1].revision == "origin/main"
    assert diffs.parse_sides("c.yaml@v1", "c.yaml@HEAD@{1}")[1].revision == "HEAD@{1}"  # first '@'
    assert diffs.parse_sides("c.yaml", "main")[1] == side(Path("main"))  # an existing file wins
    assert diffs.parse_sides("c.yaml", "@main")[1].revision == "main"  # ... unless asked
    assert diffs.parse_sides("c.yaml", "other.yaml")[1] == side(Path("other.yaml"))  # missing: a file
    with pytest.raises(QrunError, match="A .* must name a manifest"):
        diffs.parse_sides("@HEAD", "c.yaml")
    with pytest.raises(QrunError, match="give a git revision after '@'"):
        diffs.parse_sides("c.yaml@", "c.yaml")
    with pytest.raises(RevisionError, match="not a git revision"):
        diffs.parse_sides("c.yaml", "c.yaml@--output=x")


# ---------------------------------------------------------------- end to end

CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: NAME}
    spec:
      shots: 400
      seed: 3
      circuits:
        - {name: ghz, source: circuits/GHZ}
        - name: rot
          source: circuits/rot.qasm
          sweep: {theta: THETAS}
      backends:
        - {name: aer, provider: qiskit.aer}
      targets:
        - {circuits: [ghz, rot], backends: [aer], shots: ROT_SHOTS}
"""
ONE_WORKER = ExecutorChoice(workers=1)


def _campaign(project, name="d", ghz="ghz.qasm", thetas="[0.0, 1.0]", shots=400, file="campaign.yaml"):
    text = CAMPAIGN.replace("NAME", name).replace("GHZ", ghz).replace("THETAS", thetas)
    return write(project, file, text.replace("ROT_SHOTS", str(shots)))


def _git(project, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=project,
                   check=True, capture_output=True)


def _commit(project, message="c"):
    _git(project, "add", ".")
    _git(project, "commit", "-qm", message)


def _diff(*args):
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def test_diff_against_a_git_revision(project, monkeypatch):
    monkeypatch.chdir(project)
    _git(project, "init", "-q")
    manifest = _campaign(project)
    _commit(project)
    assert api.apply(manifest, executor=ONE_WORKER).all_done
    # The next revision: ghz runs another circuit (its results move), rot gets more shots
    # and a new point; theta 1.0 is dropped.
    _campaign(project, ghz="flip.qasm", thetas="[0.0, 2.0]", shots=800)
    assert api.apply(manifest, executor=ONE_WORKER).all_done

    result = _diff("campaign.yaml@HEAD", "campaign.yaml", "-o", "json")
    assert result.exit_code == diffs.EXIT_DIFFERS, result.output
    report = json.loads(result.stdout)
    assert report["format_version"] == 1 and report["verdict"] == "differs"
    assert report["a"]["revision"] == "HEAD" and len(report["a"]["commit"]) == 40
    assert [(e["circuit"], e["params"]) for e in report["removed"]] == [("rot", {"theta": 1.0})]
    assert [(e["circuit"], e["params"], e["shots"]) for e in report["added"]] == [("rot", {"theta": 2.0}, 800)]
    matched = {(m["circuit"], json.dumps(m["params"])): m for m in report["matched"]}
    ghz, rot0 = matched["ghz", "{}"], matched["rot", '{"theta": 0.0}']
    assert [c["field"] for c in ghz["changes"]] == ["source", "shots"]
    assert "circuits/ghz.qasm" in ghz["changes"][0]["a"] and "circuits/flip.qasm" in ghz["changes"][0]["b"]
    assert rot0["changes"] == [{"field": "shots", "a": 400, "b": 800}]
    # GHZ (000/111) against 100 on every shot: as far apart as can be, beyond any noise.
    assert ghz["comparison"]["tvd"] == pytest.approx(1.0) and ghz["comparison"]["beyond_noise"]
    assert ghz["comparison"]["hellinger_fidelity"] == 0.0
    # rx(0) reads 0 on every shot either way: no difference at all.
    assert rot0["comparison"]["tvd"] == 0.0 and not rot0["comparison"]["beyond_noise"]
    assert report["summary"] == {"removed": 1, "added": 1, "matched": 2, "changed": 2,
                                 "compared": 2, "beyond_noise": 1, "not_compared": 0}

    # The shorthand: A's path at a bare revision, in the order written (so, reversed).
    reverse = _diff("campaign.yaml", "HEAD", "-o", "md")
    assert reverse.exit_code == diffs.EXIT_DIFFERS, reverse.output
    assert "**Verdict: differs**" in reverse.stdout
    assert "## Removed (only in A): 1" in reverse.stdout and "| rot | aer | theta=2.0 | 800 |" in reverse.stdout
    assert "shots: 800 → 400" in reverse.stdout

    # A campaign against itself: one stored result per pair, nothing differs.
    same = api.diff("campaign.yaml", "campaign.yaml")
    assert same.exit_code == diffs.EXIT_SAME and same.verdict == "same"
    assert all(p.comparison and p.comparison.test is None for p in same.pairs)
    assert not (same.added or same.removed or same.changed)


def test_results_of_the_revision_not_stored(project, monkeypatch):
    monkeypatch.chdir(project)
    _git(project, "init", "-q")
    manifest = _campaign(project, thetas="[0.0]")
    _commit(project)
    _campaign(project, thetas="[0.0]", shots=300)  # only this version is applied
    assert api.apply(manifest, executor=ONE_WORKER).all_done
    result = _diff("campaign.yaml@HEAD", "campaign.yaml")
    assert result.exit_code == diffs.EXIT_NOTHING_COMPARED, result.output
    assert "A (campaign.yaml@HEAD): none of its 2 experiments has a stored result" in result.stdout
    assert "check out HEAD and run qrun apply" in result.stdout
    assert "not compared: no stored result in A (not in its state database)" in result.stdout


def test_python_factory_read_at_the_revision(project, monkeypatch):
    monkeypatch.chdir(project)
    _git(project, "init", "-q")
    factory = "from qiskit import QuantumCircuit\n\ndef build():\n    qc = QuantumCircuit(1, 1)\n" \
              "    qc.GATE(0)\n    qc.measure(0, 0)\n    return qc\n"
    write(project, "lib/__init__.py", "")
    write(project, "lib/circuits.py", factory.replace("GATE", "x"))
    manifest = write(project, "f.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: f}
        spec:
          shots: 300
          circuits: [{name: c, source: {python: "lib.circuits:build"}}]
          backends: [{name: aer, provider: qiskit.aer}]
    """)
    _commit(project)
    assert api.apply(manifest, executor=ONE_WORKER).all_done
    write(project, "lib/circuits.py", factory.replace("GATE", "sx"))  # half 0, half 1
    _forget_module("lib")  # this process imported the old one: apply must see the edit
    assert api.apply(manifest, executor=ONE_WORKER).all_done
    report = api.diff("f.yaml@HEAD", "f.yaml")
    [pair] = report.pairs
    assert [c.field for c in pair.changes] == ["source"]  # the old factory's circuit: x
    assert pair.comparison and pair.comparison.beyond_noise  # "1" every shot, against half "0"
    assert report.exit_code == diffs.EXIT_DIFFERS
    _forget_module("lib")


def _forget_module(top):
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def test_unrelated_campaigns_match_nothing(project, monkeypatch):
    monkeypatch.chdir(project)
    first = _campaign(project, name="one", thetas="[0.0]")
    other = write(project, "other.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: two}
        spec:
          shots: 100
          circuits: [{name: flip, source: circuits/flip.qasm}]
          backends: [{name: aer, provider: qiskit.aer}]
    """)
    assert api.apply(first, executor=ONE_WORKER).all_done
    assert api.apply(other, executor=ONE_WORKER).all_done
    result = _diff(first, other)
    assert result.exit_code == diffs.EXIT_NOTHING_COMPARED, result.output
    assert "nothing matches: no experiment of A has the circuit, backend and parameters" in result.stdout
    assert "## Removed (only in A): 2" in result.stdout and "## Added (only in B): 1" in result.stdout
    as_json = json.loads(_diff(first, other, "-o", "json").stdout)
    assert as_json["verdict"] == "nothing compared" and as_json["matched"] == []


# ---------------------------------------------------------------- bad input: exit 1, a message


def test_missing_state(project, monkeypatch):
    monkeypatch.chdir(project)
    _campaign(project)
    result = _diff("campaign.yaml", "campaign.yaml")
    assert result.exit_code == 1 and "campaign d has no state at" in result.stderr
    with pytest.raises(StateError, match="run qrun apply first"):
        api.diff("campaign.yaml", "campaign.yaml")


def test_bad_revisions_and_files(project, monkeypatch):
    monkeypatch.chdir(project)
    _campaign(project)
    not_git = _diff("campaign.yaml", "campaign.yaml@HEAD")
    assert not_git.exit_code == 1 and "is not in a git repository" in not_git.stderr
    missing = _diff("missing.yaml", "campaign.yaml")
    assert missing.exit_code == 1 and "missing.yaml:0: no such file" in missing.stderr
    _git(project, "init", "-q")
    _commit(project)
    unknown = _diff("campaign.yaml", "campaign.yaml@v9")
    assert unknown.exit_code == 1 and "no revision 'v9' in the git repository" in unknown.stderr
    bare = _diff("campaign.yaml", "HEAD~5")
    assert bare.exit_code == 1 and "'HEAD~5' is no file, and no revision" in bare.stderr
    write(project, "new.yaml", "x: 1\n")  # not committed
    absent = _diff("new.yaml@HEAD", "campaign.yaml")
    assert absent.exit_code == 1 and "new.yaml does not exist at HEAD" in absent.stderr
    (project / "circuits/ghz.qasm").unlink()
    write(project, "circuits/ghz.qasm/inside.txt", "x")  # a folder where a file was
    _commit(project, "folder")
    folder = _diff("campaign.yaml@HEAD", "campaign.yaml")
    assert folder.exit_code == 1, folder.output
    assert "campaign.yaml@HEAD:8: spec.circuits[0].source: source file 'circuits/ghz.qasm' not found" in folder.stderr
    assert "Traceback" not in not_git.output + folder.output + missing.output + unknown.output + absent.output
    assert _diff("campaign.yaml", "campaign.yaml", "--alpha", "1.5").exit_code == 1


def test_broken_manifest_at_a_revision_is_named_so(project, monkeypatch):
    monkeypatch.chdir(project)
    _git(project, "init", "-q")
    _campaign(project, ghz="nope.qasm")
    _commit(project)
    _campaign(project)
    with pytest.raises(ManifestError) as caught:
        api.diff("campaign.yaml@HEAD", "campaign.yaml")
    [problem] = caught.value.problems
    assert problem.file == "campaign.yaml@HEAD" and "qrun-diff-" not in problem.message
