"""The fault model every fake service shares (qrun.fakes.server), checked once for all four.

Each fake is driven here with raw HTTP (http.client), not its SDK: what is under test is the
service's behaviour on the wire. The one request a fake cannot take without a real payload,
its job creation, is recorded once per fake from qrun's own adapter (the real SDK) against a
healthy fake, then replayed against fakes with faults. Provider-specific behaviour (shapes,
refusals, physics) stays in tests/test_cloud_*.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from qrun.fakes.server import CREDENTIAL_VARIABLE, VARIABLES, FakeServer, Faults
from qrun.providers.base import Task

from .conftest import EXAMPLES, FLIP_FIRST

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
CREDENTIAL_ENV = "QRUN_TEST_FAKES_CREDENTIAL"


@dataclass
class Case:
    """One fake, as this suite drives it."""

    provider: str
    cheap: str  # a GET that does no work
    cheap_route: str  # its name in fake.requests
    auth: dict  # headers a fresh fake (credential None) accepts
    job_id: Callable[[dict], str]  # from a creation's answer
    submit: Callable[[str, pytest.MonkeyPatch], None]  # one creation through qrun's adapter
    creation: tuple = field(default=())  # (method, path, headers, body), once recorded
    replayed: Callable[[bytes], bytes] = lambda body: body  # what a fresh fake can take of it

    def fake_class(self) -> type[FakeServer]:
        from qrun.providers import PROVIDERS

        return PROVIDERS[self.provider].fake_class()


def _braket_submit(url, monkeypatch):
    from qrun.providers.braket_aws.adapter import Adapter

    for key, value in {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": "x",
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(key, value)
    task = Task("qasm3", FLIP_FIRST.encode(), 0, "flip", {}, 10)
    Adapter(SV1, {"endpoint": url, "s3_bucket": "results"}, {}).submit([task], None, "qrun-fakes-1")


def _ibm_submit(url, monkeypatch):
    from qrun.providers.ibm_cloud import adapter as ibm_cloud

    for variable in ("IAM_URL", "GLOBAL_SEARCH_URL", "GLOBAL_CATALOG_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(ibm_cloud, "_process_endpoint", [])
    task = Task("qasm3", FLIP_FIRST.encode(), 0, "flip", {}, 10)
    ibm_cloud.Adapter("fake_manila", {"endpoint": url}, {"env": CREDENTIAL_ENV}).submit(
        [task], 1, "qrun-fakes-1")


def _pasqal_submit(url, monkeypatch):
    from qrun.providers.pasqal_cloud.adapter import Adapter

    content = (EXAMPLES / "circuits" / "rabi.json").read_bytes()
    task = Task("pulser", content, 0, hashlib.sha256(content).hexdigest(), {"duration": 500}, 10)
    Adapter("EMU_FREE", {"endpoint": url}, {"env": CREDENTIAL_ENV}).submit([task], None, "qrun-fakes-1")


def _quandela_submit(url, monkeypatch):
    from qrun.providers.quandela_cloud.adapter import Adapter

    content = json.dumps({"serialized": (EXAMPLES / "circuits" / "hom.pcvl").read_text(),
                          "input": "|1,1>"}).encode()
    task = Task("perceval", content, 0, hashlib.sha256(content).hexdigest(), {}, 10)
    Adapter("sim:slos", {"endpoint": url}, {"env": CREDENTIAL_ENV}).submit([task], None, "qrun-fakes-1")


def _without_session(body: bytes) -> bytes:
    """The job without the batch session it was sent in (a fresh fake knows no session)."""
    return json.dumps({k: v for k, v in json.loads(body).items() if k != "session_id"}).encode()


def _ibm_auth() -> dict:
    from qrun.providers.ibm_cloud.fake import CRN

    return {"Authorization": "apikey any-key", "Service-CRN": CRN}  # the SDK's IAM-less fallback


CASES = {
    "braket.aws": Case("braket.aws", f"/device/{urllib.parse.quote(SV1, safe='')}", "GET /device/{arn}",
                       {}, lambda answer: answer["quantumTaskArn"], _braket_submit),
    "qiskit.ibm": Case("qiskit.ibm", "/api/v1/backends", "GET /api/v1/backends", {},
                       lambda answer: answer["id"], _ibm_submit, replayed=_without_session),
    "pasqal.cloud": Case("pasqal.cloud", "/account/api/v1/projects", "GET /account/api/v1/projects",
                         {"Authorization": "Bearer any-token"}, lambda answer: answer["data"]["id"],
                         _pasqal_submit),
    "quandela.cloud": Case("quandela.cloud", "/api/jobs/availability", "GET /api/jobs/availability",
                           {"Authorization": "Bearer any-token"}, lambda answer: answer["job_id"],
                           _quandela_submit),
}
every_fake = pytest.mark.parametrize("provider", sorted(CASES))


@pytest.fixture
def case(provider, monkeypatch) -> Case:
    """The fake's case, its creation recorded (once per test session) from qrun's adapter."""
    for variable in (*VARIABLES.values(), CREDENTIAL_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    found = CASES[provider]
    if provider == "qiskit.ibm" and not found.auth:
        found.auth = _ibm_auth()
    if not found.creation:
        found.creation = _record_creation(found)
    return found


def _record_creation(case: Case) -> tuple:
    fake = case.fake_class()()
    recorded = []
    answer = fake.answer

    def recording(request):
        route, _ = fake.route_for(request.method, request.path)
        if route is not None and route.creates:
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("content-type", "content-encoding", "authorization", "service-crn")}
            recorded.append((request.method, request.path, headers, request.body))
        return answer(request)

    fake.answer = recording
    url = fake.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(CREDENTIAL_ENV, "any-credential")
            case.submit(url, patch)
    finally:
        fake.stop()
    assert len(recorded) == 1 and sum(fake.accepted.values()) == 1, (recorded, fake.accepted)
    return recorded[0]


def _port(fake: FakeServer) -> int:
    return int(fake.url.rsplit(":", 1)[1])


def _send(fake: FakeServer, method: str, path: str, headers=None, body: bytes = b"",
          connection: http.client.HTTPConnection | None = None):
    """(status, headers, body) of one request; a dropped connection raises ConnectionError."""
    connection = connection or http.client.HTTPConnection("127.0.0.1", _port(fake), timeout=60)
    connection.request(method, path, body=body or None, headers=headers or {})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def _create(case: Case, fake: FakeServer):
    method, path, headers, body = case.creation
    # a fresh fake knows none of the recorded tokens
    return _send(fake, method, path, {**headers, **case.auth}, case.replayed(body))


def _cheap(case: Case, fake: FakeServer):
    return _send(fake, "GET", case.cheap, case.auth)


@pytest.fixture
def started():
    """Start fakes; every one is stopped at the end of the test."""
    fakes: list[FakeServer] = []

    def start(case: Case, port: int = 0, **options) -> FakeServer:
        fake = case.fake_class()(**options)
        fake.start(port)
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.stop()


# -- settings: the same keywords, flags and variables, one precedence


@every_fake
def test_keywords_flags_and_variables_mean_the_same_in_every_fake(case, monkeypatch):
    cls = case.fake_class()
    assert cls().faults == Faults() and cls().credential is None  # the defaults
    monkeypatch.setenv("QRUN_FAKE_LATENCY", "0.05")
    monkeypatch.setenv("QRUN_FAKE_ERROR_RATE", "0.2")
    monkeypatch.setenv("QRUN_FAKE_STALL", "1")
    monkeypatch.setenv("QRUN_FAKE_RUN_TIME", "3")
    monkeypatch.setenv("QRUN_FAKE_SEED", "9")
    monkeypatch.setenv(CREDENTIAL_VARIABLE, "from-the-environment")
    # Explicit beats the environment, which beats the default; as keywords and as flags.
    by_keyword = cls(error_rate=0.0, fail_jobs=0.25, lose_after_accept=0.5, stall=False)
    by_flag, port = cls.from_command_line(["--port", "0", "--error-rate", "0", "--fail-jobs", "0.25",
                                           "--lose-after-accept", "0.5", "--no-stall"])
    expected = Faults(latency=0.05, error_rate=0.0, fail_jobs=0.25, stall=False,
                      lose_after_accept=0.5, run_time=3.0, seed=9)
    assert by_keyword.faults == by_flag.faults == expected and port == 0
    assert by_keyword.credential == by_flag.credential == "from-the-environment"
    assert cls(credential="given").credential == "given"
    assert cls.from_command_line(["--credential", "given"])[0].credential == "given"
    monkeypatch.setenv("QRUN_FAKE_ERROR_RATE", "a lot")
    with pytest.raises(ValueError, match="QRUN_FAKE_ERROR_RATE='a lot' is not a number"):
        cls()


# -- faults


@every_fake
def test_transient_errors_are_429_or_503_before_any_work(case, started):
    fake = started(case, error_rate=0.3, seed=5)
    statuses = [_cheap(case, fake)[0] for _ in range(150)]
    faulted = [s for s in statuses if s != 200]
    assert set(faulted) == {429, 503} and 20 <= len(faulted) <= 80, statuses
    assert fake.injected["429"] + fake.injected["503"] == len(faulted)
    fake.faults.error_rate = 1.0  # settings change while the fake serves
    status, headers, body = _create(case, fake)
    assert status in (429, 503) and json.loads(body)  # in the provider's own error shape
    assert not fake.accepted and fake.waiting == 0, "nothing was created"
    while status != 429:
        status, headers, body = _create(case, fake)
    # No Retry-After: urllib3 (under the IBM SDK) reads "0" as "none given" and then backs
    # off exponentially, which made one throttled listing cost a minute.
    assert "Retry-After" not in headers


def test_ibm_cloud_token_and_resource_routes_are_spared_the_faults(started):
    case = CASES["qiskit.ibm"]
    fake = started(case, error_rate=1.0)
    fake.throttle_next["POST /iam/identity/token"] = 5
    token = _send(fake, "POST", "/iam/identity/token",
                  {"Content-Type": "application/x-www-form-urlencoded"},
                  b"grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=any-key")
    assert token[0] == 200, token
    assert _send(fake, "GET", "/api/v1/backends", _ibm_auth())[0] in (429, 503)
    assert sum(fake.injected.values()) == 1  # the job API alone was faulted


@every_fake
def test_a_lost_answer_is_a_dropped_connection_after_the_create(case, started):
    fake = started(case, lose_after_accept=1.0, latency=0.3, stall=True)
    begun = time.monotonic()
    with pytest.raises(ConnectionError):  # no status line: the connection closes
        _create(case, fake)
    assert time.monotonic() - begun >= 0.3, "the drop comes after the latency, as an answer would"
    assert sum(fake.accepted.values()) == 1 and fake.waiting == 1, "the job was created"
    assert fake.injected["lost"] == 1
    # Only a creation that succeeded loses its answer: a refused one is answered.
    method, path, _, _ = case.creation
    status, _, _ = _send(fake, method, path, {**case.auth, "Content-Type": "application/json"}, b"{}")
    assert 400 <= status < 500 and fake.injected["lost"] == 1
    assert _cheap(case, fake)[0] == 200, "other requests are answered"


@every_fake
def test_stall_and_run_time_hold_accepted_jobs(case, started):
    stalled = started(case, stall=True)
    assert _create(case, stalled)[0] in (200, 201)
    time.sleep(0.3)
    assert stalled.waiting == 1
    slow = started(case, run_time=0.5)
    assert _create(case, slow)[0] in (200, 201)
    assert slow.waiting == 1
    deadline = time.monotonic() + 30
    while slow.waiting:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@every_fake
def test_fail_jobs_dooms_accepted_jobs_and_counts_them(case, started):
    fake = started(case, fail_jobs=1.0, stall=True)
    for _ in range(2):  # Braket's answer to the same client token is the same task
        assert _create(case, fake)[0] in (200, 201)
    assert fake.injected["failed job"] == sum(fake.accepted.values()) >= 1


# -- accounting


@every_fake
def test_requests_are_counted_per_route_with_a_total(case, started):
    fake = started(case)
    for _ in range(3):
        assert _cheap(case, fake)[0] == 200
    assert _send(fake, "DELETE", "/no-such-route", case.auth)[0] in (404, 405)
    fake.throttle_next[case.cheap_route] = 2  # one route's next requests are throttled
    assert [_cheap(case, fake)[0] for _ in range(3)] == [429, 429, 200]
    assert fake.requests[case.cheap_route] == 6
    assert fake.requests["DELETE (no route)"] == 1
    assert fake.total_requests == 7 and fake.injected["429"] == 2
    assert _create(case, fake)[0] in (200, 201)
    assert sum(fake.accepted.values()) == 1 and fake.total_requests == 8


# -- life cycle


@every_fake
def test_ids_are_unique_across_restarts(case, started):
    first = started(case, stall=True)
    port = _port(first)
    status, _, body = _create(case, first)
    ids = [case.job_id(json.loads(body))]
    first.stop()
    with pytest.raises(ConnectionError):  # stopped: nothing answers there
        _cheap(case, first)
    again = started(case, port=port)  # a service that lost everything, at the same address
    status, _, body = _create(case, again)
    ids.append(case.job_id(json.loads(body)))
    assert ids[0] != ids[1] and status in (200, 201)
    assert sum(again.accepted.values()) == 1


@every_fake
def test_a_restarted_fake_keeps_its_jobs_and_runs_those_waiting(case, started):
    fake = started(case, run_time=0.3)
    port = _port(fake)
    assert _create(case, fake)[0] in (200, 201)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    assert _send(fake, "GET", case.cheap, case.auth, connection=connection)[0] == 200
    fake.stop()  # before the job's run time is over
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # keep-alive ones closed too
        _send(fake, "GET", case.cheap, case.auth, connection=connection)
    time.sleep(0.6)
    assert fake.waiting == 1, "a stopped fake runs nothing"
    fake.start(port)
    deadline = time.monotonic() + 30
    while fake.waiting:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sum(fake.accepted.values()) == 1


@every_fake
def test_the_command_line_serves_until_sigterm(provider):
    service = subprocess.Popen([sys.executable, "-m", "qrun.fakes", provider, "--port", "0",
                                "--error-rate", "0.1", "--stall", "--run-time", "1", "--seed", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = service.stdout.readline()  # printed once it listens
        assert re.search(r"at http://127\.0\.0\.1:\d+\b.*Ctrl-C stops it", banner), banner
    finally:
        service.send_signal(signal.SIGTERM)  # stops it as Ctrl-C does: cleanly, exit 0
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert "Traceback" not in err and "accepted jobs per tag: {}" in err
