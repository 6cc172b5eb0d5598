"""braket.aws through the real Braket SDK (boto3) against the local fake Braket service."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import textwrap
import time
import uuid

import pytest

from qrun.providers.braket_aws.fake import FakeBraket

from .conftest import qrun, write

# The fake's DM1 runs noise-free circuits on Braket's density-matrix simulator, which says so.
pytestmark = pytest.mark.filterwarnings("ignore:You are running a noise-free circuit")

SECRET = "s3cr3t-AKIA-planted-9f8e7d"
DEVICE = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"


@pytest.fixture
def aws_env(monkeypatch):
    # boto3 signs requests with these; the fake does not check them. The secret key is a
    # planted secret that must never show up in anything qrun writes or prints.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _campaign(project, url: str, thetas: int = 4, extra: str = "") -> object:
    return write(project, "cloud.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: cloud}}
        spec:
          shots: 200
          circuits:
            - {{name: ghz, source: circuits/ghz.qasm}}
            - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: {{linspace: [0, 3.14159, {thetas}]}}}}}}
          backends:
            - name: sv1
              provider: braket.aws
              device: {DEVICE}
              options: {{endpoint: "{url}", s3_bucket: results-bucket}}
              {extra}
          retry: {{max_attempts: 3, backoff: {{initial: 0.05s, max: 0.2s}}}}
          export: [{{path: out/cloud.jsonl}}]
    """)


@pytest.fixture
def fake():
    service = FakeBraket()
    yield service
    service.stop()


def _rows(manifest):
    return [json.loads(x) for x in qrun("export", manifest, "-o", "-", "-f", "jsonl").stdout.splitlines()]


@pytest.mark.slow  # suite budget: test_cloud_contract's campaign runs on this fake in CI
def test_campaign_runs_on_braket_through_the_sdk(project, fake, aws_env, _state_dir):
    manifest = _campaign(project, fake.start())
    result = qrun("apply", manifest)
    assert result.returncode == 0, result.stderr
    rows = _rows(manifest)
    assert len(rows) == 5 and all(r["state"] == "done" for r in rows)
    ghz = next(r for r in rows if r["circuit"] == "ghz")
    assert set(ghz["counts"]) == {"000", "111"}
    assert all(len(r["remote_ids"]) == 1 and r["remote_ids"][0].startswith("arn:aws:braket")
               for r in rows)
    assert sorted(fake.accepted.values()) == [1] * 5
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert {j["provider_state"] for j in status["remote_jobs"]} <= {None, "COMPLETED", "QUEUED", "RUNNING"}
    assert {j["remote_id"] for j in status["remote_jobs"]} == {r["remote_ids"][0] for r in rows}
    assert qrun("apply", manifest).returncode == 0  # nothing new is sent
    assert sum(fake.accepted.values()) == 5


@pytest.mark.slow  # ~20 s of the adapter's bounded retries; test_never_pay_twice leaves a silent one in CI
def test_unreachable_service_is_left_for_the_next_apply(project, aws_env, _state_dir):
    down = FakeBraket()
    url = down.start()
    down.stop()  # nothing listens there now: every call fails to connect
    manifest = _campaign(project, url, thetas=1)
    started = time.time()
    result = qrun("apply", manifest)
    assert result.returncode == 1 and time.time() - started < 120
    with sqlite3.connect(_state_dir / "cloud.sqlite") as conn:
        states = {s for (s,) in conn.execute("SELECT state FROM jobs")}
        errors = [e for (e,) in conn.execute("SELECT error FROM jobs")]
    assert states == {"submitting"}, "outcome unknown: kept for reconciliation"
    assert all("left for the next apply" in e for e in errors)
    back = FakeBraket()
    back.start(int(url.rsplit(":", 1)[1]))  # the service returns at the same address
    try:
        assert qrun("apply", manifest).returncode == 0
        assert len(back.accepted) == 2 and set(back.accepted.values()) == {1}
    finally:
        back.stop()


# -- the fake refuses what the real service refuses, and serves the devices' properties

SV1 = DEVICE
DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"
TN1 = "arn:aws:braket:::device/quantum-simulator/amazon/tn1"


def _sdk_session(url: str):
    from qrun.providers.braket_aws.adapter import Adapter

    return Adapter._session({"endpoint": url}, {})


def _create(session, device: str, source: str, shots: int = 10):
    from braket.aws import AwsQuantumTask
    from braket.ir.openqasm import Program

    return AwsQuantumTask.create(session, device, Program(source=source), ("bucket", "prefix"),
                                 shots, quiet=True)


def test_get_device_serves_the_published_capabilities(fake, aws_env):
    import botocore.exceptions
    from braket.schema_common import BraketSchemaBase

    from qrun.providers.braket_aws.devices import SV1_OPERATIONS

    session = _sdk_session(fake.start())
    answers = {arn: session.get_device(arn) for arn in (SV1, DM1, TN1)}
    sv1 = BraketSchemaBase.parse_raw_schema(answers[SV1]["deviceCapabilities"])
    action = sv1.action["braket.ir.openqasm.program"]
    assert action.supportedOperations == SV1_OPERATIONS and action.supportedModifiers == []
    assert (sv1.paradigm.qubitCount, tuple(sv1.service.shotsRange)) == (34, (0, 100000))
    dm1 = BraketSchemaBase.parse_raw_schema(answers[DM1]["deviceCapabilities"])
    assert dm1.paradigm.qubitCount == 17
    assert "depolarizing" in dm1.action["braket.ir.openqasm.program"].supportedOperations
    assert [answers[a]["deviceStatus"] for a in (SV1, DM1, TN1)] == ["ONLINE", "ONLINE", "RETIRED"]
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        session.get_device("arn:aws:braket:::device/quantum-simulator/amazon/nope")


@pytest.mark.parametrize("device, source, shots, words", [
    (SV1, "ctrl @ x q[0], q[1];", 10, "ValidationException.*unsupported GateModifer: 'ctrl'"),
    (SV1, "U(0.1, 0.2, 0.3) q[0];", 10, "ValidationException.*gate: U which is not supported"),
    (SV1, "reset q[0];", 10, "ValidationException.*QuantumReset is not supported"),
    (SV1, "gate g a { x a; } g q[0];", 10, "QuantumGateDefinition is not supported"),
    (SV1, "b[0] = measure q[0]; x q[0];", 10, "mid-circuit measurement"),
    (SV1, "#pragma braket noise bit_flip(0.1) q[0]", 10, "braket_noise_bit_flip"),
    (SV1, "h q[0];", 100_001, "Number of shots 100001 is not in the range"),
    (TN1, "h q[0];", 10, "DeviceRetiredException"),
    ("arn:aws:braket:::device/quantum-simulator/amazon/nope", "h q[0];", 10,
     "ValidationException.*does not exist"),
])
def test_the_fake_refuses_what_the_device_does_not_declare(fake, aws_env, device, source, shots, words):
    import botocore.exceptions

    session = _sdk_session(fake.start())
    program = f"OPENQASM 3.0;\nbit[2] b;\nqubit[2] q;\n{source}\n"
    with pytest.raises(botocore.exceptions.ClientError, match=words):
        _create(session, device, program, shots)
    assert not fake.tasks and fake.refused  # nothing was accepted, hence nothing paid
    assert _create(session, DM1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n")  # DM1 takes a plain one


def test_task_ids_are_unique_across_restarts(aws_env):
    first = FakeBraket()
    url = first.start()
    port = int(url.rsplit(":", 1)[1])
    ids = [_create(_sdk_session(url), SV1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n").id]
    first.stop()
    again = FakeBraket()  # a killed and restarted service: it remembers nothing
    again.start(port)
    try:
        ids.append(_create(_sdk_session(url), SV1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n").id)
    finally:
        again.stop()
    assert ids[0] != ids[1]
    for arn in ids:
        task_id = arn.rsplit("/", 1)[1]
        assert uuid.UUID(task_id).version == 4, arn


def test_programs_are_translated_for_the_devices_declarations(project, fake, aws_env, _state_dir):
    # Gates SV1 and DM1 do not declare (crx, ch, cu, u3, ...), two registers and a loose bit:
    # translated by qrun, accepted by the fake's checks, counts right.
    from .test_differential import _exact_qiskit, within_shot_noise

    text = textwrap.dedent("""\
        OPENQASM 3.0;
        include "stdgates.inc";
        qubit[4] q;
        bit[2] a;
        bit b;
        bit[1] d;
        ry(0.8) q[1];
        h q[0];
        crx(1.3) q[1], q[3];
        ch q[0], q[2];
        cu(0.4, 0.3, 0.2, 0.1) q[3], q[0];
        u3(0.5, 0.6, 0.7) q[2];
        ccx q[0], q[1], q[2];
        a[1] = measure q[0];
        b = measure q[1];
        a[0] = measure q[2];
        d[0] = measure q[3];
    """)
    write(project, "circuits/mixed.qasm", text)
    manifest = write(project, "mixed.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: mixed}}
        spec:
          shots: 2000
          circuits: [{{name: mixed, source: circuits/mixed.qasm}}]
          backends:
            - {{name: sv1, provider: braket.aws, device: {SV1}, options: {{endpoint: "{fake.start()}"}}}}
            - {{name: dm1, provider: braket.aws, device: {DM1}, options: {{endpoint: "{fake.start()}"}}}}
    """)
    result = qrun("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert not fake.refused and len(fake.accepted) == 2
    exact = _exact_qiskit("qasm3", text)
    for row in _rows(manifest):
        assert not within_shot_noise(row["counts"], exact, 2000), row


def test_a_retired_device_fails_clearly_and_nothing_is_sent(project, fake, aws_env, _state_dir):
    manifest = write(project, "tn1.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: tn1}}
        spec:
          shots: 10
          circuits: [{{name: ghz, source: circuits/ghz.qasm}}]
          backends:
            - {{name: tn1, provider: braket.aws, device: {TN1}, options: {{endpoint: "{fake.start()}"}}}}
    """)
    result = qrun("apply", manifest)
    assert result.returncode == 1
    assert "is retired" in result.stderr
    assert not fake.tasks


def test_a_throttled_create_sent_again_then_its_answer_lost_is_found_by_tag(project, aws_env, _state_dir):
    # Scripted per CreateQuantumTask request: the 1st is throttled (nothing created), so the
    # cloud core sends it again in place, with the attempt's own client token; that 2nd one
    # is created and its answer lost. The engine must look the tag up and find it, not pay
    # a second time. (The engine's side alone: test_engine_rules, a tag found absent then
    # sent again.)
    fake = FakeBraket()
    tokens: list = []
    answer = fake.answer

    def scripted(request):
        route, _ = fake.route_for(request.method, request.path)
        if route is not None and route.creates:
            tokens.append(json.loads(request.body)["clientToken"])
            call = len(tokens)
            fake.throttle_next[route.name] = 1 if call == 1 else 0
            fake.faults.lose_after_accept = 1.0 if call == 2 else 0.0
        return answer(request)

    fake.answer = scripted
    try:
        manifest = write(project, "scripted.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: scripted}}
            spec:
              shots: 10
              circuits: [{{name: ghz, source: circuits/ghz.qasm}}]
              backends:
                - {{name: sv1, provider: braket.aws, device: {DEVICE}, options: {{endpoint: "{fake.start()}", s3_bucket: results}}}}
              retry: {{max_attempts: 3, backoff: {{initial: 0.05s, max: 0.2s}}}}
        """)
        result = qrun("apply", manifest)
        assert result.returncode == 0, result.stderr
        assert len(tokens) >= 2 and fake.injected["lost"] == 1, "the scenario played out"
        assert len(set(tokens)) == 1  # one attempt, one client token, however often it is sent
        assert set(fake.accepted.values()) == {1} and len(fake.tasks) == 1, fake.accepted
    finally:
        fake.stop()


def test_a_connection_dropped_after_the_create_was_accepted_is_not_paid_twice(project, fake, aws_env,
                                                                               _state_dir, monkeypatch):
    """The service accepts CreateQuantumTask, then the connection drops before its answer
    (botocore's ConnectionClosedError, an HTTPClientError). The task may exist, so it is not
    a refusal: the engine looks its tag up and follows the task it finds; nothing is sent
    twice. (It used to read as "created nothing", so the task was sent and paid again.)"""
    import botocore.exceptions
    from braket.aws import AwsSession

    from qrun import api

    real_create = AwsSession.create_quantum_task
    dropped = []

    def create_then_drop(session, **kwargs):
        arn = real_create(session, **kwargs)  # the fake made (and will run) the task
        tag = kwargs["tags"]["qrun-tag"]
        if tag not in dropped:  # each job's first create loses its answer
            dropped.append(tag)
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=url)
        return arn

    url = fake.start()
    monkeypatch.setattr(AwsSession, "create_quantum_task", create_then_drop)
    manifest = _campaign(project, url, thetas=1)
    report = api.apply(manifest)
    assert report.all_done, report
    assert len(dropped) == 2, "every job's create lost its answer once"
    assert sorted(fake.accepted.values()) == [1, 1] and set(fake.accepted) == set(dropped)
    assert len(fake.tasks) == 2


# -- idempotency: a client token per attempt, lookups bounded by the attempt's time


def _adapter(url: str):
    from qrun.providers.braket_aws.adapter import Adapter

    return Adapter(SV1, {"endpoint": url, "s3_bucket": "results"}, {})


def _task(shots: int = 10):
    from qrun.providers.base import Task

    source = ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\nx q[0];\n'
              'c[0] = measure q[0];\n')
    return Task("qasm3", source.encode(), 0, "flip", {}, shots)


def test_a_create_sent_twice_with_one_tag_makes_one_task(fake, aws_env):
    from qrun.tags import new_tag

    adapter = _adapter(fake.start())
    tag = new_tag("0123456789abcdef")
    first = adapter.submit([_task()], None, tag)
    again = adapter.submit([_task()], None, tag)  # as a create sent again would be
    assert first == again and len(fake.tasks) == 1
    other = adapter.submit([_task()], None, new_tag("0123456789abcdef"))
    assert other != first and len(fake.tasks) == 2  # another attempt: another token


def test_a_lookup_asks_only_for_tasks_created_since_the_attempt(fake, aws_env):
    from qrun.providers.braket_aws.adapter import CLOCK_SKEW
    from qrun.tags import new_tag

    adapter = _adapter(fake.start())
    tag = new_tag("0123456789abcdef")
    handle = adapter.submit([_task()], None, tag)
    mine = fake.tasks[handle]
    for number in range(250):  # older tasks of the device, as a long-used account has
        arn = f"{handle}-older-{number}"
        fake.tasks[arn] = dataclasses.replace(mine, arn=arn, created=mine.created - 10 * CLOCK_SKEW,
                                              tags={"qrun-tag": new_tag("fedcba9876543210")})
    searches = fake.requests["POST /quantum-tasks"]
    assert adapter.find(tag) == handle
    assert fake.requests["POST /quantum-tasks"] - searches == 1  # one page, not three
    old_style = "qrun-0123456789abcdef-0123456789ab"  # a tag written before tags had a time
    assert adapter.find(old_style) is None
    assert fake.requests["POST /quantum-tasks"] - searches == 1 + 3  # every task read


def test_a_lookup_the_service_will_not_bound_reads_every_task(fake, aws_env, monkeypatch):
    from qrun.providers.braket_aws import adapter as braket_aws
    from qrun.tags import new_tag

    adapter = _adapter(fake.start())
    tag = new_tag("0123456789abcdef")
    handle = adapter.submit([_task()], None, tag)
    monkeypatch.setattr(braket_aws, "_created_since",
                        lambda when: {"name": "createdAt", "operator": "GTE", "values": ["last tuesday"]})
    assert adapter.find(tag) == handle  # the refused bound is dropped, not the lookup


@pytest.mark.parametrize("filters, size", [
    ([{"name": "tag", "operator": "EQUAL", "values": ["x"]}], 100),
    ([{"name": "status", "operator": "CONTAINS", "values": ["QUEUED"]}], 100),
    ([{"name": "status", "operator": "EQUAL", "values": []}], 100),
    ([{"name": "createdAt", "operator": "BETWEEN", "values": ["2026-01-01T00:00:00Z"]}], 100),
    ([{"name": "createdAt", "operator": "GT", "values": ["yesterday"]}], 100),
    ([{"name": "status", "operator": "EQUAL", "values": ["QUEUED"]}] * 11, 100),
    ([], 101),
])
def test_the_fake_search_refuses_what_the_service_model_does(fake, filters, size):
    # Sent as raw JSON: botocore checks some of these (list lengths) before sending, and the
    # fake must refuse them from any client.
    import http.client

    host, port = fake.start().rsplit("/", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/quantum-tasks", json.dumps({"filters": filters, "maxResults": size}),
                       {"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 400 and "ValidationException" in answer.getheader("x-amzn-ErrorType", "")


def test_the_fake_search_filters_as_the_service_does(fake, aws_env):
    session = _sdk_session(fake.start())
    arns = [_create(session, SV1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n").id for _ in range(3)]
    _create(session, DM1, "OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n")
    fake.tasks[arns[0]].created = time.time() - 3600

    def found(*filters):
        answer = session.braket_client.search_quantum_tasks(filters=list(filters), maxResults=100)
        return {t["quantumTaskArn"] for t in answer["quantumTasks"]}

    on_sv1 = {"name": "deviceArn", "operator": "EQUAL", "values": [SV1]}
    recent = {"name": "createdAt", "operator": "GTE",
              "values": [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))]}
    assert found(on_sv1) == set(arns)
    assert found(on_sv1, recent) == set(arns[1:])
    assert found({"name": "quantumTaskArn", "operator": "EQUAL", "values": arns[:2]}) == set(arns[:2])
    assert found({"name": "jobArn", "operator": "EQUAL", "values": ["arn:job"]}) == set()
