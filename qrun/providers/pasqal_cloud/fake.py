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
    GET   U/core-fast/api/v1/devices/specs           {device_type: specs}, each specs the JSON
                                                     text of a Pulser abstract device
    GET   U/core-fast/api/v1/devices/public-specs    [{device_type, specs}] (no token needed)

Device specs are what pasqal-cloud's `get_device_specs_dict()` reads (http_client.py:495-519):
Pulser's `Device.to_abstract_repr()` text, whose `version` is the abstract-repr schema version
and `pulser_version` the Pulser that wrote it. They carry no calibration identity, as Pasqal's
do not. The fake serves Pulser's `AnalogDevice` for the Fresnel names and `MockDevice` for the
emulators, written once per fake (`specs=` replaces them, e.g. to rehearse a change).

Faults, flags, environment variables and accounting are those of every fake
(qrun.fakes.server). `credential` is the one bearer token accepted (any non-empty one if None,
and always the ones /oauth/token issued); `users` maps emails to passwords for /oauth/token.

    python -m qrun.fakes pasqal.cloud --port 8080 [--latency 0.2 --error-rate 0.1 ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import secrets
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs

from qrun.fakes.server import FakeServer, HTTPError, Reply, Request, Route

PROJECT_ID = "7a1c3e5f-0b2d-4c6e-8f90-a1b2c3d4e5f6"
USER_ID = "qrun-fake-user"
DEVICE_TYPES = {"EMU_FREE", "EMU_TN", "EMU_FRESNEL", "EMU_MPS", "EMU_SV", "FRESNEL", "FRESNEL_CAN1"}
QPU_LIKE = {"FRESNEL", "FRESNEL_CAN1", "EMU_FRESNEL"}  # sequences checked as a QPU would
INJECTED_ERROR = "Emulation aborted on the device (injected fault)"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakePasqal(FakeServer):
    provider = "pasqal.cloud"
    title = "fake Pasqal Cloud"
    routes = (
        Route("POST", "/oauth/token", "_login"),
        Route("GET", "/account/api/v1/projects", "_projects"),
        Route("POST", "/core-fast/api/v1/batches", "_create_batch", creates=True),
        Route("GET", "/core-fast/api/v1/batches", "_list_batches"),
        Route("GET", "/core-fast/api/v2/batches/{id}", "_get_batch"),
        Route("GET", "/core-fast/api/v1/batches/{id}/status", "_batch_status"),
        Route("PATCH", "/core-fast/api/v2/batches/{id}/cancel", "_cancel_batch"),
        Route("PATCH", "/core-fast/api/v1/batches/{id}/tags", "_set_tags"),
        Route("GET", "/core-fast/api/v2/jobs", "_list_jobs"),
        Route("GET", "/core-fast/api/v2/jobs/{id}", "_get_job"),
        Route("GET", "/core-fast/api/v1/jobs/{id}/status", "_job_status"),
        Route("GET", "/core-fast/api/v1/jobs/{id}/results_link", "_results_link"),
        Route("GET", "/results/{id}", "_results"),  # the signed "S3" download
        Route("GET", "/core-fast/api/v1/devices/specs", "_device_specs"),
        Route("GET", "/core-fast/api/v1/devices/public-specs", "_public_device_specs"),
    )
    _PUBLIC = ("_login", "_results", "_public_device_specs")  # a login, a signed link, public specs

    def __init__(self, *, users=None, projects=None, specs=None, **common):
        super().__init__(**common)
        self.users = dict(users or {})
        self.projects = list(projects or [{"id": PROJECT_ID, "name": "qrun rehearsal"}])
        self.batches: dict = {}
        self.jobs: dict = {}
        self._order: list = []  # batch ids, oldest first
        self._issued: set = set()  # tokens /oauth/token gave out
        self._signatures: dict = {}  # job id -> result link signature
        self._emulators: dict = {}
        self._specs: dict | None = dict(specs) if specs is not None else None

    @property
    def specs(self) -> dict:
        """{device_type: specs JSON text}, as the specs routes serve them."""
        with self.lock:
            if self._specs is None:
                from pulser.devices import AnalogDevice, MockDevice

                self._specs = {name: (AnalogDevice if name in QPU_LIKE else MockDevice).to_abstract_repr()
                               for name in sorted(DEVICE_TYPES)}
            return self._specs

    def banner(self) -> str:
        return f"{self.title} at {self.url} (project {PROJECT_ID})"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", action="append", default=[], metavar="EMAIL:PASSWORD",
                            help="an account for email:password logins (repeatable)")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict:
        return {"users": dict(u.split(":", 1) for u in args.user if ":" in u)}

    # -- what every request goes through

    def error_reply(self, status: int, message: str, code: str | int | None = None) -> Reply:
        return Reply(status, _fail(status, message))

    def authorize(self, request: Request, route: Route) -> None:
        if route.handler in self._PUBLIC:
            return
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or not token:
            raise HTTPError(401, "Unauthorized: a bearer token is required")
        if token in self._issued or self.credential is None or \
                secrets.compare_digest(token, self.credential):
            return
        raise HTTPError(401, "Unauthorized: invalid token")

    # -- routes

    def _login(self, request: Request) -> Reply:
        body = _body(request)
        username, password = body.get("username"), body.get("password")
        if not username or self.users.get(username) != password:
            return Reply(403, {"error": "invalid_grant", "error_description": "Wrong email or password."})
        token = "fake-" + secrets.token_hex(16)
        with self.lock:
            self._issued.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _projects(self, request: Request) -> Reply:
        return Reply(200, _ok([{**p, "project_id": p["id"], "project_status": "ACTIVE"}
                               for p in self.projects]))

    def _create_batch(self, request: Request) -> Reply:
        batch = self._new_batch(_body(request))
        with self.lock:
            self.batches[batch["id"]] = batch
            self._order.append(batch["id"])
            for tag in batch["tags"]:
                self.accepted[tag] += 1
        self.run_later(lambda: self._run(batch["id"]))
        return Reply(200, _ok(self._batch_view(batch, jobs=True)))

    def _list_batches(self, request: Request) -> Reply:
        query = request.query
        with self.lock:
            rows = [self.batches[i] for i in reversed(self._order)]  # newest first
        for key, field in (("id", "id"), ("project_id", "project_id"), ("status", "status"),
                           ("device_type", "device_type")):
            if key in query:
                rows = [b for b in rows if b[field] in query[key]]
        if "tag" in query:
            rows = [b for b in rows if query["tag"][0] in b["tags"]]
        return self._page(query, [self._batch_view(b) for b in rows])

    def _get_batch(self, request: Request, batch_id: str) -> Reply:
        return Reply(200, _ok(self._batch_view(self._batch(batch_id), sequence=True)))

    def _batch_status(self, request: Request, batch_id: str) -> Reply:
        batch = self._batch(batch_id)
        view = self._batch_view(batch)
        return Reply(200, _ok({"id": batch_id, "status": view["status"],
                               "jobs_count_per_status": view["jobs_count_per_status"]}))

    def _cancel_batch(self, request: Request, batch_id: str) -> Reply:
        with self.lock:
            batch = self._batch(batch_id)
            if batch["status"] in ("DONE", "ERROR", "CANCELED", "TIMED_OUT"):
                raise HTTPError(400, f"Batch {batch_id} is already {batch['status']} and cannot be cancelled")
            batch.update(status="CANCELED", open=False, complete=True, updated_at=_now(),
                         end_datetime=_now())
            for job_id in batch["job_ids"]:
                job = self.jobs[job_id]
                if job["status"] in ("PENDING", "RUNNING"):
                    job.update(status="CANCELED", updated_at=_now())
        return Reply(200, _ok(self._batch_view(batch)))

    def _set_tags(self, request: Request, batch_id: str) -> Reply:
        body = _body(request)
        with self.lock:
            batch = self._batch(batch_id)
            batch["tags"] = [str(t) for t in body]
        return Reply(200, _ok(self._batch_view(batch)))

    def _list_jobs(self, request: Request) -> Reply:
        query = request.query
        with self.lock:
            rows = list(self.jobs.values())
        if "batch_id" in query:
            rows = [j for j in rows if j["batch_id"] in query["batch_id"]]
        if "id" in query:
            rows = [j for j in rows if j["id"] in query["id"]]
        rows.sort(key=lambda j: j["order"],
                  reverse=query.get("order_by_direction", ["DESC"])[0].upper() != "ASC")
        return self._page(query, [self._job_view(j) for j in rows])

    def _get_job(self, request: Request, job_id: str) -> Reply:
        return Reply(200, _ok(self._job_view(self._job(job_id), sequence=True)))

    def _job_status(self, request: Request, job_id: str) -> Reply:
        job = self._job(job_id)
        return Reply(200, _ok({"id": job_id, "status": job["status"]}))

    def _results_link(self, request: Request, job_id: str) -> Reply:
        job = self._job(job_id)
        if job["status"] != "DONE":
            return Reply(200, _ok({"results_link": None}))
        with self.lock:
            signature = self._signatures.setdefault(job_id, secrets.token_hex(8))
        return Reply(200, _ok({"results_link": f"{self.url}/results/{job_id}?signature={signature}"}))

    def _results(self, request: Request, job_id: str) -> Reply:
        query = request.query
        job = self.jobs.get(job_id)
        if job is None or query.get("signature", [""])[0] != self._signatures.get(job_id):
            return Reply(403, b"<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"})
        return Reply(200, {"counter": job["counter"], "raw": None, "serialised_results": None})

    def _device_specs(self, request: Request) -> Reply:
        return Reply(200, _ok(dict(self.specs)))

    def _public_device_specs(self, request: Request) -> Reply:
        return Reply(200, _ok([{"device_type": name, "specs": text} for name, text in self.specs.items()]))

    # -- batches and jobs

    def _new_batch(self, body: dict) -> dict:
        from pulser import Sequence

        if body.get("project_id") not in {p["id"] for p in self.projects}:
            raise HTTPError(403, f"Project {body.get('project_id')} not found or not accessible")
        device = body.get("device_type") or "EMU_FREE"
        if device not in DEVICE_TYPES:
            raise HTTPError(400, f"Invalid device_type {device!r}; expected one of "
                              f"{', '.join(sorted(DEVICE_TYPES))}")
        jobs = body.get("jobs") or []
        if not jobs:
            raise HTTPError(400, "A closed batch needs at least one job")
        try:
            sequence = Sequence.from_abstract_repr(cast(str, body.get("sequence_builder")))
        except Exception as exc:
            raise HTTPError(400, f"Invalid sequence_builder: {' '.join(str(exc).split())[:300]}") from None
        batch_id, now = str(uuid.uuid4()), _now()
        records = []
        for index, job in enumerate(jobs):
            runs = job.get("runs")
            if not isinstance(runs, int) or runs < 1:
                raise HTTPError(400, f"jobs[{index}].runs must be a positive integer")
            own = job.get("sequence")
            try:
                if own is not None:
                    Sequence.from_abstract_repr(own)
                elif sequence.is_parametrized():
                    sequence.build(**(job.get("variables") or {}))
            except Exception as exc:
                raise HTTPError(400, f"jobs[{index}]: {' '.join(str(exc).split())[:300]}") from None
            records.append({"id": str(uuid.uuid4()), "batch_id": batch_id, "project_id": body["project_id"],
                            "runs": runs, "variables": job.get("variables"), "sequence": own,
                            "status": "PENDING", "errors": [], "counter": None, "created_at": now,
                            "updated_at": now, "start_timestamp": None, "end_timestamp": None})
        with self.lock:
            base = len(self.jobs)
            for offset, record in enumerate(records):
                record["order"] = base + offset
                record["fail"] = self.job_fails()
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

        with self.lock:
            batch = self.batches[batch_id]
            if batch["status"] != "PENDING":
                return
            batch.update(status="RUNNING", start_datetime=_now(), updated_at=_now())
        emulator = self._emulator(batch["device_type"] in QPU_LIKE)
        tag = batch["tags"][0] if batch["tags"] else batch_id
        for index, job_id in enumerate(batch["job_ids"]):
            with self.lock:
                job = self.jobs[job_id]
                if batch["status"] == "CANCELED" or job["status"] != "PENDING":
                    continue
                job.update(status="RUNNING", start_timestamp=_now(), updated_at=_now())
            if job["fail"]:
                outcome: Any = TaskFailed(INJECTED_ERROR)
            else:
                program = (job["sequence"] or batch["sequence_builder"]).encode()
                task = Task(program_format="pulser", program_content=program, program_item=0,
                            program_digest=hashlib.sha256(program).hexdigest(),
                            params=job["variables"] or {}, shots=job["runs"])
                seed = int(hashlib.sha256(f"{self.faults.seed}:{tag}:{index}".encode()).hexdigest()[:8], 16)
                try:
                    (outcome,) = emulator.run([task], seed & 0x7FFFFFFF)
                except Exception as exc:  # the emulator itself broke
                    outcome = TaskFailed.of(exc)
            with self.lock:
                if isinstance(outcome, TaskFailed):
                    job.update(status="ERROR", errors=[outcome.error])
                else:
                    job.update(status="DONE", counter=outcome)
                job.update(end_timestamp=_now(), updated_at=_now())
        with self.lock:
            if batch["status"] == "CANCELED":
                return
            failed = any(self.jobs[j]["status"] == "ERROR" for j in batch["job_ids"])
            batch.update(status="ERROR" if failed else "DONE", end_datetime=_now(), updated_at=_now())

    def _emulator(self, mimic_qpu: bool):
        from qrun.providers.pulser_local.adapter import Adapter

        with self.lock:
            if mimic_qpu not in self._emulators:
                self._emulators[mimic_qpu] = Adapter("qutip", {"mimic_qpu": mimic_qpu})
            return self._emulators[mimic_qpu]

    # -- views

    def _batch(self, batch_id: str) -> dict:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise HTTPError(404, f"Batch {batch_id} not found")
        return batch

    def _job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"Job {job_id} not found")
        return job

    def _batch_view(self, batch: dict, sequence: bool = False, jobs: bool = False) -> dict:
        with self.lock:
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
        view = {k: v for k, v in job.items() if k not in ("sequence", "counter", "order", "fail")}
        if sequence:
            view["sequence"] = job["sequence"]
        return view

    def _page(self, query: dict, rows: list) -> Reply:
        offset = int(query.get("offset", ["0"])[0])
        limit = min(100, int(query.get("limit", ["100"])[0]))
        page = rows[offset:offset + limit]
        return Reply(200, {**_ok(page), "pagination": {"total": len(rows), "offset": offset,
                                                       "end": offset + len(page)}})


def _ok(data) -> dict:
    return {"code": 200, "data": data, "message": "OK.", "status": "success"}


def _fail(status: int, message: str) -> dict:
    return {"code": status, "data": {"description": message}, "message": message, "status": "fail"}


def _body(request: Request) -> Any:
    """The request's body: gzip JSON (batch creation), a form (login) or JSON."""
    body = request.body
    if not body:
        return {}
    if request.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    if "x-www-form-urlencoded" in (request.headers.get("Content-Type") or ""):
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}
    return Request(request.method, request.path, request.query, request.headers, body).json()
