"""A local fake of IBM Quantum Platform for the real, unmodified qiskit-ibm-runtime SDK.

It speaks, on 127.0.0.1, the HTTP calls that ``QiskitRuntimeService`` and the executor
``Sampler`` make (qiskit-ibm-runtime 0.51), under four prefixes of one base URL:

    /iam/identity/token              IBM Cloud IAM: API key -> bearer token (a JWT)
    /search/v3/resources/search      IBM Cloud Global Search: the account's service instances
    /catalog/<plan id>               IBM Cloud Global Catalog: an instance's plan
    /api/v1/...                      the Qiskit Runtime REST API: backends (configuration,
                                     properties, status), instance usage, sessions (batch
                                     mode), jobs (create, list by tag, get, results, cancel)

Backends are qiskit-ibm-runtime's fake backends (``fake_manila``, ``fake_kyiv``, ... the
names ``qrun.providers.ibm_local`` knows): their configuration and properties snapshots are
served as the service serves a real device's, so the SDK builds the same Target from them.
Jobs run one at a time, on that fake backend, with the SDK's own local executor runner
(``fake_provider.executor.run_quantum_program``, what local testing mode uses: Aer with the
device's noise model), in a spawned worker process (Qiskit crashed inside the threaded
server). Results go back in the executor's v2.0 result schema, which the SDK decodes and
post-processes into a sampler ``PrimitiveResult``.

Faults, on request: ``latency`` (seconds added to every answer, after the work is done, so
a job can exist before its submitter hears of it), ``error_rate`` (share of requests answered
429 or 5xx before any work is done: the SDK's own retry policy absorbs some 5xx, qrun's
adapter the rest), ``fail_jobs`` (share of accepted jobs that end Failed with an error
text), ``stall`` (accepted jobs stay Queued), ``lose_after_accept`` (share of job submissions
whose connection is dropped after the job was created: the client never learns its id),
``run_time`` (seconds each job waits Queued before it runs). A lost response is a dropped
connection, not a 5xx: the SDK retries a POST on 5xx by design (IBM's API guarantees that a
5xx leaves no job behind), so a 5xx after a created job would break IBM's own contract
rather than rehearse a real failure. The environment variables QRUN_FAKE_LATENCY,
QRUN_FAKE_ERROR_RATE, QRUN_FAKE_FAIL_JOBS, QRUN_FAKE_STALL, QRUN_FAKE_LOSE_AFTER_ACCEPT and
QRUN_FAKE_RUN_TIME, read by ``start()``, override the constructor's values.

``accepted`` counts the jobs created per tag, so a test can prove nothing ran twice.

Run it: ``python -m qrun.fakes qiskit.ibm --port 8080`` and point a qiskit.ibm backend's
``options.endpoint`` at http://127.0.0.1:8080 (see docs/cloud-ibm_cloud.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from qrun.fakes.server import fault_arguments, serve_until_stopped

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/qrunfake0000000000000000:qrun-fake-0000::"
INSTANCE_NAME = "qrun-fake"
PLAN_ID = "qrun-fake-open-plan"
FAILED_REASON = "Error code 1517; the qrun fake backend failed this job on purpose (fail_jobs)"
_JWT_KEY = "qrun-fake-ibm-cloud-signing-key-not-a-secret"


_worker_pool: list = []  # one worker process for the Qiskit work of every fake in this process
_worker_lock = threading.Lock()


def _in_worker(function, *args):
    """Run ``function(*args)`` in a separate, single-threaded worker process and wait.

    The fake's own process is all threads (HTTP handlers, job runner); decoding QPY and
    simulating with Aer in there crashed it (SIGSEGV inside Qiskit) once several fakes had
    come and gone in one test process. Qiskit work goes to a spawned process instead: it
    takes JSON in and gives text out, and a crash there fails one job, not the service.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with _worker_lock:
        if not _worker_pool:
            _worker_pool.append(ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent, initargs=(os.getpid(),)))
        pool = _worker_pool[0]
    try:
        return pool.submit(function, *args).result()
    except BrokenProcessPool:
        with _worker_lock:
            if _worker_pool and _worker_pool[0] is pool:
                _worker_pool.clear()
        raise RuntimeError("the fake's simulator process died") from None


def _watch_parent(parent: int) -> None:
    """In the worker: leave when the fake's process is gone (killed, not shut down)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def shutdown_worker() -> None:
    """Stop the worker process (it is shared by every fake of this process)."""
    with _worker_lock:
        pools = list(_worker_pool)
        _worker_pool.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


_backends: dict = {}  # (in the worker) backend name -> its fake backend, created once


def _fake_backend(name: str):
    backend = _backends.get(name)
    if backend is None:
        from qrun.providers.ibm_local.adapter import _fake_backends

        backend = _backends[name] = _fake_backends()[name]()
    return backend


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Job:
    def __init__(self, job_id, backend, program_id, params, tags, session_id, number):
        self.id = job_id
        self.backend = backend
        self.program_id = program_id
        self.params = params
        self.tags = list(tags)
        self.session_id = session_id
        self.number = number  # creation order
        self.created = _now_iso()
        self.status = "Queued"  # Queued | Running | Completed | Failed | Cancelled
        self.reason: str | None = None
        self.reason_code: int | None = None
        self.result: str | None = None
        self.fail = False

    def as_json(self) -> dict:
        state = {"status": self.status}
        if self.reason:
            state["reason"] = self.reason
        if self.reason_code:
            state["reason_code"] = self.reason_code
        return {"id": self.id, "backend": self.backend, "state": state, "status": self.status,
                "program": {"id": self.program_id}, "created": self.created, "tags": self.tags,
                "session_id": self.session_id, "runtime": "", "private": False}


class FakeIBMQuantum:
    """IBM Quantum Platform (IAM, Global Search and Catalog, Runtime API) on 127.0.0.1."""

    def __init__(self, *, latency=0.0, error_rate=0.0, fail_jobs=0.0, stall=False,
                 lose_after_accept=0.0, seed=0, run_time=0.0, api_key: str | None = None,
                 backends=None):
        self.latency = latency
        self.error_rate = error_rate
        self.fail_jobs = fail_jobs
        self.stall = stall
        self.lose_after_accept = lose_after_accept
        self.seed = seed
        self.run_time = run_time  # seconds a job stays Queued before it runs
        self.api_key = api_key  # None: any non-empty key is accepted
        self.backends = tuple(backends) if backends else None  # None: every fake backend
        self.accepted: Counter = Counter()  # tag -> jobs created with it
        self.requests: Counter = Counter()  # "METHOD /route" -> requests answered (or faulted)
        self.faults: Counter = Counter()  # injected: HTTP status or "lost" -> how many
        # "METHOD /route" -> how many of its next requests are answered 429 (a rate limit
        # on one route, such as the backend listing that qiskit-ibm-runtime swallows).
        self.throttle_next: Counter = Counter()
        self.jobs: dict[str, _Job] = {}
        self.sessions: dict[str, dict] = {}
        self._tokens: set = set()
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._numbers = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list = []
        self._stopping = threading.Event()
        self.url: str | None = None

    # -- life cycle

    def _read_environment(self) -> None:
        numbers = {"QRUN_FAKE_LATENCY": "latency", "QRUN_FAKE_ERROR_RATE": "error_rate",
                   "QRUN_FAKE_FAIL_JOBS": "fail_jobs",
                   "QRUN_FAKE_LOSE_AFTER_ACCEPT": "lose_after_accept",
                   "QRUN_FAKE_RUN_TIME": "run_time"}
        for variable, attribute in numbers.items():
            if os.environ.get(variable):
                setattr(self, attribute, float(os.environ[variable]))
        if os.environ.get("QRUN_FAKE_STALL"):
            self.stall = os.environ["QRUN_FAKE_STALL"].lower() not in ("0", "false", "no")

    def start(self, port: int = 0) -> str:
        """Serve in background threads on 127.0.0.1; returns the base URL."""
        self._read_environment()
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        serving = threading.Thread(target=self._server.serve_forever, name="fake-ibm-http",
                                   daemon=True)
        running = threading.Thread(target=self._run_jobs, name="fake-ibm-worker", daemon=True)
        self._threads = [serving, running]
        for thread in self._threads:
            thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self):
        if self.url is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- faults

    def chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self._random.random() < share

    def injected_error(self) -> int | None:
        if not self.chance(self.error_rate):
            return None
        with self._lock:
            return self._random.choice((429, 429, 500, 502, 503, 504))

    # -- backends

    def backend_names(self) -> list:
        if self.backends is not None:
            return list(self.backends)
        from qrun.providers.ibm_local.adapter import known_devices

        return known_devices()

    def backend_class(self, name: str):
        """The qiskit-ibm-runtime fake backend class behind ``name``, or None."""
        if name not in self.backend_names():
            return None
        from qrun.providers.ibm_local.adapter import _fake_backends

        return _fake_backends().get(name)

    def _snapshot(self, name: str, kind: str) -> dict | None:
        backend = self.backend_class(name)
        if backend is None:
            return None
        filename = backend.conf_filename if kind == "configuration" else backend.props_filename
        with open(os.path.join(backend.dirname, filename)) as file:
            data = json.load(file)
        data["backend_name"] = name  # the snapshot names the retired device it came from
        return data

    # -- jobs

    def create_job(self, backend: str, program_id: str, params: dict, tags: list,
                   session_id: str | None) -> _Job:
        with self._lock:
            number = next(self._numbers)
            job = _Job(f"fake-{uuid.uuid4().hex[:20]}", backend, program_id, params, tags,
                       session_id, number)
            job.fail = self.chance(self.fail_jobs)
            self.jobs[job.id] = job
            for tag in tags:
                self.accepted[tag] += 1
        if not self.stall:
            self._queue.put(job.id)
        return job

    def _run_jobs(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            if self.run_time:
                time.sleep(self.run_time)
            with self._lock:
                job = self.jobs[job_id]
                if job.status != "Queued":
                    continue  # cancelled while queued
                job.status = "Running"
            try:
                if job.fail:
                    raise _JobFailure(FAILED_REASON)
                seed = (self.seed * 1_000_003 + job.number) % 2**31
                result = _in_worker(execute, job.params, job.backend, seed)
            except _JobFailure as exc:
                self._finish(job, "Failed", reason=str(exc), code=1517)
            except Exception as exc:  # a bug or an unsupported program: the job fails
                self._finish(job, "Failed", reason=f"Error code 1500; {type(exc).__name__}: {exc}",
                             code=1500)
            else:
                self._finish(job, "Completed", result=result)

    def _finish(self, job: _Job, status: str, result=None, reason=None, code=None) -> None:
        with self._lock:
            if job.status == "Cancelled":
                return
            job.status, job.result, job.reason, job.reason_code = status, result, reason, code

class _JobFailure(Exception):
    pass


def decode_program(params: dict):
    """The QuantumProgram the executor was sent (schema v2.0), decoded by the SDK itself."""
    from ibm_quantum_schemas.executor.version_2_0 import ParamsModel
    from qiskit_ibm_runtime.quantum_program.params_converters import (
        QUANTUM_PROGRAM_PARAMS_CONVERTERS,
    )

    version = params.get("schema_version")
    if version != "v2.0":
        raise ValueError(f"the qrun fake speaks executor schema v2.0, not {version!r}")
    program, _options = QUANTUM_PROGRAM_PARAMS_CONVERTERS["v2.0"].decoder(
        ParamsModel.model_validate(params))
    return program


def execute(params: dict, backend: str, seed: int) -> str:
    """Run an executor job on the fake backend (in the worker process): its result text."""
    from qiskit_ibm_runtime.fake_provider.executor.run_quantum_program import (
        run_quantum_program,
    )
    from qiskit_ibm_runtime.options_models.simulator import SimulatorOptions

    program = decode_program(params)
    result = run_quantum_program(_fake_backend(backend), program,
                                 SimulatorOptions(seed_simulator=seed))
    return encode_result(result)


def validate(params: dict, name: str) -> None:
    """Refuse what the service refuses (in the worker process): undecodable or too wide."""
    backend = _fake_backend(name)
    program = decode_program(params)
    width = max((item.circuit.num_qubits for item in program.items), default=0)
    if width > backend.num_qubits:
        raise ValueError(f"a circuit uses {width} qubits; {backend.name} has {backend.num_qubits}")


def encode_result(result) -> str:
    """A QuantumProgramResult as the service returns it: executor result schema v2.0."""
    import numpy as np
    from ibm_quantum_schemas.common import CompressedTensorModel
    from ibm_quantum_schemas.executor.version_2_0 import (
        ItemMetadataModel,
        MetadataModel,
        QuantumProgramResultItemModel,
        QuantumProgramResultModel,
    )
    from qiskit_ibm_runtime.quantum_program.converters.converters_2_0 import (
        passthrough_data_to_2_0,
    )

    items = [QuantumProgramResultItemModel(
        results={name: CompressedTensorModel.from_numpy(np.asarray(value))
                 for name, value in item.items()},
        metadata=ItemMetadataModel()) for item in result]
    model = QuantumProgramResultModel(data=items, metadata=MetadataModel(chunk_timing=[]),
                                      passthrough_data=passthrough_data_to_2_0(result.passthrough_data),
                                      semantic_role=result._semantic_role)
    return model.model_dump_json()


def _token() -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 3600, "sub": "qrun-fake", "jti": uuid.uuid4().hex},
                      _JWT_KEY, algorithm="HS256")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeIBMQuantum
    protocol_version = "HTTP/1.1"
    server_version = "qrun-fake-ibm/1"

    def log_message(self, format, *args):  # quiet: tests and users read their own output
        pass

    # every verb goes through one dispatcher
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, text: str | None = None) -> None:
        if text is not None:
            data, kind = text.encode(), "text/plain; charset=utf-8"
        elif payload is None:
            data, kind = b"", "application/json"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        if self.fake.latency:  # after the work, before the answer: a job may exist unannounced
            time.sleep(self.fake.latency)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: int | None = None) -> None:
        self._send(status, {"errors": [{"message": message, "code": code or status}],
                            "error": {"message": message, "code": code or status},
                            "status_code": status})

    def _drop(self) -> None:
        """Lose the answer: close the connection without a response."""
        if self.fake.latency:
            time.sleep(self.fake.latency)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        split = urlsplit(self.path)
        path = unquote(split.path).rstrip("/")
        query = parse_qs(split.query)
        body = self._body()
        route = _route_name(method, path)
        with fake._lock:
            fake.requests[route] += 1
        status = fake.injected_error()
        with fake._lock:
            if fake.throttle_next[route] > 0:
                fake.throttle_next[route] -= 1
                status = 429
        if status is not None:
            with fake._lock:
                fake.faults[status] += 1
            return self._error(status, "Too many requests" if status == 429 else
                               "Internal error (injected by the qrun fake)")
        try:
            if path == "/iam/identity/token" and method == "POST":
                return self._iam(body)
            if path == "/search/v3/resources/search" and method == "POST":
                return self._search()
            if path.startswith("/catalog/") and method == "GET":
                return self._catalog(path[len("/catalog/"):])
            if path.startswith("/api/v1/"):
                if not self._authorized():
                    return self._error(401, "Unauthorized: invalid or expired token", 401)
                return self._runtime(method, path[len("/api/v1"):], query, body)
            return self._error(404, f"no route {method} {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _authorized(self) -> bool:
        fake = self.fake
        auth = self.headers.get("Authorization", "")
        if self.headers.get("Service-CRN") != CRN:
            return False
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):] in fake._tokens
        if auth.startswith("apikey "):  # the SDK's fallback when IAM could not be reached
            return self._key_ok(auth[len("apikey "):])
        return False

    def _key_ok(self, key: str) -> bool:
        return bool(key) and (self.fake.api_key is None or key == self.fake.api_key)

    # -- IBM Cloud

    def _iam(self, body: bytes) -> None:
        form = parse_qs(body.decode())
        key = (form.get("apikey") or [""])[0]
        if not self._key_ok(key):
            return self._send(400, {"errorCode": "BXNIM0415E",
                                    "errorMessage": "Provided API key could not be found.",
                                    "context": {}})
        token = _token()
        with self.fake._lock:
            self.fake._tokens.add(token)
        now = int(time.time())
        self._send(200, {"access_token": token, "refresh_token": "not_supported",
                         "token_type": "Bearer", "expires_in": 3600, "expiration": now + 3600,
                         "scope": "ibm openid"})

    def _bearer_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[len("Bearer "):] in self.fake._tokens

    def _search(self) -> None:
        if not self._bearer_ok():
            return self._error(401, "Unauthorized")
        self._send(200, {"items": [{"crn": CRN, "name": INSTANCE_NAME,
                                    "service_plan_unique_id": PLAN_ID,
                                    "doc": {"extensions": {"virtual_private_endpoints": {}}},
                                    "tags": []}],
                         "limit": 100})

    def _catalog(self, plan_id: str) -> None:
        if not self._bearer_ok():
            return self._error(401, "Unauthorized")
        if plan_id != PLAN_ID:
            return self._error(404, f"no catalog entry {plan_id}")
        self._send(200, {"id": PLAN_ID, "name": "open",
                         "overview_ui": {"en": {"display_name": "Open"}},
                         "metadata": {"pricing": {"type": "free"}}})

    # -- Qiskit Runtime

    def _runtime(self, method: str, path: str, query: dict, body: bytes) -> None:
        fake = self.fake
        parts = path.strip("/").split("/")
        if parts == ["backends"] and method == "GET":
            devices = [{"name": name, "status": {"name": "online", "reason": "available"},
                        "queue_length": 0, "class": "real"} for name in fake.backend_names()]
            return self._send(200, {"devices": devices})
        if len(parts) == 3 and parts[0] == "backends" and method == "GET":
            name, what = parts[1], parts[2]
            if what in ("configuration", "properties"):
                data = fake._snapshot(name, what)
                if data is None:
                    return self._error(404, f"backend {name} not found")
                return self._send(200, data)
            if what == "status":
                if fake.backend_class(name) is None:
                    return self._error(404, f"backend {name} not found")
                with fake._lock:
                    pending = sum(j.status == "Queued" and j.backend == name for j in fake.jobs.values())
                return self._send(200, {"state": True, "status": "active",
                                        "length_queue": pending, "backend_version": "1.0.0"})
        if parts == ["instances", "usage"] and method == "GET":
            return self._send(200, {"instance_id": CRN, "usage_consumed_seconds": 0,
                                    "usage_limit_reached": False, "usage_remaining_seconds": None})
        if parts[0] == "sessions":
            return self._sessions(method, parts[1:], body)
        if parts[0] == "jobs":
            return self._jobs(method, parts[1:], query, body)
        return self._error(404, f"no route {method} /api/v1{path}")

    def _sessions(self, method: str, rest: list, body: bytes) -> None:
        fake = self.fake
        if not rest and method == "POST":
            payload = json.loads(body or b"{}")
            session = {"id": f"fake-batch-{uuid.uuid4().hex[:16]}", "mode": payload.get("mode"),
                       "backend_name": payload.get("backend"), "state": "open",
                       "accepting_jobs": True, "max_ttl": payload.get("max_ttl"),
                       "started_at": _now_iso()}
            with fake._lock:
                fake.sessions[session["id"]] = session
            return self._send(200, session)
        session = fake.sessions.get(rest[0]) if rest else None
        if session is None:
            return self._error(404, "session not found")
        if len(rest) == 1 and method == "GET":
            return self._send(200, session)
        if len(rest) == 1 and method == "PATCH":
            payload = json.loads(body or b"{}")
            with fake._lock:
                if "accepting_jobs" in payload:
                    session["accepting_jobs"] = bool(payload["accepting_jobs"])
            return self._send(204)
        if rest[1:] == ["close"] and method == "DELETE":
            with fake._lock:
                session["state"], session["accepting_jobs"] = "closed", False
            return self._send(204)
        return self._error(404, "no such session route")

    def _jobs(self, method: str, rest: list, query: dict, body: bytes) -> None:
        fake = self.fake
        if not rest and method == "POST":
            return self._create_job(body)
        if not rest and method == "GET":
            return self._list_jobs(query)
        job = fake.jobs.get(rest[0])
        if job is None:
            return self._error(404, f"job {rest[0]} not found", 1291)
        if len(rest) == 1 and method == "GET":
            return self._send(200, job.as_json())
        if len(rest) == 1 and method == "DELETE":
            with fake._lock:
                fake.jobs.pop(job.id, None)
            return self._send(204)
        if rest[1:] == ["results"] and method == "GET":
            if job.status == "Completed":
                return self._send(200, text=job.result)
            if job.status == "Failed":
                return self._send(200, text=job.reason or "failed")
            return self._error(404, f"job {job.id} has no results yet ({job.status})")
        if rest[1:] == ["cancel"] and method == "POST":
            with fake._lock:
                if job.status in ("Completed", "Failed", "Cancelled"):
                    return self._error(409, f"job {job.id} is {job.status} and cannot be cancelled")
                job.status = "Cancelled"
            return self._send(204)
        if rest[1:] == ["tags"] and method == "PUT":
            with fake._lock:
                job.tags = list(json.loads(body or b"{}").get("tags", []))
            return self._send(204)
        return self._error(404, "no such job route")

    def _create_job(self, body: bytes) -> None:
        fake = self.fake
        payload = json.loads(body or b"{}")
        backend = payload.get("backend")
        if not backend or fake.backend_class(backend) is None:
            return self._error(400, f"backend {backend!r} is not available to this instance", 1216)
        if payload.get("program_id") != "executor":
            return self._error(400, f"program {payload.get('program_id')!r} is not supported by "
                                    "the qrun fake (it runs the executor program)", 1300)
        session_id = payload.get("session_id")
        if session_id:
            session = fake.sessions.get(session_id)
            if session is None or not session["accepting_jobs"]:
                return self._error(400, f"session {session_id} does not accept jobs", 1217)
        try:
            _in_worker(validate, payload.get("params") or {}, backend)
        except Exception as exc:  # what the service refuses: invalid input
            return self._error(400, f"invalid executor input: {type(exc).__name__}: {exc}", 1305)
        tags = payload.get("tags") or []
        job = fake.create_job(backend, "executor", payload["params"], tags, session_id)
        if fake.chance(fake.lose_after_accept):
            with fake._lock:
                fake.faults["lost"] += 1
            return self._drop()
        self._send(200, {"id": job.id, "backend": backend})

    def _list_jobs(self, query: dict) -> None:
        fake = self.fake
        tags = query.get("tags", [])
        with fake._lock:
            jobs = [j for j in fake.jobs.values() if all(t in j.tags for t in tags)]
        for key, field in (("backend", "backend"), ("session_id", "session_id")):
            if key in query:
                jobs = [j for j in jobs if getattr(j, field) == query[key][0]]
        if "program" in query:
            jobs = [j for j in jobs if j.program_id == query["program"][0]]
        if "pending" in query:
            pending = query["pending"][0] == "true"
            jobs = [j for j in jobs if (j.status in ("Queued", "Running")) == pending]
        jobs.sort(key=lambda j: j.number, reverse=query.get("sort", ["DESC"])[0] != "ASC")
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["20"])[0])
        page = jobs[offset:offset + limit]
        self._send(200, {"jobs": [j.as_json() for j in page], "count": len(jobs),
                         "limit": limit, "offset": offset})


def _route_name(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
        rest = parts[2:]
        if rest[0] in ("jobs", "sessions", "backends") and len(rest) > 1:
            rest = [rest[0], "{id}", *rest[2:]]
        return f"{method} /api/v1/{'/'.join(rest)}"
    return f"{method} /{parts[0]}"


FakeService = FakeIBMQuantum


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qrun.fakes qiskit.ibm",
                                     description="A local fake of IBM Quantum Platform for "
                                                 "qiskit-ibm-runtime (qrun's qiskit.ibm provider).")
    fault_arguments(parser)
    parser.add_argument("--run-time", type=float, default=0.0, help="seconds each job waits queued")
    parser.add_argument("--api-key", default=None,
                        help="the only API key accepted (default: any); prefer QRUN_FAKE_API_KEY")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fake = FakeIBMQuantum(latency=args.latency, error_rate=args.error_rate,
                          fail_jobs=args.fail_jobs, stall=args.stall,
                          lose_after_accept=args.lose_after_accept, seed=args.seed,
                          run_time=args.run_time,
                          api_key=args.api_key or os.environ.get("QRUN_FAKE_API_KEY"))
    url = fake.start(args.port)

    def on_stop() -> None:
        shutdown_worker()
        print(f"accepted jobs per tag: {dict(fake.accepted)}", flush=True)
    serve_until_stopped(fake, f"fake IBM Quantum Platform at {url} (backends: fake_manila, "
                              f"fake_kyiv, ...)", on_stop)


if __name__ == "__main__":
    main()
