"""A fake Quandela cloud, for the unmodified Perceval SDK (perceval-quandela 1.3).

It speaks the HTTP API that Perceval's `QuandelaCommunicationLayer` (its `RPCHandler`) calls:

    GET  /api/platforms/<name>/processor   platform details (answers 404: the SDK falls back)
    GET  /api/platform/<name>              platform details: status, type, serialized specs
    GET  /api/jobs/availability            room in the job queue
    POST /api/job                          create a job (a serialized Perceval payload)
    GET  /api/job/status/<id>              waiting | running | completed | error | canceled
    GET  /api/job/result/<id>              {"results": <serialized Perceval results, as JSON text>}
    POST /api/job/cancel/<id>

and one lookup the SDK does not make, which qrun needs to reconcile a submission whose answer
was lost (see qrun/backends/quandela_cloud.py):

    GET  /api/jobs?job_group_name=<tag>    {"jobs": [{"job_id", "job_name", "job_group_name", ...}]}

`FakeQuandela(lookup=False)` answers that route with 405, as Quandela's published API does,
to rehearse what qrun does against the real service.

Jobs run on qrun's own local Perceval adapter (qrun.providers.perceval_local.adapter.Adapter): SLOS for
every platform except names containing "clifford" (CliffordClifford2017) or "naive". Requests
must carry `Authorization: Bearer <token>`; with `token=` set, only that token is accepted.

Faults, from keyword arguments or (read at start) environment variables:
    latency            QRUN_FAKE_LATENCY            seconds added to every answer, after the work
                                                    (a created job waits that long for its answer)
    error_rate         QRUN_FAKE_ERROR_RATE         share of requests answered 429 or 5xx, no work done
    fail_jobs          QRUN_FAKE_FAIL_JOBS          share of jobs that end in error
    stall              QRUN_FAKE_STALL              jobs stay waiting forever
    lose_after_accept  QRUN_FAKE_LOSE_AFTER_ACCEPT  share of created jobs whose answer is lost
                                                    (connection dropped, or a 502)
`accepted` counts the jobs created per job name (qrun's tag, or "<tag>:<i>/<n>" for part i of a
qrun job split across n programs), so a test can prove that nothing was accepted twice.

    python -m qrun.fakes quandela.cloud --port 8080 [--latency 0.2 --error-rate 0.3 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qrun.fakes.server import fault_arguments, serve_until_stopped

PLATFORMS = ("sim:slos", "sim:clifford", "sim:naive", "qpu:belenos", "qpu:ascella")
FAILURE_TEXT = "the platform lost its photon source during the run (injected fault)"


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


class FakeQuandela:
    """The fake service: start() serves it on 127.0.0.1 in a thread and returns its URL."""

    def __init__(self, *, latency: float = 0.0, error_rate: float = 0.0, fail_jobs: float = 0.0,
                 stall: bool = False, lose_after_accept: float = 0.0, seed: int = 0,
                 token: str | None = None, lookup: bool = True, platforms=PLATFORMS,
                 max_jobs_in_queue: int = 10_000):
        self.latency = latency
        self.error_rate = error_rate
        self.fail_jobs = fail_jobs
        self.stall = stall
        self.lose_after_accept = lose_after_accept
        self.token = token
        self.lookup = lookup
        self.platforms = tuple(platforms)
        self.max_jobs_in_queue = max_jobs_in_queue
        self.accepted: Counter = Counter()  # job name -> jobs created under it
        self.jobs: dict[str, FakeJob] = {}
        self.injected: Counter = Counter()  # fault -> times it was injected
        self.lookups = 0  # job-group lookups served
        self.requests = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._runner: ThreadPoolExecutor | None = None
        self._adapters: dict = {}

    # -- life cycle

    def start(self, port: int = 0) -> str:
        self._faults_from_env()
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-quandela-run")
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fake-quandela", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._runner is not None:
            self._runner.shutdown(wait=False, cancel_futures=True)
            self._runner = None

    def _faults_from_env(self) -> None:
        env = os.environ
        if env.get("QRUN_FAKE_LATENCY"):
            self.latency = float(env["QRUN_FAKE_LATENCY"])
        if env.get("QRUN_FAKE_ERROR_RATE"):
            self.error_rate = float(env["QRUN_FAKE_ERROR_RATE"])
        if env.get("QRUN_FAKE_FAIL_JOBS"):
            self.fail_jobs = float(env["QRUN_FAKE_FAIL_JOBS"])
        if env.get("QRUN_FAKE_STALL"):
            self.stall = env["QRUN_FAKE_STALL"].lower() not in ("0", "false", "no")
        if env.get("QRUN_FAKE_LOSE_AFTER_ACCEPT"):
            self.lose_after_accept = float(env["QRUN_FAKE_LOSE_AFTER_ACCEPT"])

    def _chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self._random.random() < share

    # -- requests: (status, body) or None to drop the connection without an answer

    def handle(self, method: str, path: str, headers, body: bytes):
        with self._lock:
            self.requests += 1
        if self._chance(self.error_rate):
            status = self._random.choice((429, 429, 500, 502, 503))
            self.injected[f"http {status}"] += 1
            return status, {"error": "injected fault: service busy"}
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:] or (self.token is not None and auth[7:] != self.token):
            return 401, {"error": "Invalid or expired job token"}
        url = urllib.parse.urlsplit(path)
        parts = [urllib.parse.unquote_plus(p) for p in url.path.split("/") if p]
        query = urllib.parse.parse_qs(url.query)
        if method == "GET" and parts[:2] == ["api", "platforms"] and len(parts) == 4:
            return 404, {"error": "no processor description for this platform"}
        if method == "GET" and parts[:2] == ["api", "platform"] and len(parts) == 3:
            return self._platform(parts[2])
        if method == "GET" and parts == ["api", "jobs", "availability"]:
            with self._lock:
                queued = sum(job.status == "waiting" for job in self.jobs.values())
            return 200, {"max_jobs_in_queue": self.max_jobs_in_queue, "num_jobs_in_queue": queued}
        if method == "GET" and parts == ["api", "jobs"]:
            return self._find(query)
        if method == "POST" and parts == ["api", "job"]:
            return self._create(body)
        if len(parts) == 4 and parts[:2] == ["api", "job"]:
            job = self.jobs.get(parts[3])
            if job is None:
                return 404, {"error": f"invalid job_id: {parts[3]}"}
            if method == "GET" and parts[2] == "status":
                return 200, self._status(job)
            if method == "GET" and parts[2] == "result":
                return self._result(job)
            if method == "POST" and parts[2] == "cancel":
                return self._cancel(job)
        return 405 if parts[:2] == ["api", "jobs"] else 404, {"error": f"no route {method} {url.path}"}

    def _platform(self, name: str):
        if name not in self.platforms:
            return 404, {"error": f"Platform not found: {name}"}
        from perceval.runtime import CommandFactory
        from perceval.runtime.platform_specs import PlatformSpecs, serialize_specs_backward_compatibility

        specs = PlatformSpecs()
        specs.commands = [CommandFactory.probs, CommandFactory.sample_count, CommandFactory.samples]
        specs.parameters = {"seed": "seed of the fake's random draws"}
        specs.constraints = {"max_mode_count": 24, "max_photon_count": 8}
        specs.description = f"qrun's fake of {name}, simulated by {_simulator(name)}"
        return 200, {"name": name, "status": "available",
                     "type": "qpu" if name.startswith("qpu:") else "simulator",
                     "specs": serialize_specs_backward_compatibility(specs)}

    def _find(self, query):
        if not self.lookup:
            return 405, {"error": "Method Not Allowed"}
        group = (query.get("job_group_name") or [None])[0]
        with self._lock:
            self.lookups += 1
            found = sorted((j for j in self.jobs.values() if group is not None and j.group == group),
                           key=lambda j: j.created)
            return 200, {"jobs": [{"job_id": j.id, "job_name": j.name, "job_group_name": j.group,
                                   "platform_name": j.platform, "status": j.status,
                                   "created_date": j.created} for j in found]}

    def _create(self, body: bytes):
        from perceval.serialization import deserialize

        try:
            data = json.loads(body)
            payload = deserialize(data["payload"], strict=False)
            platform = data.get("platform_name")
            name = data["job_name"]
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"Invalid payload, expected a json object ({exc})"}
        if platform not in self.platforms:
            return 404, {"error": f"Platform not found: {platform}"}
        computation = payload.get("computation") if isinstance(payload, dict) else None
        if computation is None or not hasattr(computation, "command"):
            return 400, {"error": "Invalid payload: no computation"}
        if computation.command.name not in ("probs", "sample_count", "samples"):
            return 400, {"error": f"Command '{computation.command.name}' is not available on platform '{platform}'"}
        if int(payload.get("max_shots") or 0) <= 0:
            return 400, {"error": "Invalid max_shots, should be a positive number"}
        job = FakeJob(id=str(uuid.uuid4()), name=name, group=data.get("job_group_name"),
                      platform=platform, payload=payload, fail=self._chance(self.fail_jobs))
        with self._lock:
            self.jobs[job.id] = job
            self.accepted[name] += 1
        if not self.stall:
            self._runner.submit(self._run, job)
        if self._chance(self.lose_after_accept):
            drop = self._chance(0.5)
            self.injected["lost answer (dropped)" if drop else "lost answer (502)"] += 1
            return None if drop else (502, {"error": "Bad Gateway"})
        return 200, {"job_id": job.id}

    def _status(self, job: FakeJob) -> dict:
        answer = {"status": job.status, "creation_datetime": job.created,
                  "progress": 1.0 if job.status == "completed" else 0.0, "progress_message": ""}
        if job.started is not None:
            answer["start_time"] = job.started
        if job.finished is not None:
            answer["duration"] = int(job.finished - (job.started or job.created))
        if job.message:
            answer["status_message"] = job.message
        return answer

    def _result(self, job: FakeJob):
        if job.status != "completed":
            return 400, {"error": f"job {job.id} has no results: it is {job.status}"}
        return 200, {"job_id": job.id, "results": job.results, "results_type": "sample_count"}

    def _cancel(self, job: FakeJob):
        with self._lock:
            if job.status not in ("waiting", "running"):
                return 400, {"error": f"Can not cancel job: it is {job.status}"}
            job.status, job.finished, job.message = "canceled", time.time(), "Canceled by user"
        return 200, {"message": "ok"}

    # -- running jobs on qrun's local Perceval adapter

    def _run(self, job: FakeJob) -> None:
        with self._lock:
            if job.status != "waiting":
                return  # cancelled while queued
            job.status, job.started = "running", time.time()
        try:
            if job.fail:
                raise RuntimeError(FAILURE_TEXT)
            results = self._simulate(job)
        except Exception as exc:  # the job fails, as a real platform reports it
            with self._lock:
                if job.status == "running":
                    job.status, job.message = "error", f"{type(exc).__name__}: {exc}"
                    job.finished = time.time()
            return
        with self._lock:
            if job.status == "running":
                job.status, job.results, job.finished = "completed", results, time.time()

    def _simulate(self, job: FakeJob) -> str:
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
        return json.dumps(serialize({"results_list": results_list}))


def _simulator(platform: str) -> str:
    if "clifford" in platform:
        return "CliffordClifford2017"
    if "naive" in platform:
        return "Naive"
    return "SLOS"


def _handler(fake: FakeQuandela):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the tests read their own output
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                answer = fake.handle(self.command, self.path, self.headers, body)
            except Exception as exc:  # a bug in the fake: answer as a server would
                answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
            if fake.latency:
                time.sleep(fake.latency)  # after the work: a created job waits for its answer
            if answer is None:  # the answer is lost: close the connection without one
                self.close_connection = True
                return
            status, payload = answer
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qrun.fakes quandela.cloud",
                                     description="a local fake Quandela cloud for rehearsals")
    fault_arguments(parser)
    parser.add_argument("--token", default=None, help="the only token accepted (default: any)")
    parser.add_argument("--no-lookup", action="store_true",
                        help="answer the job-group lookup with 405, as Quandela's published API")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fake = FakeQuandela(latency=args.latency, error_rate=args.error_rate, fail_jobs=args.fail_jobs,
                        stall=args.stall, lose_after_accept=args.lose_after_accept, seed=args.seed,
                        token=args.token, lookup=not args.no_lookup)
    url = fake.start(args.port)
    serve_until_stopped(fake, f"fake Quandela cloud at {url} (platforms: {', '.join(fake.platforms)})")


if __name__ == "__main__":
    main()
