"""braket.aws program sets: many experiments in one quantum task, one task fee.

The fake Braket service declares program sets when asked (``FakeBraket(program_sets=True)``,
the local simulator's 100 executables and 200,000 shots), runs each executable on Braket's
simulator and answers in the service's result format; the real Braket SDK reads it.
Results are checked against exact probabilities (Qiskit's Statevector), and against the
same campaign run one task per circuit, within the shot-noise bound of test_differential.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import textwrap

import pytest

from qrun import api
from qrun.planner import cut_jobs, jobs_needed
from qrun.providers.braket_aws.fake import FakeBraket
from qrun.providers.spec import Limits

from .conftest import qrun, write
from .test_cloud_braket_aws import DEVICE, _rows, _sdk_session, aws_env  # noqa: F401 (the fixture below)
from .test_differential import _exact_qiskit, within_shot_noise

# boto3's keys for the fake, never the real ones (test_cloud_braket_aws.aws_env)
pytestmark = pytest.mark.usefixtures("aws_env")

SHOTS = 400
THETAS = 12


def _pattern_circuit(flipped: tuple, order: tuple) -> str:
    """Three qubits, X on ``flipped``, qubit i measured into classical bit order[i]: one
    outcome for sure, which tells any mix-up of bits apart."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[3];", "creg c[3];"]
    lines += [f"x q[{q}];" for q in flipped]
    lines += [f"measure q[{q}] -> c[{order[q]}];" for q in range(3)]
    return "\n".join(lines) + "\n"


SWEPT = textwrap.dedent("""\
    OPENQASM 3.0;
    include "stdgates.inc";
    input float theta;
    qubit[2] q;
    bit[2] c;
    ry(theta) q[0];
    cx q[0], q[1];
    rx(theta / 2) q[1];
    c[1] = measure q[0];
    c[0] = measure q[1];
    """)


def _patterns() -> dict:
    """Every X pattern on three qubits with every measurement order: 48 circuits."""
    circuits = {}
    for size in range(4):
        for flipped in itertools.combinations(range(3), size):
            for order in itertools.permutations(range(3)):
                name = "x" + "".join(map(str, flipped)) + "-m" + "".join(map(str, order))
                circuits[name] = _pattern_circuit(flipped, order)
    return circuits


def _campaign(project, url: str, name: str = "sets", extra: str = "", shots: int = SHOTS):
    entries = []
    for circuit, text in _patterns().items():
        write(project, f"circuits/{circuit}.qasm", text)
        entries.append(f"    - {{name: {circuit}, source: circuits/{circuit}.qasm}}")
    write(project, "circuits/swept.qasm", SWEPT)
    entries.append(f"    - {{name: swept, source: circuits/swept.qasm, "
                   f"sweep: {{theta: {{linspace: [0, 3.14159, {THETAS}]}}}}}}")
    entries.append("    - {name: ghz, source: circuits/ghz.qasm}")
    circuits = "\n".join(entries)
    return write(project, f"{name}.yaml", f"""
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: {name}}}
spec:
  shots: {shots}
  circuits:
{circuits}
  backends:
    - name: aws
      provider: braket.aws
      device: {DEVICE}
      options: {{endpoint: "{url}"}}
      {extra}
  retry: {{max_attempts: 3, backoff: {{initial: 0.05s, max: 0.2s}}}}
""")


def _exact(row, project) -> dict:
    if row["circuit"] == "swept":
        text = SWEPT.replace("input float theta;\n", "").replace("theta", repr(row["params"]["theta"]))
        return _exact_qiskit("qasm3", text)
    return _exact_qiskit("qasm2", (project / f"circuits/{row['circuit']}.qasm").read_text())


EXPERIMENTS = 48 + THETAS + 1


@pytest.fixture
def set_fake():
    service = FakeBraket(program_sets=True)
    yield service
    service.stop()


def test_program_set_results_are_exact_and_agree_with_one_task_per_circuit(project, set_fake,
                                                                           _state_dir):
    """61 experiments of one shot count make one program set task; every measurement
    pattern comes back in qrun's bit order, exactly where the outcome is certain and
    within shot noise elsewhere; the same campaign run one task per circuit agrees."""
    manifest = _campaign(project, set_fake.start())
    assert api.apply(manifest).all_done
    assert len(set_fake.tasks) == 1, "one program set, one task fee"
    (task,) = set_fake.tasks.values()
    assert task.executables == EXPERIMENTS and task.shots == EXPERIMENTS * SHOTS
    assert task.programs == 48 + 1 + 1, "the sweep's points share one program with list inputs"
    in_sets = {(r["circuit"], json.dumps(r["params"])): r for r in _rows(manifest)}
    assert len(in_sets) == EXPERIMENTS and all(r["state"] == "done" for r in in_sets.values())

    single = FakeBraket()  # SV1 as documented: no program sets, one task per circuit
    try:
        other = _campaign(project, single.start(), name="single")
        assert api.apply(other).all_done
        assert len(single.tasks) == EXPERIMENTS
        one_each = {(r["circuit"], json.dumps(r["params"])): r for r in _rows(other)}
    finally:
        single.stop()

    problems = []
    for key, row in in_sets.items():
        exact = _exact(row, project)
        for label, counts in (("program set", row["counts"]), ("one task", one_each[key]["counts"])):
            problems += [f"{key} {label}: {p}" for p in within_shot_noise(counts, exact, SHOTS)]
        if max(exact.values()) > 1 - 1e-9:  # a certain outcome: both runs give exactly it
            assert row["counts"] == one_each[key]["counts"] == {max(exact, key=exact.get): SHOTS}, key
        else:  # the two runs differ by no more than two samples' noise
            for outcome in set(row["counts"]) | set(one_each[key]["counts"]):
                p = exact.get(outcome, 0.0)
                gap = abs(row["counts"].get(outcome, 0) - one_each[key]["counts"].get(outcome, 0)) / SHOTS
                if gap > 5.5 * math.sqrt(2 * p * (1 - p) / SHOTS) + 4 / SHOTS:
                    problems.append(f"{key} {outcome}: the runs differ by {gap:.3f}")
    assert not problems, problems[:10]


def test_a_lost_answer_on_a_program_set_create_never_makes_a_second_task(project, _state_dir):
    """Every create's answer is lost after the service made the task: the engine looks the
    tag up, finds the one program set, and follows it; nothing is paid twice."""
    lossy = FakeBraket(program_sets=True, lose_after_accept=1.0)
    try:
        manifest = _campaign(project, lossy.start())
        assert api.apply(manifest).all_done
        assert len(lossy.tasks) == 1 and list(lossy.accepted.values()) == [1]
        assert lossy.injected["lost"] >= 1
        assert qrun("apply", manifest).returncode == 0  # nothing new is sent
        assert len(lossy.tasks) == 1
    finally:
        lossy.stop()


def test_a_failed_executable_fails_its_experiment_alone_and_a_retry_sends_only_it(project,
                                                                                 _state_dir):
    """Braket reports failures per executable: those experiments fail with the device's
    words, the rest of the set is done, and `qrun retry` sends only the failed ones."""
    flaky = FakeBraket(program_sets=True, fail_executables=0.2, seed=7)
    try:
        manifest = _campaign(project, flaky.start())
        report = api.apply(manifest)
        failed = report.state["failed"]
        assert 0 < failed < EXPERIMENTS and report.state["done"] == EXPERIMENTS - failed
        assert len(flaky.tasks) == 1
        errors = {r["error"] for r in _rows(manifest) if r["state"] == "failed"}
        assert errors == {"Braket device failure: injected: the device failed this executable (retryable)"}
        flaky.fail_executables = 0.0
        assert qrun("retry", manifest).returncode == 0
        assert len(flaky.tasks) == 2
        (second,) = [t for t in flaky.tasks.values() if t is not next(iter(flaky.tasks.values()))]
        assert second.executables == failed
        assert all(r["state"] == "done" for r in _rows(manifest))
    finally:
        flaky.stop()


def test_the_devices_own_limits_cut_the_jobs_and_the_manifest_may_tighten_them(project, set_fake,
                                                                                _state_dir):
    url = set_fake.start()
    manifest = _campaign(project, url, extra="limits: {max_experiments_per_job: 25}")
    assert api.apply(manifest).all_done
    assert sorted(t.executables for t in set_fake.tasks.values()) == [11, 25, 25]
    # 61 experiments of 4,000 shots: a set holds 200,000 shots, so 50 of them
    set_fake.tasks.clear()
    assert api.apply(_campaign(project, url, name="big", shots=4000)).all_done
    assert sorted((t.executables, t.shots) for t in set_fake.tasks.values()) == [(11, 44_000), (50, 200_000)]


def test_a_device_that_cannot_be_read_is_cut_as_the_last_apply_read_it(project, set_fake, _state_dir):
    """The service is down when new work is planned: its jobs are cut by the program-set
    size an earlier apply read (what `plan` uses), left for the next apply by the engine
    as for any unreachable service, and sent as one set once the service is back."""
    url = set_fake.start()
    assert api.apply(_campaign(project, url)).all_done
    port = int(url.rsplit(":", 1)[1])
    set_fake.stop()  # nothing listens there now
    changed = _campaign(project, url, shots=SHOTS + 100)  # all new experiments
    result = qrun("apply", changed, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    with sqlite3.connect(_state_dir / "sets.sqlite") as conn:
        sizes = sorted(n for (n,) in conn.execute("SELECT count(*) FROM slices GROUP BY job_id"))
    assert sizes == [EXPERIMENTS, EXPERIMENTS], "one set for each shot count, not one job per circuit"
    set_fake.start(port)  # the service returns, its tasks kept
    assert qrun("apply", changed).returncode == 0
    assert len(set_fake.tasks) == 2 and set(set_fake.accepted.values()) == {1}


# -- the fake refuses what the service refuses, in the shape the SDK reads

def _program_set(programs, shots):
    from braket.ir.openqasm import Program, ProgramSet

    return ProgramSet(programs=[Program(source=s, inputs=i) for s, i in programs]).json(), shots


FLIP = 'OPENQASM 3.0;\nqubit[1] q;\nbit[1] c;\nx q[0];\nc[0] = measure q[0];\n'
TURN = 'OPENQASM 3.0;\ninput float t;\nqubit[1] q;\nbit[1] c;\nrx(t) q[0];\nc[0] = measure q[0];\n'


@pytest.mark.parametrize("programs, shots, words", [
    ([(FLIP, None)] * 101, 101, "takes at most 100"),
    ([(FLIP, None), (TURN, {"t": [0.1, 0.2]})], 10, "must be divisible"),
    ([(FLIP, None)], 0, "Shots must not be zero"),
    ([(FLIP, None)] * 2, 400_000, "are not in the range [1, 200000]"),
    ([(FLIP, None), (FLIP.replace("x q[0]", "reset q[0]"), None)], 20, "First failure"),
])
def test_the_fake_refuses_program_sets_the_service_refuses(set_fake, programs, shots, words):
    import botocore.exceptions
    from braket.aws.aws_quantum_task import _create_program_set_task

    session = _sdk_session(set_fake.start())
    action, shots = _program_set(programs, shots)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        _create_program_set_task(session, deviceArn=DEVICE, action=action, shots=shots,
                                 outputS3Bucket="bucket", outputS3KeyPrefix="p")
    assert words in str(refused.value)
    assert not set_fake.tasks


def test_a_device_without_program_sets_refuses_them():
    import botocore.exceptions

    plain = FakeBraket()
    try:
        session = _sdk_session(plain.start())
        action, shots = _program_set([(FLIP, None)] * 2, 20)
        with pytest.raises(botocore.exceptions.ClientError, match="does not support the action type"):
            session.create_quantum_task(deviceArn=DEVICE, action=action, shots=shots,
                                        outputS3Bucket="bucket", outputS3KeyPrefix="p")
        capabilities = json.loads(session.get_device(DEVICE)["deviceCapabilities"])
        assert "braket.ir.openqasm.program_set" not in capabilities["action"]
    finally:
        plain.stop()


def test_the_sdks_own_program_sets_run_on_the_fake(set_fake):
    """A user's own script (AwsDevice.run with a ProgramSet) rehearses on the fake: the SDK
    reads the device's action, the results and, for a FAILED set, the per-executable
    failures (it needs GetQuantumTask's actionMetadata for that)."""
    from braket.aws import AwsDevice
    from braket.circuits import Circuit, FreeParameter
    from braket.program_sets import CircuitBinding, ProgramSet

    session = _sdk_session(set_fake.start())
    device = AwsDevice(DEVICE, aws_session=session)
    assert device.properties.action["braket.ir.openqasm.program_set"].maximumExecutables == 100
    theta = FreeParameter("theta")
    program_set = ProgramSet([Circuit().x(0).cnot(0, 1),
                              CircuitBinding(Circuit().rx(0, theta), input_sets={"theta": [0.0, math.pi]})],
                             shots_per_executable=50)
    result = device.run(program_set, s3_destination_folder=("bucket", "p")).result()
    assert dict(result[0][0].counts) == {"11": 50}
    assert [dict(entry.counts) for entry in result[1]] == [{"0": 50}, {"1": 50}]

    set_fake.faults.fail_jobs = 1.0
    failed = device.run(program_set, s3_destination_folder=("bucket", "p"))
    result = failed.result()
    assert failed.state() == "FAILED"
    assert all(entry.failureMetadata.category.value == "DEVICE" for entry in result[1])


# -- how jobs are cut by a program set's size

@pytest.mark.parametrize("limits", [
    Limits(max_experiments_per_job=100, max_total_shots_per_job=200_000),
    Limits(max_experiments_per_job=7, max_total_shots_per_job=10_000),
    Limits(max_experiments_per_job=1),
    Limits(max_total_shots_per_job=1_000),
    Limits(max_shots_per_job=300, max_total_shots_per_job=2_000),
])
@pytest.mark.parametrize("shots", [1, 100, 999, 1_000, 1_001, 5_000, 250_000])
def test_jobs_respect_total_shots_and_the_count_matches_the_cut(limits, shots):
    experiments = 37
    jobs = list(cut_jobs((("b", f"e{i}", shots) for i in range(experiments)), lambda _: limits))
    for job in jobs:
        if limits.max_experiments_per_job:
            assert len(job.slices) <= limits.max_experiments_per_job
        if limits.max_total_shots_per_job:
            assert sum(s.shots for s in job.slices) <= limits.max_total_shots_per_job
        if limits.max_shots_per_job:
            assert all(s.shots <= limits.max_shots_per_job for s in job.slices)
    by_experiment: dict = {}
    for job in jobs:
        for s in job.slices:
            by_experiment[s.experiment] = by_experiment.get(s.experiment, 0) + s.shots
    assert by_experiment == {f"e{i}": shots for i in range(experiments)}, "every shot planned once"
    assert jobs_needed(experiments, shots, limits) == len(jobs)


def test_plan_counts_tasks_by_what_the_last_apply_read_from_the_device(project, set_fake,
                                                                        _state_dir):
    """`plan` stays off the network: before any apply it counts SV1 as one task per
    circuit (AWS documents no program sets there); once an apply has read the device's
    program-set action, plan counts sets."""
    def planned_tasks(manifest) -> int:
        plan = json.loads(qrun("plan", manifest, "-o", "json").stdout)
        return next(b["tasks"] for b in plan["cost"]["backends"] if b["backend"] == "aws")

    url = set_fake.start()
    manifest = _campaign(project, url)
    assert planned_tasks(manifest) == EXPERIMENTS
    assert not set_fake.tasks, "plan sent nothing"
    assert api.apply(manifest).all_done
    changed = _campaign(project, url, shots=SHOTS + 100)  # the same campaign, all new keys
    assert planned_tasks(changed) == 1


def test_status_shows_the_usage_braket_reported_and_the_calibration_beside_the_estimate(
        project, set_fake, _state_dir):
    manifest = _campaign(project, set_fake.start(), extra="pricing: {per_task: 0.30, per_shot: 0.001}")
    assert api.apply(manifest).all_done
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    (row,) = status["spend"]["backends"]
    shots = EXPERIMENTS * SHOTS
    assert (row["tasks"], row["shots"]) == (1, shots)
    assert row["cost"] == pytest.approx(0.30 + shots * 0.001)  # the estimate of what was sent
    reported = row["reported"]
    assert (reported["jobs"], reported["tasks"], reported["shots"], reported["seconds"]) == (1, 1, shots, None)
    assert reported["cost"] == pytest.approx(row["cost"])
    assert reported["calibrations"] == [{"device": DEVICE, "properties_updated_at": "2026-11-30T08:00:00"}]
    shown = qrun("status", manifest, env={"COLUMNS": "200"}).stdout
    assert f"provider reported 1 tasks, {shots:,} shots over 1 jobs, 24.70 USD" in shown
    assert "latest 2026-11-30T08:00:00" in shown
    rows = _rows(manifest)
    assert all(r["metadata"]["calibration"]["properties_updated_at"] == "2026-11-30T08:00:00" for r in rows)
