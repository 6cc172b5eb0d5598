"""A fake Amazon Braket (and the S3 it writes results to), for the unmodified Braket SDK.

Speaks the REST-JSON operations the SDK's task path uses: GetDevice, CreateQuantumTask,
GetQuantumTask, CancelQuantumTask, SearchQuantumTasks, ListTagsForResource, and S3
GetObject (path style) for results. Tasks run on Braket's local simulators (state vector,
density matrix for DM1) and their results are written in Braket's own result schema, as the
real service does. Requests are not authenticated (the SDK signs them with whatever keys it
has).

It refuses what the real service refuses, the way it does (devices.py): an unknown
device ARN, a retired device (TN1), shots outside the device's range, and a program using an
operation, modifier, pragma or statement the device does not declare (a 400
ValidationException with a message naming the line). GetDevice serves SV1's, DM1's and
TN1's published capabilities, so rehearsals translate for the same device. With
``program_sets=True`` (``--program-sets``) they also declare program sets, as a QPU does,
and run them executable by executable, answering in the service's result format
(``ProgramSetTaskResult`` inline, failures per executable). Task ids are
random (uuid4), as real ones: a restarted fake never hands out an id it gave before.
``credential`` is the one access key id accepted (read from the SigV4 Authorization header).
Faults, flags and accounting: qrun.fakes.server, the same for every fake.

    python -m qrun.fakes braket.aws --port 8123 [--program-sets --error-rate 0.3 --latency 0.05 ...]
    # backends: [{name: sv1, provider: braket.aws, device: arn:aws:braket:::device/quantum-simulator/amazon/sv1,
    #             options: {endpoint: "http://127.0.0.1:8123"}}]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
import uuid
import warnings
from dataclasses import dataclass, field

from qrun.fakes.server import FakeServer, HTTPError, Reply, Request, Route
from qrun.providers.braket_aws.devices import DEVICES, PROGRAM_SET, RETIRED

ACCOUNT = "000000000000"
# Braket's error types, for answers that name none (injected faults, bugs of the fake)
_ERROR_TYPES = {429: "ThrottlingException", 500: "InternalServiceException", 404: "NotFound"}

# Braket's simulators warn on programs they run as asked (noise-free ones on the density
# matrix simulator, advanced OpenQASM features): not the fake's business.
logging.getLogger("braket.default_simulator.openqasm.interpreter").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="You are running a noise-free circuit")


@dataclass
class _Task:
    arn: str
    device: str
    shots: int
    bucket: str
    directory: str
    tags: dict
    action: str
    fail: bool  # doomed by fail_jobs
    programs: int = 0  # how many a program set holds (0: the action is a single program)
    executables: int = 1
    failing: frozenset = frozenset()  # executables (by position) doomed by fail_executables
    successful_shots: int | None = None
    created: float = field(default_factory=time.time)
    status: str = "QUEUED"
    failure: str | None = None
    ended: float | None = None


class FakeBraket(FakeServer):
    provider = "braket.aws"
    title = "fake Amazon Braket service"
    workers = 4  # Braket runs many tasks at once; simulate=False benchmarks send hundreds
    routes = (
        Route("GET", "/device/{arn}", "_device"),
        Route("POST", "/quantum-task", "_create", creates=True),
        Route("GET", "/quantum-task/{arn}", "_get"),
        Route("PUT", "/quantum-task/{arn}/cancel", "_cancel"),
        Route("POST", "/quantum-tasks", "_search"),
        Route("GET", "/tags/{arn}", "_tags"),
        Route("GET", "/{bucket}/{key:path}", "_object"),  # S3 GetObject, path style
    )

    def __init__(self, simulate: bool = True, retired: tuple = RETIRED, program_sets: bool = False,
                 fail_executables: float = 0.0, **common):
        super().__init__(**common)
        # program_sets=True makes every device declare and run program sets with the local
        # simulator's limits (100 executables, 200,000 shots): a stand-in for a QPU, which
        # takes them, where SV1, DM1 and TN1 are not documented to.
        self.devices = {arn: device.with_program_sets() if program_sets else device
                        for arn, device in DEVICES.items()}
        # The share of a program set's executables that fail on their own (the device's
        # fault, retryable), the task completing with the rest: Braket reports failures per
        # executable.
        self.fail_executables = fail_executables
        # simulate=False answers every task with all-zero outcomes at once: for benchmarks
        # that measure the client, not the simulator.
        self.simulate = simulate
        self.retired = set(retired)  # device ARNs GetDevice calls RETIRED; their tasks refused
        self.tasks: dict[str, _Task] = {}
        self.by_client_token: dict[str, str] = {}
        self.objects: dict[tuple, bytes] = {}  # (bucket, key) -> bytes
        self.refused: list[str] = []  # messages of the CreateQuantumTask calls refused

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--program-sets", action="store_true",
                            help="devices declare and run program sets (100 executables, "
                                 "200,000 shots), as a QPU does")
        parser.add_argument("--fail-executables", type=float, default=0.0, metavar="SHARE",
                            help="share of a program set's executables that fail on their own")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict:
        return {"program_sets": args.program_sets, "fail_executables": args.fail_executables}

    # -- what every request goes through

    def authorize(self, request: Request, route: Route) -> None:
        # SigV4's Authorization header names the access key id; ``credential`` None: any.
        if self.credential is not None and \
                f"Credential={self.credential}/" not in request.headers.get("Authorization", ""):
            raise HTTPError(403, "The security token included in the request is invalid.",
                            "UnrecognizedClientException")

    def error_reply(self, status: int, message: str, code: str | int | None = None) -> Reply:
        code = code or _ERROR_TYPES.get(status)
        return Reply(status, {"message": message}, {"x-amzn-ErrorType": str(code)} if code else {})

    # -- operations

    def _device(self, request: Request, arn: str) -> Reply:
        device = self.devices.get(arn)
        if device is None:
            raise HTTPError(404, f"Braket device {arn} not found", "ResourceNotFoundException")
        return Reply(200, device.describe("RETIRED" if arn in self.retired else "ONLINE"))

    def _refusal(self, request: dict) -> Reply | None:
        """The error the real service answers this CreateQuantumTask with, or None."""
        arn = request.get("deviceArn", "")
        device = self.devices.get(arn)
        if device is None:
            return self.error_reply(400, f"Device {arn} does not exist or is not available to "
                                         "this account", "ValidationException")
        if arn in self.retired:
            return self.error_reply(410, f"Device {arn} is retired", "DeviceRetiredException")
        body = device.refusal(request.get("action", ""), int(request.get("shots", -1)))
        # The members of the modeled error beside the message (a program set's failures)
        # are what the SDK reads (botocore copies them to the top of the parsed response).
        return Reply(400, body, {"x-amzn-ErrorType": "ValidationException"}) if body else None

    def _create(self, request: Request) -> Reply:
        asked = request.json()
        token = asked.get("clientToken")
        refusal = self._refusal(asked)
        if refusal:
            with self.lock:
                self.refused.append(refusal.body["message"])
            return refusal
        with self.lock:
            if token in self.by_client_token:  # AWS idempotency: same token, same task
                return Reply(201, {"quantumTaskArn": self.by_client_token[token]})
            task_id = str(uuid.uuid4())  # unique across restarts, as Braket's are
            arn = f"arn:aws:braket:us-east-1:{ACCOUNT}:quantum-task/{task_id}"
            programs, executables = _program_set_shape(asked["action"])
            task = _Task(arn=arn, device=asked["deviceArn"], shots=asked["shots"],
                         bucket=asked["outputS3Bucket"],
                         directory=f"{asked['outputS3KeyPrefix']}/{task_id}",
                         tags=asked.get("tags", {}), action=asked["action"],
                         fail=self.job_fails(), programs=programs, executables=executables,
                         failing=frozenset(i for i in range(executables) if executables > 1
                                           and self.chance(self.fail_executables)))
            self.tasks[arn] = task
            if token:
                self.by_client_token[token] = arn
            self.accepted[task.tags.get("qrun-tag", arn)] += 1
        self.run_later(lambda: self._run(task))
        return Reply(201, {"quantumTaskArn": arn})

    def _run(self, task: _Task) -> None:
        with self.lock:
            if task.status != "QUEUED":  # cancelled meanwhile
                return
            task.status = "RUNNING"
        if task.programs:
            self._run_program_set(task)
            return
        if task.fail:
            failure: str | None = "injected: the device failed this task"
        else:
            try:
                result = self._simulated(task) if self.simulate else self._zeros(task)
                self.objects[(task.bucket, f"{task.directory}/results.json")] = result.encode()
                failure = None
            except Exception as exc:  # the simulator refused the program: as Braket reports it
                failure = f"{type(exc).__name__}: {exc}"
        self._end(task, failure, task.shots if failure is None else 0)

    def _end(self, task: _Task, failure: str | None, successful_shots: int) -> None:
        with self.lock:
            if task.status == "RUNNING":
                task.status, task.failure = ("FAILED", failure) if failure else ("COMPLETED", None)
                task.ended = time.time()
                task.successful_shots = successful_shots

    def _run_program_set(self, task: _Task) -> None:
        """A program set, one executable at a time: each one's failure is its own (Braket's
        result holds a ProgramSetExecutableFailure in its place), the task completes when
        any succeeds. A FAILED program set still has its results.json, which the SDK reads."""
        from braket.ir.openqasm import ProgramSet

        program_set = ProgramSet.parse_raw(task.action)
        shots_each = task.shots // task.executables
        programs, metadata, position = [], [], 0
        for program in program_set.programs:
            results, outcomes = [], []
            for index, executable in enumerate(_unzipped(program)):
                result, outcome = self._executable(task, executable, index, shots_each,
                                                   doomed=task.fail or position in task.failing)
                results.append(result)
                outcomes.append(outcome)
                position += 1
            programs.append({"braketSchemaHeader": {"name": "braket.task_result.program_result",
                                                    "version": "1"},
                             "executableResults": results, "source": json.loads(program.json()),
                             "additionalMetadata": {}})
            metadata.append({"executables": outcomes})
        failed = sum(1 for m in metadata for outcome in m["executables"] if outcome)
        successful = (task.executables - failed) * shots_each
        document = {
            "braketSchemaHeader": {"name": "braket.task_result.program_set_task_result", "version": "1"},
            "programResults": programs, "s3Location": None,
            "taskMetadata": {
                "braketSchemaHeader": {"name": "braket.task_result.program_set_task_metadata",
                                       "version": "1"},
                "id": task.arn, "deviceId": task.device, "requestedShots": task.shots,
                "successfulShots": successful, "programMetadata": metadata,
                "createdAt": _iso(task.created), "endedAt": _iso(time.time()),
                "status": "COMPLETED" if successful else "FAILED",
                "totalFailedExecutables": failed}}
        self.objects[(task.bucket, f"{task.directory}/results.json")] = json.dumps(document).encode()
        reason = "injected: the device failed this task" if task.fail else \
            "every executable of the program set failed"
        self._end(task, None if successful else reason, successful)

    def _executable(self, task: _Task, executable, index: int, shots: int, doomed: bool):
        """One executable's result entry and its metadata entry ({} when it succeeded)."""
        if doomed:
            failure = {"failureReason": "injected: the device failed this executable",
                       "retryable": True, "category": "DEVICE"}
        else:
            try:
                measured = self._measured(task, executable, shots)
                return ({"braketSchemaHeader": {"name": "braket.task_result.program_set_executable_result",
                                                "version": "1"},
                         "inputsIndex": index, **measured}, {})
            except Exception as exc:  # the simulator refused this one: it alone fails
                failure = {"failureReason": f"{type(exc).__name__}: {exc}"[:1000],
                           "retryable": False, "category": "COMPILATION"}
        return ({"braketSchemaHeader": {"name": "braket.task_result.program_set_executable_failure",
                                        "version": "1"},
                 "inputsIndex": index, "failureMetadata": failure}, failure)

    def _measured(self, task: _Task, executable, shots: int) -> dict:
        if not self.simulate:
            return {"measurements": [[0, 0]] * shots, "measuredQubits": [0, 1]}
        result = _simulator_for(task)().run(executable, shots=shots)
        return {"measurements": result.measurements, "measuredQubits": result.measuredQubits}

    @staticmethod
    def _simulated(task: _Task) -> str:
        from braket.ir.openqasm import Program

        result = _simulator_for(task)().run(Program.parse_raw(task.action), shots=task.shots)
        result.taskMetadata.id = task.arn
        result.taskMetadata.deviceId = task.device
        return result.json()

    @staticmethod
    def _zeros(task: _Task) -> str:
        """A result in Braket's schema in which every shot measured 0 on two qubits."""
        return json.dumps({
            "braketSchemaHeader": {"name": "braket.task_result.gate_model_task_result", "version": "1"},
            "measurements": [[0, 0]] * task.shots, "measuredQubits": [0, 1],
            "taskMetadata": {"braketSchemaHeader": {"name": "braket.task_result.task_metadata",
                                                    "version": "1"},
                             "id": task.arn, "shots": task.shots, "deviceId": task.device},
            "additionalMetadata": {"action": json.loads(task.action)},
        })

    def _describe(self, task: _Task) -> dict:
        described = {"quantumTaskArn": task.arn, "status": task.status, "deviceArn": task.device,
                     "deviceParameters": "{}", "shots": task.shots, "outputS3Bucket": task.bucket,
                     "outputS3Directory": task.directory, "createdAt": _iso(task.created),
                     "tags": task.tags, "actionMetadata": _action_metadata(task)}
        if task.successful_shots is not None and task.status == "COMPLETED":
            described["numSuccessfulShots"] = task.successful_shots
        if task.failure:
            described["failureReason"] = task.failure
        if task.ended:
            described["endedAt"] = _iso(task.ended)
        return described

    def _task(self, arn: str) -> _Task:
        task = self.tasks.get(arn)
        if task is None:
            raise HTTPError(404, f"{arn} not found", "ResourceNotFoundException")
        return task

    def _get(self, request: Request, arn: str) -> Reply:
        return Reply(200, self._describe(self._task(arn)))

    def _tags(self, request: Request, arn: str) -> Reply:
        return Reply(200, {"tags": self._task(arn).tags})

    def _cancel(self, request: Request, arn: str) -> Reply:
        task = self._task(arn)
        with self.lock:
            if task.status in ("QUEUED", "RUNNING", "CREATED"):
                task.status, task.ended = "CANCELLED", time.time()
        return Reply(200, {"quantumTaskArn": arn, "cancellationStatus": "CANCELLING"})

    def _search(self, request: Request) -> Reply:
        """SearchQuantumTasks as the service model defines it: up to 10 filters on
        quantumTaskArn, deviceArn, jobArn, status or createdAt, each with an operator (LT,
        LTE, EQUAL, GT, GTE, BETWEEN) and 1 to 10 values; 1 to 100 results a page."""
        asked = request.json()
        filters = asked.get("filters", [])
        size = int(asked.get("maxResults") or 100)
        if len(filters) > 10 or not 1 <= size <= 100:
            raise HTTPError(400, "at most 10 filters and 1 to 100 results a page", "ValidationException")
        tasks = list(self.tasks.values())
        for condition in filters:
            keep = _search_condition(condition)
            tasks = [t for t in tasks if keep(t)]
        start = int(asked.get("nextToken") or 0)
        page = tasks[start:start + size]
        answer: dict = {"quantumTasks": [{k: v for k, v in self._describe(t).items()
                                          if k in _SUMMARY_FIELDS}
                                         for t in page]}
        if start + size < len(tasks):
            answer["nextToken"] = str(start + size)
        return Reply(200, answer)

    def _object(self, request: Request, bucket: str, key: str) -> Reply:
        data = self.objects.get((bucket, key))
        if data is None:
            return Reply(404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"})
        return Reply(200, data, {"Content-Type": "application/json"})


# QuantumTaskSummary's members in botocore's model of the service
_SUMMARY_FIELDS = ("quantumTaskArn", "status", "deviceArn", "shots", "outputS3Bucket",
                   "outputS3Directory", "createdAt", "endedAt", "tags")


def _simulator_for(task: _Task):
    """The local simulator class that runs a task's device (DM1's: the density-matrix one)."""
    from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator

    return DensityMatrixSimulator if DEVICES[task.device].simulator == "dm" else StateVectorSimulator


def _is_program_set(action: str) -> bool:
    return f'"{PROGRAM_SET}"' in action[:200]  # the header comes first, as the SDK writes it


def _program_set_shape(action: str) -> tuple[int, int]:
    """(programs, executables) of a program set; (0, 1) for a single program. The action
    was validated: it parses."""
    if not _is_program_set(action):
        return 0, 1
    from braket.ir.openqasm import ProgramSet

    program_set = ProgramSet.parse_raw(action)
    return len(program_set.programs), program_set.num_executables


def _unzipped(program) -> list:
    """A program set's program as one Program per executable, its inputs unzipped."""
    from braket.ir.openqasm import Program

    if not program.inputs:
        return [Program(source=program.source)]
    names = list(program.inputs)
    return [Program(source=program.source, inputs=dict(zip(names, values, strict=True)))
            for values in zip(*program.inputs.values(), strict=True)]


def _action_metadata(task: _Task) -> dict:
    """GetQuantumTask's actionMetadata: the SDK reads its actionType to know that a FAILED
    program set still has results."""
    if not task.programs:
        return {"actionType": "braket.ir.openqasm.program"}
    return {"actionType": PROGRAM_SET, "programCount": task.programs,
            "executableCount": task.executables}


_SEARCH_FIELDS = {"quantumTaskArn": lambda t: t.arn, "deviceArn": lambda t: t.device,
                  "jobArn": lambda t: None, "status": lambda t: t.status,
                  "createdAt": lambda t: t.created}


def _search_condition(condition: dict):
    """One SearchQuantumTasks filter as a test on a task; a malformed one is refused."""
    name, operator, values = condition.get("name"), condition.get("operator"), condition.get("values")
    if name not in _SEARCH_FIELDS or operator not in ("LT", "LTE", "EQUAL", "GT", "GTE", "BETWEEN") \
            or not isinstance(values, list) or not 1 <= len(values) <= 10:
        raise HTTPError(400, f"invalid search filter {condition}", "ValidationException")
    if name == "createdAt":
        values = [_parse_iso(v) for v in values]
    if operator == "BETWEEN" and len(values) != 2:
        raise HTTPError(400, "BETWEEN takes two values", "ValidationException")
    field_of = _SEARCH_FIELDS[name]
    tests = {"EQUAL": lambda v: v in values, "LT": lambda v: v < values[0],
             "LTE": lambda v: v <= values[0], "GT": lambda v: v > values[0],
             "GTE": lambda v: v >= values[0], "BETWEEN": lambda v: values[0] <= v <= values[1]}
    test = tests[operator]
    return lambda task: field_of(task) is not None and test(field_of(task))


def _parse_iso(text) -> float:
    try:
        moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, f"createdAt: {text!r} is not a timestamp", "ValidationException") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"
