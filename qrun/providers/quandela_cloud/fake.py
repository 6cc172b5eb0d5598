"""A fake Quandela cloud, for the unmodified Perceval SDK (perceval-quandela 1.3).

It speaks the HTTP API that Perceval's `QuandelaCommunicationLayer` (its `RPCHandler`) calls:

    GET  /api/platforms/<name>/processor   platform details (answers 404: the SDK falls back)
    GET  /api/platform/<name>              platform details: status, type, serialized specs
                                           (with `pcvl_version` and `software_versions`), perfs
    GET  /api/jobs/availability            room in the account's job queue
    POST /api/job                          create a job (a serialized Perceval payload); past
                                           the queue's room, 400 "Cannot create more than N jobs"
    GET  /api/job/status/<id>              waiting | running | completed | error | canceled,
                                           with `duration` and `shots` once it has them
    GET  /api/job/result/<id>              {"results": <serialized Perceval results, as JSON text>,
                                            "duration", "shots", ...}
    POST /api/job/cancel/<id>

and one lookup the SDK does not make, which qrun needs to reconcile a submission whose answer
was lost (see qrun/backends/quandela_cloud.py):

    GET  /api/jobs?job_group_name=<tag>    {"jobs": [{"job_id", "job_name", "job_group_name", ...}]}

`FakeQuandela(lookup=False)` answers that route with 405, as Quandela's published API does,
to rehearse what qrun does against the real service.

Jobs run on qrun's own local Perceval adapter (qrun.providers.perceval_local.adapter.Adapter): SLOS for
every platform except names containing "clifford" (CliffordClifford2017) or "naive". Requests
must carry `Authorization: Bearer <token>`; with `token=` set, only that token is accepted.

The account's job queue holds `max_jobs_in_queue` unfinished (waiting or running) jobs
(`--max-jobs-in-queue N`): the availability route says so with the real answer's fields
(`max_jobs_in_queue`, `num_jobs_in_queue`; the concurrency and Quantum Toolbox pairs are
null: the fake does not model them, and the API lets them be null), and a creation past it is
refused as the cloud API (v2.8) documents: HTTP 400 {"error": "Cannot create more than N
jobs"}, nothing created. The API does not say which job states count; the fake counts running
jobs too (the stricter reading). `injected["no room"]` counts the refusals and
`most_unfinished` the most unfinished jobs the fake ever held at once.

What a job used is in the real answers' fields (Quandela's cloud API v2.8, JobStatusResponse
and JobResult): `duration` (integer seconds, from its start to its end) and `shots` (the fake's:
the shots its iterations used, the sum of each result entry's `nb_shots_used`, the name
Perceval reads, utils/constants.py). Platform details carry `perfs` (Perceval reads
"Transmittance (%)" from them; {} for simulators, as Perceval's own test platforms) and
specs with `pcvl_version` and `software_versions` (platform_specs.py); the fake's are
`FakeQuandela.platform_details(name)`, the same answer at every request.

Faults, flags, environment variables and accounting are those of every fake
(qrun.fakes.server); `credential` is the one bearer token accepted (any if None).
`accepted` counts the jobs created per job name (qrun's tag, or "<tag>:<i>/<n>" for part i of a
qrun job split across n programs), so a test can prove that nothing was accepted twice.

    python -m qrun.fakes quandela.cloud --port 8080 [--latency 0.2 --error-rate 0.3 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field

from qrun.fakes.server import FakeServer, HTTPError, Reply, Request, Route

PLATFORMS = ("sim:slos", "sim:clifford", "sim:naive", "qpu:belenos", "qpu:ascella")
FAILURE_TEXT = "the platform lost its photon source during the run (injected fault)"
UNFINISHED = ("waiting", "running")  # the job states that take room in the account's queue


@dataclass
class FakeJob:
    id: str
    name: str
    group: str | None
    platform: str
    payload: dict
    fail: bool
    created: float = field(default_factory=time.time)
    status: str = "waiting"
    started: float | None = None
    finished: float | None = None
    message: str | None = None
    results: str | None = None  # JSON text, as the cloud stores it
    shots: int | None = None  # the shots its iterations used (nb_shots_used), once it has results

    @property
    def duration(self) -> int | None:
        """Whole seconds from its start to its end, as the cloud reports it; None until it ends."""
        if self.finished is None:
            return None
        return int(self.finished - (self.started or self.created))


class FakeQuandela(FakeServer):
    """The fake service: start() serves it on 127.0.0.1 in a thread and returns its URL."""

    provider = "quandela.cloud"
    title = "fake Quandela cloud"
    routes = (
        Route("GET", "/api/platforms/{name}/processor", "_processor"),
        Route("GET", "/api/platform/{name}", "_platform"),
        Route("GET", "/api/jobs/availability", "_availability"),
        Route("GET", "/api/jobs", "_find"),  # qrun's lookup by job group (not in the SDK)
        Route("POST", "/api/job", "_create", creates=True),
        Route("GET", "/api/job/status/{id}", "_status"),
        Route("GET", "/api/job/result/{id}", "_result"),
        Route("POST", "/api/job/cancel/{id}", "_cancel"),
    )

    def __init__(self, *, lookup: bool = True, platforms=PLATFORMS, max_jobs_in_queue: int = 10_000,
                 **common):
        super().__init__(**common)
        self.lookup = lookup
        self.platforms = tuple(platforms)
        self.max_jobs_in_queue = max_jobs_in_queue  # the account's room for unfinished jobs
        self.most_unfinished = 0  # the most unfinished jobs held at once, for tests
        self.jobs: dict[str, FakeJob] = {}
        self._adapters: dict = {}

    def banner(self) -> str:
        return f"{self.title} at {self.url} (platforms: {', '.join(self.platforms)})"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-lookup", action="store_true",
                            help="answer the job-group lookup with 405, as Quandela's published API")
        parser.add_argument("--max-jobs-in-queue", type=int, default=10_000, metavar="N",
                            help="unfinished jobs the account may hold; a creation past it is "
                                 "refused (400 \"Cannot create more than N jobs\")")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict:
        return {"lookup": not args.no_lookup, "max_jobs_in_queue": args.max_jobs_in_queue}

    # -- what every request goes through

    def error_reply(self, status: int, message: str, code: str | int | None = None) -> Reply:
        return Reply(status, {"error": message})

    def authorize(self, request: Request, route: Route) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if not token or (self.credential is not None and token != self.credential):
            raise HTTPError(401, "Invalid or expired job token")

    def unrouted(self, request: Request) -> Reply:
        reply = super().unrouted(request)
        return reply._replace(status=405) if request.path.startswith("/api/jobs") else reply

    # -- requests

    def _processor(self, request: Request, name: str) -> Reply:
        return Reply(404, {"error": "no processor description for this platform"})

    def _unfinished(self) -> int:
        with self.lock:
            return sum(job.status in UNFINISHED for job in self.jobs.values())

    def _availability(self, request: Request) -> Reply:
        # The real answer's six fields (JobAvailabilityResponse); Perceval reads the queue pair.
        return Reply(200, {"max_jobs_in_queue": self.max_jobs_in_queue,
                           "num_jobs_in_queue": self._unfinished(),
                           "max_concurrent_jobs": None, "num_concurrent_jobs": None,
                           "max_running_qt_jobs": None, "num_running_qt_jobs": None})

    def _job(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"invalid job_id: {job_id}")
        return job

    def _platform(self, request: Request, name: str) -> Reply:
        if name not in self.platforms:
            raise HTTPError(404, f"Platform not found: {name}")
        return Reply(200, self.platform_details(name))

    @staticmethod
    def platform_details(name: str) -> dict:
        """The platform's details as served: status, type, serialized specs, perfs."""
        from importlib import metadata

        from perceval.runtime import CommandFactory
        from perceval.runtime.platform_specs import PlatformSpecs, serialize_specs_backward_compatibility

        specs = PlatformSpecs()
        specs.commands = [CommandFactory.probs, CommandFactory.sample_count, CommandFactory.samples]
        specs.parameters = {"seed": "seed of the fake's random draws"}
        specs.constraints = {"max_mode_count": 24, "max_photon_count": 8}
        specs.description = f"qrun's fake of {name}, simulated by {_simulator(name)}"
        versions = {}
        for package in ("perceval-quandela", "exqalibur"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                pass
        specs.pcvl_version = versions.get("perceval-quandela", "1.3.1")
        specs.software_versions = versions
        qpu = name.startswith("qpu:")
        return {"name": name, "status": "available", "type": "qpu" if qpu else "simulator",
                "specs": serialize_specs_backward_compatibility(specs),
                "perfs": {"Transmittance (%)": 5.2} if qpu else {}}

    def _find(self, request: Request) -> Reply:
        if not self.lookup:
            raise HTTPError(405, "Method Not Allowed")
        groups = request.query.get("job_group_name") or []
        group = groups[0] if groups else None
        with self.lock:
            found = sorted((j for j in self.jobs.values() if group is not None and j.group == group),
                           key=lambda j: j.created)
            return Reply(200, {"jobs": [{"job_id": j.id, "job_name": j.name, "job_group_name": j.group,
                                         "platform_name": j.platform, "status": j.status,
                                         "created_date": j.created} for j in found]})

    def _create(self, request: Request) -> Reply:
        from perceval.serialization import deserialize

        try:
            data = json.loads(request.body)
            payload = deserialize(data["payload"], strict=False)
            platform = data.get("platform_name")
            name = data["job_name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPError(400, f"Invalid payload, expected a json object ({exc})") from None
        if platform not in self.platforms:
            raise HTTPError(404, f"Platform not found: {platform}")
        computation = payload.get("computation") if isinstance(payload, dict) else None
        if computation is None or not hasattr(computation, "command"):
            raise HTTPError(400, "Invalid payload: no computation")
        if computation.command.name not in ("probs", "sample_count", "samples"):
            raise HTTPError(400, f"Command '{computation.command.name}' is not available on platform "
                                 f"'{platform}'")
        if int(payload.get("max_shots") or 0) <= 0:
            raise HTTPError(400, "Invalid max_shots, should be a positive number")
        with self.lock:  # the check and the creation at once: two creates cannot share a slot
            self._refuse_past_the_queue()
            job = FakeJob(id=str(uuid.uuid4()), name=name, group=data.get("job_group_name"),
                          platform=platform, payload=payload, fail=self.job_fails())
            self.jobs[job.id] = job
            self.accepted[name] += 1
            self.most_unfinished = max(self.most_unfinished, self._unfinished())
        self.run_later(lambda: self._run(job))
        return Reply(200, {"job_id": job.id})

    def _refuse_past_the_queue(self) -> None:
        """The account's queue is full (held lock): the create makes nothing."""
        if self._unfinished() >= self.max_jobs_in_queue:
            self.injected["no room"] += 1
            raise HTTPError(400, f"Cannot create more than {self.max_jobs_in_queue} jobs")

    def _status(self, request: Request, job_id: str) -> Reply:
        job = self._job(job_id)
        answer: dict = {"status": job.status, "creation_datetime": job.created,
                  "progress": 1.0 if job.status == "completed" else 0.0, "progress_message": ""}
        if job.started is not None:
            answer["start_time"] = job.started
        if job.duration is not None:
            answer["duration"] = job.duration
        if job.shots is not None:
            answer["shots"] = job.shots
        if job.message:
            answer["status_message"] = job.message
        return Reply(200, answer)

    def _result(self, request: Request, job_id: str) -> Reply:
        job = self._job(job_id)
        if job.status != "completed":
            raise HTTPError(400, f"job {job.id} has no results: it is {job.status}")
        return Reply(200, {"job_id": job.id, "results": job.results, "results_type": "sample_count",
                           "duration": job.duration, "shots": job.shots, "intermediate_results": []})

    def _cancel(self, request: Request, job_id: str) -> Reply:
        job = self._job(job_id)
        with self.lock:
            if job.status not in ("waiting", "running"):
                raise HTTPError(400, f"Can not cancel job: it is {job.status}")
            job.status, job.finished, job.message = "canceled", time.time(), "Canceled by user"
        return Reply(200, {"message": "ok"})

    # -- running jobs on qrun's local Perceval adapter

    def _run(self, job: FakeJob) -> None:
        with self.lock:
            if job.status != "waiting":
                return  # cancelled while queued
            job.status, job.started = "running", time.time()
        try:
            if job.fail:
                raise RuntimeError(FAILURE_TEXT)
            results, shots = self._simulate(job)
        except Exception as exc:  # the job fails, as a real platform reports it
            with self.lock:
                if job.status == "running":
                    job.status, job.message = "error", f"{type(exc).__name__}: {exc}"
                    job.finished = time.time()
            return
        with self.lock:
            if job.status == "running":
                job.status, job.results, job.finished = "completed", results, time.time()
                job.shots = shots

    def _simulate(self, job: FakeJob) -> tuple:
        """(the serialized results, the shots they used)."""
        import perceval as pcvl
        from perceval.serialization import serialize

        from qrun.providers.base import Task, TaskFailed
        from qrun.providers.perceval_local.adapter import Adapter

        computation = job.payload["computation"]
        parameters = job.payload.get("parameters") or {}
        iterations = list(getattr(computation, "iterations", None) or [{}])
        base = getattr(computation, "base_computation", computation)
        experiment = base.experiment
        state = experiment.input_state  # over every mode; qrun's sources give it heralds aside
        state = pcvl.BasicState([state[m] for m in range(state.m) if m not in experiment.in_heralds])
        content = json.dumps({"serialized": serialize(experiment), "input": str(state)}).encode()
        digest = hashlib.sha256(content).hexdigest()
        tasks = []
        for iteration in iterations:
            unknown = set(iteration) - {"circuit_params", "max_samples", "max_shots"}
            if unknown:
                raise NotImplementedError(f"the fake does not iterate over {sorted(unknown)}")
            samples = iteration.get("max_samples", base.parameters.get("max_samples"))
            shots = iteration.get("max_shots", base.parameters.get("max_shots", samples))
            tasks.append(Task(program_format="perceval", program_content=content, program_item=0,
                              program_digest=digest, params=dict(iteration.get("circuit_params") or {}),
                              shots=int(min(samples, shots))))
        simulator = _simulator(job.platform)
        adapter = self._adapters.get(simulator)
        if adapter is None:
            adapter = self._adapters[simulator] = Adapter(device=simulator, options={})
        seed = parameters.get("seed")
        outcomes = adapter.run(tasks, None if seed is None else int(seed))
        failed = [o for o in outcomes if isinstance(o, TaskFailed)]
        if failed:
            raise RuntimeError(failed[0].error)
        results_list = [{"results": pcvl.BSCount({pcvl.BasicState(k): v for k, v in counts.items()}),
                         "iteration": iteration, "nb_shots_used": task.shots}
                        for counts, iteration, task in zip(outcomes, iterations, tasks)]
        return json.dumps(serialize({"results_list": results_list})), sum(task.shots for task in tasks)


def _simulator(platform: str) -> str:
    if "clifford" in platform:
        return "CliffordClifford2017"
    if "naive" in platform:
        return "Naive"
    return "SLOS"
