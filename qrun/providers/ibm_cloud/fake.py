"""A local fake of IBM Quantum Platform for the real, unmodified qiskit-ibm-runtime SDK.

It speaks, on 127.0.0.1, the HTTP calls that ``QiskitRuntimeService`` and the executor
``Sampler`` make (qiskit-ibm-runtime 0.51), under four prefixes of one base URL:

    /iam/identity/token              IBM Cloud IAM: API key -> bearer token (a JWT)
    /search/v3/resources/search      IBM Cloud Global Search: the account's service instances
    /catalog/<plan id>               IBM Cloud Global Catalog: an instance's plan
    /api/v1/...                      the Qiskit Runtime REST API: backends (configuration,
                                     properties, status), instance usage, sessions (batch
                                     mode), jobs (create, list by tag, get, results, metrics,
                                     cancel)

Backends are qiskit-ibm-runtime's fake backends (``fake_manila``, ``fake_kyiv``, ... the
names ``qrun.providers.ibm_local`` knows): their configuration and properties snapshots are
served as the service serves a real device's, so the SDK builds the same Target from them.
Jobs run one at a time, on that fake backend, with the SDK's own local executor runner
(``fake_provider.executor.run_quantum_program``, what local testing mode uses: Aer with the
device's noise model), in a spawned worker process (Qiskit crashed inside the threaded
server). Results go back in the executor's v2.0 result schema, which the SDK decodes and
post-processes into a sampler ``PrimitiveResult``.

What a job used: ``GET /api/v1/jobs/{id}/metrics`` answers in the shape of the API version
the SDK sends (``IBM-API-Version: 2026-04-15``): ``timestamps`` {created, running, finished}
(ISO UTC) and ``usage`` {``qpu_charge_time_seconds``, ``status``}. IBM does not publish its
charge rule, so the fake's is its own stand-in: a finished job is charged
``USAGE_BASE_SECONDS + shots / SHOTS_PER_SECOND`` seconds (2 s plus 1 s per 1,000 shots,
where shots = the program's shots x its circuit executions), a failed or cancelled one 0.
``usage.status`` is ``"pending"`` (the charge not final: ``job.usage()`` says 0) until the job
ends and then for ``usage_pending_for`` seconds more (default 0), then ``"completed"`` (the
value in the SDK's own tests). Each job keeps what it was charged in ``job.shots`` and
``job.charged_seconds``. Backend properties are the fake backend's snapshot, whose
``last_update_date`` (the retired device's) is the only calibration there is; a properties
read with ``updated_before=<time>`` (what ``job.properties()`` sends: the job's running time)
gets that snapshot when it is older than the time, else ``{}`` (no snapshot; the SDK then
says None; the real service's answer for this case is not documented).

Faults, flags, environment variables and accounting are those of every fake
(qrun.fakes.server). A lost answer is a dropped connection, not a 5xx: the SDK retries a POST
on 5xx by design (IBM's API guarantees that a 5xx leaves no job behind), so a 5xx after a
created job would break IBM's own contract rather than rehearse a real failure.
``credential`` is the one API key accepted (any non-empty key if None); a bearer token IAM
issued is valid while the key it was issued for is the accepted one (rotating the key
expires them).

Run it: ``python -m qrun.fakes qiskit.ibm --port 8080`` and point a qiskit.ibm backend's
``options.endpoint`` at http://127.0.0.1:8080 (see docs/cloud-ibm_cloud.md).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs

from qrun.fakes.server import FakeServer, HTTPError, Reply, Request, Route

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/qrunfake0000000000000000:qrun-fake-0000::"
INSTANCE_NAME = "qrun-fake"
PLAN_ID = "qrun-fake-open-plan"
FAILED_REASON = "Error code 1517; the qrun fake backend failed this job on purpose (fail_jobs)"
_JWT_KEY = "qrun-fake-ibm-cloud-signing-key-not-a-secret"
USAGE_BASE_SECONDS = 2.0  # the fake's own charge rule (IBM's is not published): see above
SHOTS_PER_SECOND = 1000


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
            # Stopped before the interpreter tears its modules down: left to the pool's own
            # exit hook, it printed "'NoneType' object has no attribute 'util'" at exit.
            atexit.register(shutdown_worker)
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


def _dates_in_utc(properties: dict) -> None:
    """A properties snapshot's dates as the service sends them: UTC. The snapshots were saved
    with a local offset ("2024-05-27T15:27:23-03:00"); the SDK reads the service's dates as
    UTC whatever offset they carry (``utc_to_local`` replaces the zone), so an offset served
    as is would move every date by it."""
    def utc(text):
        return _instant(text).astimezone(UTC).isoformat().replace("+00:00", "Z")

    properties["last_update_date"] = utc(properties["last_update_date"])
    for entry in [n for qubit in properties.get("qubits", []) for n in qubit] + \
            [p for gate in properties.get("gates", []) for p in gate.get("parameters", [])] + \
            list(properties.get("general", [])):
        if isinstance(entry.get("date"), str):
            entry["date"] = utc(entry["date"])


def _instant(text: str) -> datetime:
    """An ISO time as an aware datetime (UTC when it names no zone)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        self.running: str | None = None  # when it started running (ISO UTC)
        self.finished: str | None = None
        self.finished_at: float | None = None  # time.monotonic() of the end
        self.shots: int | None = None  # shots it ran (program shots x executions), once done
        self.charged_seconds: float | None = None  # what it was charged, once it ended

    def metrics(self, pending_for: float) -> dict:
        """``GET /jobs/{id}/metrics`` as the service answers it (API version 2026-04-15)."""
        final = self.finished_at is not None and time.monotonic() - self.finished_at >= pending_for
        usage = {"qpu_charge_time_seconds": self.charged_seconds or 0,
                 "status": "completed" if final else "pending"}
        return {"timestamps": {"created": self.created, "running": self.running,
                               "finished": self.finished},
                "usage": usage}

    def as_json(self) -> dict:
        state = {"status": self.status}
        if self.reason:
            state["reason"] = self.reason
        if self.reason_code:
            state["reason_code"] = self.reason_code
        return {"id": self.id, "backend": self.backend, "state": state, "status": self.status,
                "program": {"id": self.program_id}, "created": self.created, "tags": self.tags,
                "session_id": self.session_id, "runtime": "", "private": False}


class FakeIBMQuantum(FakeServer):
    """IBM Quantum Platform (IAM, Global Search and Catalog, Runtime API) on 127.0.0.1."""

    provider = "qiskit.ibm"
    title = "fake IBM Quantum Platform"
    routes = (
        Route("POST", "/iam/identity/token", "_iam", faulty=False),
        Route("POST", "/search/v3/resources/search", "_search", faulty=False),
        Route("GET", "/catalog/{plan}", "_catalog", faulty=False),
        Route("GET", "/api/v1/backends", "_backends"),
        Route("GET", "/api/v1/backends/{name}/configuration", "_configuration"),
        Route("GET", "/api/v1/backends/{name}/properties", "_properties"),
        Route("GET", "/api/v1/backends/{name}/status", "_backend_status"),
        Route("GET", "/api/v1/instances/usage", "_usage"),
        Route("POST", "/api/v1/sessions", "_open_session"),
        Route("GET", "/api/v1/sessions/{id}", "_session"),
        Route("PATCH", "/api/v1/sessions/{id}", "_update_session"),
        Route("DELETE", "/api/v1/sessions/{id}/close", "_close_session"),
        Route("POST", "/api/v1/jobs", "_create_job", creates=True),
        Route("GET", "/api/v1/jobs", "_list_jobs"),
        Route("GET", "/api/v1/jobs/{id}", "_job"),
        Route("DELETE", "/api/v1/jobs/{id}", "_delete_job"),
        Route("GET", "/api/v1/jobs/{id}/results", "_results"),
        Route("GET", "/api/v1/jobs/{id}/metrics", "_metrics"),
        Route("POST", "/api/v1/jobs/{id}/cancel", "_cancel"),
        Route("PUT", "/api/v1/jobs/{id}/tags", "_set_tags"),
    )

    def __init__(self, *, backends=None, max_pending_jobs: int | None = None,
                 usage_pending_for: float = 0.0, batch_max_ttl: float | None = None, **common):
        super().__init__(**common)
        # Qiskit (through the fake backends' module) is loaded here, on the thread that made
        # the fake, not on a request's short-lived thread. Loaded there, the next Qiskit
        # thread pool started in the process crashed it (SIGSEGV in mi_thread_init, in the
        # mimalloc 3.3 that qiskit 2.6 is built with; mimalloc#1287 is a thread bug of that
        # release). A plain thread-then-main reproduction does not crash, so the trigger is
        # narrower than that; loading here made tests/test_cloud_ibm_cloud.py pass whole.
        from qrun.providers.ibm_local.adapter import _fake_backends

        _fake_backends()
        self.usage_pending_for = usage_pending_for  # s a finished job's usage stays "pending"
        self.backends = tuple(backends) if backends else None  # None: every fake backend
        # The account's limits, as the service enforces them on a job's creation: at most
        # this many unfinished jobs (error 3458, the open plan's 3); the period's quota
        # spent (error 4317). Both answer HTTP 400 with the code and create nothing.
        self.max_pending_jobs = max_pending_jobs
        self.quota_spent = False
        self.quota_jobs: int | None = None  # set: the quota is spent once this many jobs exist
        self.jobs: dict[str, _Job] = {}
        self.sessions: dict[str, dict] = {}
        # A batch's maximum time (s) when its creator sets none (IBM: 8 h on paid plans, 10
        # min on Open); past it the batch is closed and takes no job. None: no end.
        self.batch_max_ttl = batch_max_ttl
        self._session_clock: dict[str, float] = {}  # session id -> time.monotonic() it started
        self._tokens: dict[str, str | None] = {}  # bearer token -> the key it was issued for
        self._job_numbers = itertools.count(1)  # creation order, for listings

    def banner(self) -> str:
        return f"{self.title} at {self.url} (backends: fake_manila, fake_kyiv, ...)"

    def after_serving(self) -> None:
        shutdown_worker()

    # -- what every request goes through

    def error_reply(self, status: int, message: str, code: str | int | None = None) -> Reply:
        error = {"message": message, "code": code or status}
        return Reply(status, {"errors": [error], "error": error, "status_code": status})

    def authorize(self, request: Request, route: Route) -> None:
        if route.template.startswith("/api/v1/"):
            if not self._runtime_authorized(request):
                raise HTTPError(401, "Unauthorized: invalid or expired token", 401)
        elif route.template.startswith(("/search/", "/catalog/")) and not self._bearer_ok(request):
            raise HTTPError(401, "Unauthorized")

    def _runtime_authorized(self, request: Request) -> bool:
        if request.headers.get("Service-CRN") != CRN:
            return False
        auth = request.headers.get("Authorization", "")
        if auth.startswith("apikey "):  # the SDK's fallback when IAM could not be reached
            return self._key_ok(auth[len("apikey "):])
        return self._bearer_ok(request)

    def _bearer_ok(self, request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with self.lock:
            return token in self._tokens and self._tokens[token] == self.credential

    def _key_ok(self, key: str) -> bool:
        return bool(key) and (self.credential is None or key == self.credential)

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

    def _snapshot(self, name: str, kind: str) -> Reply:
        backend = self.backend_class(name)
        if backend is None:
            raise HTTPError(404, f"backend {name} not found")
        filename = backend.conf_filename if kind == "configuration" else backend.props_filename
        with open(os.path.join(backend.dirname, filename)) as file:
            data = json.load(file)
        data["backend_name"] = name  # the snapshot names the retired device it came from
        if kind == "properties":
            _dates_in_utc(data)
        return Reply(200, data)

    # -- IBM Cloud

    def _iam(self, request: Request) -> Reply:
        form = parse_qs(request.body.decode())
        if not self._key_ok((form.get("apikey") or [""])[0]):
            return Reply(400, {"errorCode": "BXNIM0415E",
                               "errorMessage": "Provided API key could not be found.", "context": {}})
        token = _token()
        with self.lock:
            self._tokens[token] = self.credential
        now = int(time.time())
        return Reply(200, {"access_token": token, "refresh_token": "not_supported",
                           "token_type": "Bearer", "expires_in": 3600, "expiration": now + 3600,
                           "scope": "ibm openid"})

    def _search(self, request: Request) -> Reply:
        return Reply(200, {"items": [{"crn": CRN, "name": INSTANCE_NAME,
                                      "service_plan_unique_id": PLAN_ID,
                                      "doc": {"extensions": {"virtual_private_endpoints": {}}},
                                      "tags": []}],
                           "limit": 100})

    def _catalog(self, request: Request, plan_id: str) -> Reply:
        if plan_id != PLAN_ID:
            raise HTTPError(404, f"no catalog entry {plan_id}")
        return Reply(200, {"id": PLAN_ID, "name": "open",
                           "overview_ui": {"en": {"display_name": "Open"}},
                           "metadata": {"pricing": {"type": "free"}}})

    # -- Qiskit Runtime: backends, usage

    def _backends(self, request: Request) -> Reply:
        devices = [{"name": name, "status": {"name": "online", "reason": "available"},
                    "queue_length": 0, "class": "real"} for name in self.backend_names()]
        return Reply(200, {"devices": devices})

    def _configuration(self, request: Request, name: str) -> Reply:
        return self._snapshot(name, "configuration")

    def _properties(self, request: Request, name: str) -> Reply:
        reply = self._snapshot(name, "properties")
        before = request.query.get("updated_before")
        if before and _instant(reply.body["last_update_date"]) >= _instant(before[0]):
            return Reply(200, {})  # no snapshot older than the time asked for
        return reply

    def properties_last_update(self, name: str) -> datetime:
        """The ``last_update_date`` of the properties this fake serves for ``name``."""
        return _instant(self._snapshot(name, "properties").body["last_update_date"])

    def _backend_status(self, request: Request, name: str) -> Reply:
        if self.backend_class(name) is None:
            raise HTTPError(404, f"backend {name} not found")
        with self.lock:
            pending = sum(j.status == "Queued" and j.backend == name for j in self.jobs.values())
        return Reply(200, {"state": True, "status": "active", "length_queue": pending,
                           "backend_version": "1.0.0"})

    def _usage(self, request: Request) -> Reply:
        return Reply(200, {"instance_id": CRN, "usage_consumed_seconds": 0,
                           "usage_limit_reached": self.quota_spent,
                           "usage_remaining_seconds": 0 if self.quota_spent else None})

    # -- sessions (batch mode)

    def _open_session(self, request: Request) -> Reply:
        payload = request.json()
        if payload.get("mode") not in ("batch", "dedicated"):
            raise HTTPError(400, f"invalid session mode {payload.get('mode')!r}", 1218)
        max_ttl = payload.get("max_ttl") or self.batch_max_ttl
        session = {"id": f"fake-batch-{uuid.uuid4().hex[:16]}", "mode": payload.get("mode"),
                   "backend_name": payload.get("backend"), "state": "open",
                   "accepting_jobs": True, "max_ttl": max_ttl, "started_at": _now_iso(),
                   "closed_at": None}
        with self.lock:
            self.sessions[session["id"]] = session
            self._session_clock[session["id"]] = time.monotonic()
        return Reply(200, session)

    def _known_session(self, session_id: str) -> dict:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise HTTPError(404, "session not found")
            self._age_session(session)
            return dict(session)

    def _age_session(self, session: dict) -> None:
        """The service's own transitions (held lock): a batch past its maximum time closes;
        one that stopped accepting closes once its last job has ended."""
        if session["state"] == "closed":
            return
        ttl = session.get("max_ttl")
        expired = ttl is not None and time.monotonic() - self._session_clock[session["id"]] > float(ttl)
        drained = not session["accepting_jobs"] and not any(
            job.session_id == session["id"] and job.status in ("Queued", "Running")
            for job in self.jobs.values())
        if expired or drained:
            session["state"], session["accepting_jobs"] = "closed", False
            session["closed_at"] = _now_iso()

    def expire_session(self, session_id: str) -> None:
        """For rehearsals: the batch reaches its maximum time now."""
        with self.lock:
            session = self.sessions[session_id]
            session["state"], session["accepting_jobs"] = "closed", False
            session["closed_at"] = _now_iso()

    def _session(self, request: Request, session_id: str) -> Reply:
        return Reply(200, self._known_session(session_id))

    def _update_session(self, request: Request, session_id: str) -> Reply:
        payload = request.json()
        self._known_session(session_id)
        with self.lock:
            session = self.sessions[session_id]
            if "accepting_jobs" in payload:
                session["accepting_jobs"] = bool(payload["accepting_jobs"])
            self._age_session(session)
        return Reply(204)

    def _close_session(self, request: Request, session_id: str) -> Reply:
        self._known_session(session_id)
        with self.lock:  # DELETE .../close is Batch.cancel(): its queued jobs are cancelled
            session = self.sessions[session_id]
            session["state"], session["accepting_jobs"] = "closed", False
            session["closed_at"] = _now_iso()
            for job in self.jobs.values():
                if job.session_id == session_id and job.status == "Queued":
                    job.status, job.charged_seconds = "Cancelled", 0.0
        return Reply(204)

    # -- jobs

    def _known_job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"job {job_id} not found", 1291)
        return job

    def _create_job(self, request: Request) -> Reply:
        payload = request.json()
        backend = payload.get("backend")
        if not backend or self.backend_class(backend) is None:
            raise HTTPError(400, f"backend {backend!r} is not available to this instance", 1216)
        if payload.get("program_id") != "executor":
            raise HTTPError(400, f"program {payload.get('program_id')!r} is not supported by "
                                 "the qrun fake (it runs the executor program)", 1300)
        session_id = payload.get("session_id")
        if session_id:
            with self.lock:
                session = self.sessions.get(session_id)
                if session is not None:
                    self._age_session(session)
                if session is None or not session["accepting_jobs"]:
                    raise HTTPError(400, f"session {session_id} is closed and does not accept jobs", 1217)
                session["state"] = "active"
        try:
            _in_worker(validate, payload.get("params") or {}, backend)
        except Exception as exc:  # what the service refuses: invalid input
            raise HTTPError(400, f"invalid executor input: {type(exc).__name__}: {exc}", 1305) from None
        tags = payload.get("tags") or []
        with self.lock:
            self._refuse_past_limits()
            job = _Job(f"fake-{uuid.uuid4().hex[:20]}", backend, "executor", payload["params"],
                       tags, session_id, next(self._job_numbers))
            job.fail = self.job_fails()
            self.jobs[job.id] = job
            for tag in tags:
                self.accepted[tag] += 1
        self.run_later(lambda: self._run(job))
        return Reply(200, {"id": job.id, "backend": backend})

    def _refuse_past_limits(self) -> None:
        """The account's limits (held lock): a create past them makes nothing."""
        if self.quota_jobs is not None and len(self.jobs) >= self.quota_jobs:
            self.quota_spent = True  # the period's quota covered this many jobs
        if self.quota_spent:
            self.injected["4317"] += 1
            raise HTTPError(400, "You have exceeded your monthly quota.", 4317)
        unfinished = sum(j.status in ("Queued", "Running") for j in self.jobs.values())
        if self.max_pending_jobs is not None and unfinished >= self.max_pending_jobs:
            self.injected["3458"] += 1
            raise HTTPError(400, f"You have reached the limit of {self.max_pending_jobs} pending "
                                 "jobs. Please wait for a job to complete or cancel one before "
                                 "submitting anything new.", 3458)

    def _run(self, job: _Job) -> None:
        with self.lock:
            if job.status != "Queued":
                return  # cancelled while queued
            job.status, job.running = "Running", _now_iso()
        try:
            if job.fail:
                raise _JobFailure(FAILED_REASON)
            seed = (self.faults.seed * 1_000_003 + job.number) % 2**31
            result, shots = _in_worker(execute, job.params, job.backend, seed)
        except _JobFailure as exc:
            self._finish(job, "Failed", reason=str(exc), code=1517)
        except Exception as exc:  # a bug or an unsupported program: the job fails
            self._finish(job, "Failed", reason=f"Error code 1500; {type(exc).__name__}: {exc}",
                         code=1500)
        else:
            self._finish(job, "Completed", result=result, shots=shots)

    def _finish(self, job: _Job, status: str, result=None, reason=None, code=None,
                shots=None) -> None:
        with self.lock:
            if job.status == "Cancelled":
                return
            job.status, job.result, job.reason, job.reason_code = status, result, reason, code
            job.shots = shots
            job.charged_seconds = USAGE_BASE_SECONDS + shots / SHOTS_PER_SECOND if shots else 0.0
            job.finished, job.finished_at = _now_iso(), time.monotonic()

    def _list_jobs(self, request: Request) -> Reply:
        query = request.query
        tags = query.get("tags", [])
        with self.lock:
            jobs = [j for j in self.jobs.values() if all(t in j.tags for t in tags)]
        for key in ("backend", "session_id"):
            if key in query:
                jobs = [j for j in jobs if getattr(j, key) == query[key][0]]
        if "program" in query:
            jobs = [j for j in jobs if j.program_id == query["program"][0]]
        if "pending" in query:
            pending = query["pending"][0] == "true"
            jobs = [j for j in jobs if (j.status in ("Queued", "Running")) == pending]
        jobs.sort(key=lambda j: j.number, reverse=query.get("sort", ["DESC"])[0] != "ASC")
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["20"])[0])
        page = jobs[offset:offset + limit]
        return Reply(200, {"jobs": [j.as_json() for j in page], "count": len(jobs),
                           "limit": limit, "offset": offset})

    def _job(self, request: Request, job_id: str) -> Reply:
        return Reply(200, self._known_job(job_id).as_json())

    def _delete_job(self, request: Request, job_id: str) -> Reply:
        job = self._known_job(job_id)
        with self.lock:
            self.jobs.pop(job.id, None)
        return Reply(204)

    def _results(self, request: Request, job_id: str) -> Reply:
        job = self._known_job(job_id)
        if job.status == "Completed":
            return Reply(200, job.result or "")
        if job.status == "Failed":
            return Reply(200, job.reason or "failed")
        raise HTTPError(404, f"job {job.id} has no results yet ({job.status})")

    def _metrics(self, request: Request, job_id: str) -> Reply:
        job = self._known_job(job_id)
        with self.lock:
            return Reply(200, job.metrics(self.usage_pending_for))

    def _cancel(self, request: Request, job_id: str) -> Reply:
        job = self._known_job(job_id)
        with self.lock:
            if job.status in ("Completed", "Failed", "Cancelled"):
                raise HTTPError(409, f"job {job.id} is {job.status} and cannot be cancelled")
            job.status, job.charged_seconds = "Cancelled", 0.0
            job.finished, job.finished_at = _now_iso(), time.monotonic()
        return Reply(204)

    def _set_tags(self, request: Request, job_id: str) -> Reply:
        job, payload = self._known_job(job_id), request.json()
        with self.lock:
            job.tags = list(payload.get("tags", []))
        return Reply(204)


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


def execute(params: dict, backend: str, seed: int) -> tuple[str, int]:
    """Run an executor job on the fake backend (in the worker process): its result text,
    and the shots it ran (the program's shots for each execution of each item)."""
    from qiskit_ibm_runtime.fake_provider.executor.run_quantum_program import (
        run_quantum_program,
    )
    from qiskit_ibm_runtime.options_models.simulator import SimulatorOptions

    program = decode_program(params)
    result = run_quantum_program(_fake_backend(backend), program,
                                 SimulatorOptions(seed_simulator=seed))
    return encode_result(result), program.shots * sum(item.size() for item in program.items)


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
