"""A local fake of Pasqal Cloud: the HTTP API that the real, unmodified pasqal-cloud SDK calls,
on 127.0.0.1, running each batch's jobs on qrun's pulser.local emulator (QuTiP).

Served (base URL U, as `options.endpoint: U`):
    POST  U/oauth/token                              login (email/password -> access token)
    GET   U/account/api/v1/projects                  the account's projects
    POST  U/core-fast/api/v1/batches                 create a batch (gzip JSON body), tags kept
    GET   U/core-fast/api/v1/batches                 list batches (filters: tag, project_id, id,
                                                     status; offset/limit pagination)
    GET   U/core-fast/api/v2/batches/{id}            one batch, with its sequence
    GET   U/core-fast/api/v1/batches/{id}/status     its status and jobs per status
    PATCH U/core-fast/api/v2/batches/{id}/cancel     cancel it (and its unfinished jobs)
    PATCH U/core-fast/api/v1/batches/{id}/tags       replace its tags
    GET   U/core-fast/api/v2/jobs                    list jobs (batch_id, creation order)
    GET   U/core-fast/api/v2/jobs/{id}               one job
    GET   U/core-fast/api/v1/jobs/{id}/status        its status
    GET   U/core-fast/api/v1/jobs/{id}/results_link  a signed link to its result
    GET   U/results/{id}?signature=...               the result (the "S3" download)

Faults, each from the constructor or, when not given there, from the environment at start():
    latency            QRUN_FAKE_LATENCY            seconds added to every request
    error_rate         QRUN_FAKE_ERROR_RATE         share of requests answered 429/500/502/503/504
                                                    before any work is done
    fail_jobs          QRUN_FAKE_FAIL_JOBS          share of jobs that end in ERROR
    stall              QRUN_FAKE_STALL              batches stay PENDING forever
    lose_after_accept  QRUN_FAKE_LOSE_AFTER_ACCEPT  share of batch creations whose answer is lost
                                                    after the batch was created (the connection
                                                    is dropped, or a 502 is returned)
`accepted` counts the batches created per tag: a test proves nothing was accepted twice.
`token` (QRUN_FAKE_TOKEN) is the one bearer token accepted (any non-empty one if None, and
always the ones /oauth/token issued); `users` maps emails to passwords for /oauth/token.

    python -m qrun.fakes pasqal.cloud --port 8080 [--latency 0.2 --error-rate 0.1 ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from qrun.fakes.server import fault_arguments, serve_until_stopped

PROJECT_ID = "7a1c3e5f-0b2d-4c6e-8f90-a1b2c3d4e5f6"
USER_ID = "qrun-fake-user"
DEVICE_TYPES = {"EMU_FREE", "EMU_TN", "EMU_FRESNEL", "EMU_MPS", "EMU_SV", "FRESNEL", "FRESNEL_CAN1"}
QPU_LIKE = {"FRESNEL", "FRESNEL_CAN1", "EMU_FRESNEL"}  # sequences checked as a QPU would
INJECTED_ERROR = "Emulation aborted on the device (injected fault)"


class _Reply(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _env_float(name: str) -> float:
    try:
        return float(os.environ.get(name, "") or 0)
    except ValueError:
        return 0.0


class FakePasqal:
    def __init__(self, *, latency=None, error_rate=None, fail_jobs=None, stall=None,
                 lose_after_accept=None, seed=0, token=None, users=None, projects=None,
                 workers: int = 1):
        self._given = dict(latency=latency, error_rate=error_rate, fail_jobs=fail_jobs,
                           stall=stall, lose_after_accept=lose_after_accept, token=token)
        self.latency = self.error_rate = self.fail_jobs = self.lose_after_accept = 0.0
        self.stall = False
        self.token = token
        self.seed = seed
        self.users = dict(users or {})
        self.projects = list(projects or [{"id": PROJECT_ID, "name": "qrun rehearsal"}])
        self.accepted: Counter = Counter()  # tag -> batches created with it
        self.requests: Counter = Counter()  # "METHOD route" -> requests answered
        self.batches: dict = {}
        self.jobs: dict = {}
        self.url = ""
        self._order: list = []  # batch ids, oldest first
        self._issued: set = set()  # tokens /oauth/token gave out
        self._signatures: dict = {}  # job id -> result link signature
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._server: ThreadingHTTPServer | None = None
        self._emulators: dict = {}

    # -- life

    def _configure(self) -> None:
        env = {"latency": _env_float("QRUN_FAKE_LATENCY"),
               "error_rate": _env_float("QRUN_FAKE_ERROR_RATE"),
               "fail_jobs": _env_float("QRUN_FAKE_FAIL_JOBS"),
               "stall": os.environ.get("QRUN_FAKE_STALL", "").lower() not in ("", "0", "false", "no"),
               "lose_after_accept": _env_float("QRUN_FAKE_LOSE_AFTER_ACCEPT"),
               "token": os.environ.get("QRUN_FAKE_TOKEN") or None}
        for name, value in self._given.items():
            setattr(self, name, env[name] if value is None else value)

    def start(self, port: int = 0) -> str:
        """Serve in a thread on 127.0.0.1 (port 0: a free one); return the base URL."""
        self._configure()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="fake-pasqal")
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self._random.random() < share

    # -- requests

    def serve(self, method: str, target: str, headers, body: bytes) -> tuple:
        """(status, JSON payload or None to drop the connection, extra headers)."""
        reply = self._route(method, target, headers, body)
        if self.latency:  # after the work: an accepted batch waits this long for its answer
            time.sleep(self.latency)
        return reply

    def _route(self, method: str, target: str, headers, body: bytes) -> tuple:
        if self.chance(self.error_rate):
            status = self._random.choice([429, 429, 500, 502, 503, 504])
            return status, _fail(status, "injected fault: try again"), (
                {"Retry-After": "0"} if status == 429 else {})
        parts = urlsplit(target)
        path, query = parts.path.rstrip("/"), parse_qs(parts.query)
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                with self._lock:
                    self.requests[f"{method} {name}"] += 1
                try:
                    if name not in ("login", "results"):
                        self._authorize(headers)
                    return getattr(self, f"_{name}")(query, _json_body(body, headers), *match.groups())
                except _Reply as reply:
                    return reply.status, _fail(reply.status, reply.message), {}
        return 404, _fail(404, f"no route {method} {path}"), {}

    def _authorize(self, headers) -> None:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or not token:
            raise _Reply(401, "Unauthorized: a bearer token is required")
        if token in self._issued or (self.token is None) or secrets.compare_digest(token, self.token):
            return
        raise _Reply(401, "Unauthorized: invalid token")

    # -- routes

    def _login(self, query, body):
        username, password = body.get("username"), body.get("password")
        if not username or self.users.get(username) != password:
            return 403, {"error": "invalid_grant", "error_description": "Wrong email or password."}, {}
        token = "fake-" + secrets.token_hex(16)
        with self._lock:
            self._issued.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}, {}

    def _projects(self, query, body):
        return 200, _ok([{**p, "project_id": p["id"], "project_status": "ACTIVE"}
                         for p in self.projects]), {}

    def _create_batch(self, query, body):
        batch = self._new_batch(body)
        with self._lock:
            self.batches[batch["id"]] = batch
            self._order.append(batch["id"])
            for tag in batch["tags"]:
                self.accepted[tag] += 1
        if not self.stall:
            self._executor.submit(self._run, batch["id"])
        if self.chance(self.lose_after_accept):
            if self.chance(0.5):
                return 0, None, {}  # the connection drops: the client hears nothing
            return 502, _fail(502, "Bad Gateway"), {}
        return 200, _ok(self._batch_view(batch, jobs=True)), {}

    def _list_batches(self, query, body):
        with self._lock:
            rows = [self.batches[i] for i in reversed(self._order)]  # newest first
        for key, field in (("id", "id"), ("project_id", "project_id"), ("status", "status"),
                           ("device_type", "device_type")):
            if key in query:
                rows = [b for b in rows if b[field] in query[key]]
        if "tag" in query:
            rows = [b for b in rows if query["tag"][0] in b["tags"]]
        return self._page(query, [self._batch_view(b) for b in rows])

    def _get_batch(self, query, body, batch_id):
        return 200, _ok(self._batch_view(self._batch(batch_id), sequence=True)), {}

    def _batch_status(self, query, body, batch_id):
        batch = self._batch(batch_id)
        view = self._batch_view(batch)
        return 200, _ok({"id": batch_id, "status": view["status"],
                         "jobs_count_per_status": view["jobs_count_per_status"]}), {}

    def _cancel_batch(self, query, body, batch_id):
        with self._lock:
            batch = self._batch(batch_id)
            if batch["status"] in ("DONE", "ERROR", "CANCELED", "TIMED_OUT"):
                raise _Reply(400, f"Batch {batch_id} is already {batch['status']} and cannot be cancelled")
            batch.update(status="CANCELED", open=False, complete=True, updated_at=_now(),
                         end_datetime=_now())
            for job_id in batch["job_ids"]:
                job = self.jobs[job_id]
                if job["status"] in ("PENDING", "RUNNING"):
                    job.update(status="CANCELED", updated_at=_now())
        return 200, _ok(self._batch_view(batch)), {}

    def _set_tags(self, query, body, batch_id):
        with self._lock:
            batch = self._batch(batch_id)
            batch["tags"] = [str(t) for t in body]
        return 200, _ok(self._batch_view(batch)), {}

    def _list_jobs(self, query, body):
        with self._lock:
            rows = list(self.jobs.values())
        if "batch_id" in query:
            rows = [j for j in rows if j["batch_id"] in query["batch_id"]]
        if "id" in query:
            rows = [j for j in rows if j["id"] in query["id"]]
        rows.sort(key=lambda j: j["order"],
                  reverse=query.get("order_by_direction", ["DESC"])[0].upper() != "ASC")
        return self._page(query, [self._job_view(j) for j in rows])

    def _get_job(self, query, body, job_id):
        return 200, _ok(self._job_view(self._job(job_id), sequence=True)), {}

    def _job_status(self, query, body, job_id):
        job = self._job(job_id)
        return 200, _ok({"id": job_id, "status": job["status"]}), {}

    def _results_link(self, query, body, job_id):
        job = self._job(job_id)
        if job["status"] != "DONE":
            return 200, _ok({"results_link": None}), {}
        with self._lock:
            signature = self._signatures.setdefault(job_id, secrets.token_hex(8))
        return 200, _ok({"results_link": f"{self.url}/results/{job_id}?signature={signature}"}), {}

    def _results(self, query, body, job_id):
        job = self.jobs.get(job_id)
        if job is None or query.get("signature", [""])[0] != self._signatures.get(job_id):
            return 403, b"<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"}
        return 200, {"counter": job["counter"], "raw": None, "serialised_results": None}, {}

    # -- batches and jobs

    def _new_batch(self, body: dict) -> dict:
        from pulser import Sequence

        if body.get("project_id") not in {p["id"] for p in self.projects}:
            raise _Reply(403, f"Project {body.get('project_id')} not found or not accessible")
        device = body.get("device_type") or "EMU_FREE"
        if device not in DEVICE_TYPES:
            raise _Reply(400, f"Invalid device_type {device!r}; expected one of "
                              f"{', '.join(sorted(DEVICE_TYPES))}")
        jobs = body.get("jobs") or []
        if not jobs:
            raise _Reply(400, "A closed batch needs at least one job")
        try:
            sequence = Sequence.from_abstract_repr(body.get("sequence_builder"))
        except Exception as exc:
            raise _Reply(400, f"Invalid sequence_builder: {' '.join(str(exc).split())[:300]}") from None
        batch_id, now = str(uuid.uuid4()), _now()
        records = []
        for index, job in enumerate(jobs):
            runs = job.get("runs")
            if not isinstance(runs, int) or runs < 1:
                raise _Reply(400, f"jobs[{index}].runs must be a positive integer")
            own = job.get("sequence")
            try:
                if own is not None:
                    Sequence.from_abstract_repr(own)
                elif sequence.is_parametrized():
                    sequence.build(**(job.get("variables") or {}))
            except Exception as exc:
                raise _Reply(400, f"jobs[{index}]: {' '.join(str(exc).split())[:300]}") from None
            records.append({"id": str(uuid.uuid4()), "batch_id": batch_id, "project_id": body["project_id"],
                            "runs": runs, "variables": job.get("variables"), "sequence": own,
                            "status": "PENDING", "errors": [], "counter": None, "created_at": now,
                            "updated_at": now, "start_timestamp": None, "end_timestamp": None})
        with self._lock:
            base = len(self.jobs)
            for offset, record in enumerate(records):
                record["order"] = base + offset
                self.jobs[record["id"]] = record
        return {"id": batch_id, "project_id": body["project_id"], "user_id": USER_ID,
                "device_type": device, "status": "PENDING", "open": bool(body.get("open")),
                "complete": not body.get("open"), "created_at": now, "updated_at": now,
                "sequence_builder": body.get("sequence_builder"), "webhook": body.get("webhook"),
                "configuration": body.get("configuration"), "tags": [str(t) for t in body.get("tags") or []],
                "job_ids": [r["id"] for r in records], "start_datetime": None, "end_datetime": None}

    def _run(self, batch_id: str) -> None:
        """Run a batch's jobs, one after the other, on qrun's pulser.local emulator."""
        from qrun.providers.base import Task, TaskFailed

        with self._lock:
            batch = self.batches[batch_id]
            if batch["status"] != "PENDING":
                return
            batch.update(status="RUNNING", start_datetime=_now(), updated_at=_now())
        emulator = self._emulator(batch["device_type"] in QPU_LIKE)
        tag = batch["tags"][0] if batch["tags"] else batch_id
        for index, job_id in enumerate(batch["job_ids"]):
            with self._lock:
                job = self.jobs[job_id]
                if batch["status"] == "CANCELED" or job["status"] != "PENDING":
                    continue
                job.update(status="RUNNING", start_timestamp=_now(), updated_at=_now())
            if self.chance(self.fail_jobs):
                outcome = TaskFailed(INJECTED_ERROR)
            else:
                program = (job["sequence"] or batch["sequence_builder"]).encode()
                task = Task(program_format="pulser", program_content=program, program_item=0,
                            program_digest=hashlib.sha256(program).hexdigest(),
                            params=job["variables"] or {}, shots=job["runs"])
                seed = int(hashlib.sha256(f"{self.seed}:{tag}:{index}".encode()).hexdigest()[:8], 16)
                try:
                    (outcome,) = emulator.run([task], seed & 0x7FFFFFFF)
                except Exception as exc:  # the emulator itself broke
                    outcome = TaskFailed.of(exc)
            with self._lock:
                if isinstance(outcome, TaskFailed):
                    job.update(status="ERROR", errors=[outcome.error])
                else:
                    job.update(status="DONE", counter=outcome)
                job.update(end_timestamp=_now(), updated_at=_now())
        with self._lock:
            if batch["status"] == "CANCELED":
                return
            failed = any(self.jobs[j]["status"] == "ERROR" for j in batch["job_ids"])
            batch.update(status="ERROR" if failed else "DONE", end_datetime=_now(), updated_at=_now())

    def _emulator(self, mimic_qpu: bool):
        from qrun.providers.pulser_local.adapter import Adapter

        with self._lock:
            if mimic_qpu not in self._emulators:
                self._emulators[mimic_qpu] = Adapter("qutip", {"mimic_qpu": mimic_qpu})
            return self._emulators[mimic_qpu]

    # -- views

    def _batch(self, batch_id: str) -> dict:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _Reply(404, f"Batch {batch_id} not found")
        return batch

    def _job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise _Reply(404, f"Job {job_id} not found")
        return job

    def _batch_view(self, batch: dict, sequence: bool = False, jobs: bool = False) -> dict:
        with self._lock:
            per_status = Counter(self.jobs[j]["status"] for j in batch["job_ids"])
            view = {k: v for k, v in batch.items() if k != "sequence_builder"}
            view.update(jobs_count=len(batch["job_ids"]), jobs_count_per_status=dict(per_status))
            if sequence:
                view["sequence_builder"] = batch["sequence_builder"]
            if jobs:
                view["jobs"] = [self._job_view(self.jobs[j]) for j in batch["job_ids"]]
        return view

    @staticmethod
    def _job_view(job: dict, sequence: bool = False) -> dict:
        view = {k: v for k, v in job.items() if k not in ("sequence", "counter", "order")}
        if sequence:
            view["sequence"] = job["sequence"]
        return view

    def _page(self, query, rows: list) -> tuple:
        offset = int(query.get("offset", ["0"])[0])
        limit = min(100, int(query.get("limit", ["100"])[0]))
        page = rows[offset:offset + limit]
        return 200, {**_ok(page), "pagination": {"total": len(rows), "offset": offset,
                                                 "end": offset + len(page)}}, {}


ROUTES = [
    ("POST", r"/oauth/token", "login"),
    ("GET", r"/account/api/v1/projects", "projects"),
    ("POST", r"/core-fast/api/v1/batches", "create_batch"),
    ("GET", r"/core-fast/api/v1/batches", "list_batches"),
    ("GET", r"/core-fast/api/v2/batches/([\w-]+)", "get_batch"),
    ("GET", r"/core-fast/api/v1/batches/([\w-]+)/status", "batch_status"),
    ("PATCH", r"/core-fast/api/v2/batches/([\w-]+)/cancel", "cancel_batch"),
    ("PATCH", r"/core-fast/api/v1/batches/([\w-]+)/tags", "set_tags"),
    ("GET", r"/core-fast/api/v2/jobs", "list_jobs"),
    ("GET", r"/core-fast/api/v2/jobs/([\w-]+)", "get_job"),
    ("GET", r"/core-fast/api/v1/jobs/([\w-]+)/status", "job_status"),
    ("GET", r"/core-fast/api/v1/jobs/([\w-]+)/results_link", "results_link"),
    ("GET", r"/results/([\w-]+)", "results"),
]


def _ok(data) -> dict:
    return {"code": 200, "data": data, "message": "OK.", "status": "success"}


def _fail(status: int, message: str) -> dict:
    return {"code": status, "data": {"description": message}, "message": message, "status": "fail"}


def _json_body(body: bytes, headers) -> dict:
    if not body:
        return {}
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    if "x-www-form-urlencoded" in (headers.get("Content-Type") or ""):
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}
    try:
        return json.loads(body)
    except ValueError:
        raise _Reply(400, "the request body is not JSON") from None


def _handler(fake: FakePasqal):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: dropping one is simple

        def log_message(self, *args):  # quiet: tests read their own output
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload, headers = fake.serve(self.command, self.path, self.headers, body)
            except _Reply as reply:
                status, payload, headers = reply.status, _fail(reply.status, reply.message), {}
            except Exception as exc:  # a bug of the fake: say so, as a server would
                status, payload, headers = 500, _fail(500, f"fake server error: {exc}"), {}
            if payload is None:
                self.close_connection = True
                return  # nothing written: the client sees the connection close
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Type" not in headers:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qrun.fakes pasqal.cloud",
                                     description="A local fake Pasqal Cloud for rehearsing qrun campaigns.")
    fault_arguments(parser, default=None)  # flags left out: QRUN_FAKE_* variables decide
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None,
                        help="the only bearer token accepted (default: QRUN_FAKE_TOKEN, else any)")
    parser.add_argument("--user", action="append", default=[], metavar="EMAIL:PASSWORD",
                        help="an account for email:password logins (repeatable)")
    args = parser.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user if ":" in u)
    fake = FakePasqal(latency=args.latency, error_rate=args.error_rate, fail_jobs=args.fail_jobs,
                      stall=args.stall, lose_after_accept=args.lose_after_accept, seed=args.seed,
                      token=args.token, users=users)
    url = fake.start(args.port)
    serve_until_stopped(fake, f"fake Pasqal Cloud at {url} (project {PROJECT_ID})")


FakeService = FakePasqal  # the name the fakes share

if __name__ == "__main__":
    main()
