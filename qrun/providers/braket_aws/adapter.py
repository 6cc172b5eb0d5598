"""braket.aws: circuits on Amazon Braket devices, through the Braket SDK on boto3.

On a device that declares program sets (GetDevice's ``braket.ir.openqasm.program_set``
action: Braket's gate-based QPUs), a qrun job is one **program set** task of up to the
device's ``maximumExecutables`` experiments and ``maximumTotalShots`` shots (``job_limits``
reads them, the planner cuts jobs by them): one task fee instead of one per circuit. Each
experiment is one executable; the experiments of one sweep share one program with list
inputs. Braket divides a set's shots evenly among its executables, and the planner puts
only experiments of one shot count in one job. Elsewhere (SV1, DM1, TN1) a task holds one
circuit, and a job one experiment (or one shot slice). Each task carries
qrun's idempotency tag as the task tag `qrun-tag`; `find` looks it up with
SearchQuantumTasks, whose summaries list each task's tags. Results are read from S3, where
Braket writes them, by the SDK (`AwsQuantumTask.result`).

Programs are translated, as for braket.local (braket_program.py), into the operations the
device declares: its properties are read once per adapter with GetDevice
(``AwsSession.get_device``). Mid-circuit measurement, reset and conditions are refused:
Braket's cloud simulators do not run them. Tasks over the device's qubit or shot range are
refused before they are sent.

Credentials are boto3's own: a profile name (`credentials: {profile: NAME}`) or the standard
environment variables; qrun never reads or stores the keys. `options.endpoint` sends every
AWS call (Braket and S3) to one address: a local fake service in rehearsals and tests.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from collections import Counter

import boto3
import botocore.exceptions
from botocore.config import Config
from braket.aws import AwsQuantumTask, AwsSession
from braket.ir.openqasm import Program as OpenQASMProgram
from braket.ir.openqasm import ProgramSet
from braket.schema_common import BraketSchemaBase
from braket.tasks import ProgramSetQuantumTaskResult

from qrun import tags
from qrun.providers.base import JobNotFound, RemoteStatus, Task, TaskFailed, sdk_versions
from qrun.providers.braket_local import program as braket_program
from qrun.providers.braket_local.adapter import measure_counts, prepare_program
from qrun.providers.cloud import CloudAdapter, error_text
from qrun.providers.spec import Limits

TAG_KEY = "qrun-tag"
PROGRAM_SET = "braket.ir.openqasm.program_set"  # the device action that takes program sets
# Error codes AWS answers for what passes (some of them with HTTP 400).
TRANSIENT_CODES = {"ThrottlingException", "InternalServiceException", "ServiceUnavailable",
                   "ServiceQuotaExceededException", "RequestTimeout", "SlowDown", "InternalError"}
# Every request is bounded: botocore's defaults (60 s to connect, 60 s per read) made one
# call to a service that accepts connections but never answers take six minutes with its
# tries, and an apply run past fifteen.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0

# Braket's task states -> qrun's.
STATES = {"CREATED": "queued", "QUEUED": "queued", "RUNNING": "running", "COMPLETED": "done",
          "FAILED": "failed", "CANCELLING": "running", "CANCELLED": "cancelled"}

logging.getLogger("braket").setLevel(logging.WARNING)

CALIBRATION_READ_EVERY = 60.0  # seconds a device's properties are trusted for job reports

# A lookup by tag asks for the tasks created since the attempt was recorded, less this much:
# this machine's clock and AWS's may disagree. AWS refuses requests signed more than 15
# minutes off its clock, so a day is far more than any created task can be off; a margin too
# small would miss a task that exists and pay for it twice.
CLOCK_SKEW = 86400.0


class _BoundRefused(Exception):
    """The service refused a search's createdAt bound (its format is not documented)."""


def client_token(tag: str) -> str:
    """CreateQuantumTask's idempotency token for an attempt (1 to 64 characters)."""
    return hashlib.sha256(f"qrun-client-token:{tag}".encode()).hexdigest()[:64]


def _created_since(when: float) -> dict:
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return {"name": "createdAt", "operator": "GTE", "values": [stamp.strftime("%Y-%m-%dT%H:%M:%SZ")]}


class Adapter(CloudAdapter):
    provider = "braket.aws"
    service_name = "Braket"
    # Keys are boto3's own business (its environment variables or a profile): qrun never
    # reads them, so {env: VAR} is not a reference it takes.
    credential_kinds = ("profile",)
    credentials_note = "boto3 reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY itself"

    def __init__(self, device: str, options: dict, credentials: dict):
        super().__init__(device, options, credentials)
        self.bucket = self.options.get("s3_bucket", "amazon-braket-qrun")
        self.prefix = self.options.get("s3_prefix", "qrun")
        self._prepared: dict = {}  # program digest -> BraketProgram for this device
        self._target: braket_program.Device | None = None  # from the device's properties
        self._program_sets: dict | None = None  # its program-set action, if it declares one
        self._calibration: tuple[float, dict | None] = (0.0, None)  # (read at, what it said)
        self._target_lock = threading.Lock()

    # -- the cloud core's hooks

    def connect(self) -> AwsSession:
        return self._session(self.options, {"profile": self.credentials.profile})

    @property
    def session(self) -> AwsSession:
        return self.client

    def is_transient(self, exc: BaseException) -> bool:
        # HTTPClientError covers a connection the server closed before answering
        # (ConnectionClosedError) and read timeouts; ConnectionError the failed connects.
        if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
            return True
        if isinstance(exc, botocore.exceptions.ClientError):
            status = _http_status(exc)
            return _code(exc) in TRANSIENT_CODES or status == 429 or status >= 500
        return False

    def answer_status(self, exc: BaseException) -> int | None:
        if isinstance(exc, botocore.exceptions.ClientError) and _code(exc) not in TRANSIENT_CODES:
            return _http_status(exc) or None
        return None

    def turned_away(self, exc: BaseException) -> bool:
        # Braket answers throttling as ThrottlingException (HTTP 429), which answer_status
        # leaves out with every code that may pass: it is answered before any work.
        return isinstance(exc, botocore.exceptions.ClientError) and \
            (_code(exc) == "ThrottlingException" or _http_status(exc) == 429)

    def created_nothing(self, exc: BaseException) -> bool:
        # botocore checks a request's parameters before it sends anything.
        return isinstance(exc, botocore.exceptions.ParamValidationError) or super().created_nothing(exc)

    def refusal(self, exc: Exception) -> Exception:
        if isinstance(exc, _BoundRefused):
            return exc
        if isinstance(exc, botocore.exceptions.ClientError):
            return RuntimeError(f"Braket refused: {_error_text(exc)}")
        return exc

    def _about_task(self, function, *args, **kwargs):
        """A call naming one quantum task: Braket's "not found" means the task is gone."""
        try:
            return function(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise JobNotFound(f"Braket: {_error_text(exc)}") from None
            raise

    # -- the device

    def target(self) -> braket_program.Device:
        """What the device declares (GetDevice), asked once per adapter."""
        with self._target_lock:
            if self._target is None:
                answer = self.call(self.session.get_device, self.device)
                if answer.get("deviceStatus") == "RETIRED":
                    raise RuntimeError(f"Braket device {self.device} is retired")
                capabilities = json.loads(answer["deviceCapabilities"])
                properties = BraketSchemaBase.parse_raw_schema(answer["deviceCapabilities"])
                self._program_sets = capabilities.get("action", {}).get(PROGRAM_SET)
                # Cloud devices take no mid-circuit measurement, reset or condition.
                self._target = braket_program.Device.from_properties(self.device, properties,
                                                                     dynamic=False)
            return self._target

    def job_limits(self) -> Limits:
        """What one job may carry on this device, as it declares it: a program set's
        executables and total shots, or one circuit where it takes no program sets."""
        self.target()
        action = self._program_sets
        if action is None:
            return Limits(max_experiments_per_job=1)
        return Limits(max_experiments_per_job=max(1, int(action["maximumExecutables"])),
                      max_total_shots_per_job=int(action["maximumTotalShots"]) or None)

    @staticmethod
    def _session(options: dict, credentials: dict) -> AwsSession:
        boto_session = _Session(options.get("endpoint"), profile_name=credentials.get("profile"),
                                region_name=options.get("region", "us-east-1"))
        # qrun retries with its own policy; its call threads each need a connection.
        config = Config(retries={"max_attempts": 1}, max_pool_connections=64,
                        connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
        client = boto_session.client("braket", config=config)
        return AwsSession(boto_session=boto_session, braket_client=client, config=config)

    # -- the remote adapter contract

    def submit(self, tasks: list[Task], seed, tag: str) -> str:
        action, shots = self._program_set(tasks) if len(tasks) > 1 else self._program(tasks[0])
        # The request AwsQuantumTask.create sends for an OpenQASM program, plus a client
        # token of our own: the SDK leaves it to botocore, which draws a new one per call.
        # Derived from the attempt's tag, so that a create sent again (by the cloud core,
        # after a 429) is the same create to the service, which makes one task per token.
        # Still made once otherwise: a lost answer goes back to the engine, which looks the
        # tag up before anything is sent again.
        return self.create(self.session.create_quantum_task, deviceArn=self.device,
                           outputS3Bucket=self.bucket, outputS3KeyPrefix=self.prefix,
                           shots=shots, action=action, tags={TAG_KEY: tag},
                           clientToken=client_token(tag))

    def _program(self, task: Task) -> tuple[str, int]:
        """One task's action (an OpenQASM program) and shots, checked against the device."""
        target = self.target()
        prepared = prepare_program(task, target, self._prepared)
        size = target.size_problem(prepared.num_qubits, task.shots)
        if size:
            raise RuntimeError(size)
        return OpenQASMProgram(source=prepared.source, inputs=prepared.inputs_for(task.params)).json(), \
            task.shots

    def _program_set(self, tasks: list[Task]) -> tuple[str, int]:
        """Several tasks as one program set's action, and its total shots."""
        target = self.target()
        if self._program_sets is None:
            raise RuntimeError(f"Braket device {self.device} takes no program sets: one circuit a task")
        shots = {task.shots for task in tasks}
        if len(shots) != 1:
            raise RuntimeError("a program set runs every executable with the same shots; this job "
                               f"mixes {sorted(shots)}")
        (each,) = shots
        for task in tasks:
            size = target.size_problem(prepare_program(task, target, self._prepared).num_qubits, each)
            if size:
                raise RuntimeError(size)
        programs, _ = self._packed(tasks)
        total = each * len(tasks)
        ceiling = self._program_sets.get("maximumTotalShots")
        if len(tasks) > self._program_sets["maximumExecutables"] or (ceiling and total > ceiling):
            raise RuntimeError(f"{len(tasks)} experiments of {each:,} shots exceed what one program "
                               f"set takes on {self.device}")
        return ProgramSet(programs=programs).json(), total

    def _packed(self, tasks: list[Task]) -> tuple[list, list]:
        """The program set's programs, and where each task is in it: (program, inputs index).

        Tasks with inputs (the points of a sweep) whose translated text is the same share one
        program, their inputs as lists in task order; any other task is a program of its own.
        Braket reports executables in that order: program by program, inputs index 0 up."""
        programs: list = []  # (source, {name: [values]}) per program
        executables: list = []  # how many executables each program holds so far
        shared: dict = {}  # (source, input names) -> index of the program they share
        where = []
        target = self.target()
        for task in tasks:
            prepared = prepare_program(task, target, self._prepared)
            inputs = prepared.inputs_for(task.params) or {}
            key = (prepared.source, tuple(sorted(inputs)))
            index = shared.get(key) if inputs else None
            if index is None:
                index = len(programs)
                programs.append((prepared.source, {name: [] for name in inputs}))
                executables.append(0)
                if inputs:
                    shared[key] = index
            for name, value in inputs.items():
                programs[index][1][name].append(value)
            where.append((index, executables[index]))
            executables[index] += 1
        return [OpenQASMProgram(source=source, inputs=inputs or None) for source, inputs in programs], where

    def find(self, tag: str) -> str | None:
        since = tags.created_at(tag)
        if since is not None:
            try:
                return self._search_for(tag, [_created_since(since - CLOCK_SKEW)])
            except _BoundRefused:
                pass  # the createdAt filter's format is not documented: refused, read them all
        return self._search_for(tag, [])

    def _search_for(self, tag: str, bounds: list) -> str | None:
        """The task carrying ``tag`` among the device's tasks within ``bounds``, if any."""
        token = None
        while True:
            request = {"filters": [{"name": "deviceArn", "operator": "EQUAL", "values": [self.device]},
                                   *bounds], "maxResults": 100}
            if token:
                request["nextToken"] = token
            page = self.call(self._search_page, bool(bounds), **request)
            for summary in page.get("quantumTasks", []):
                if summary.get("tags", {}).get(TAG_KEY) == tag:
                    return summary["quantumTaskArn"]
            token = page.get("nextToken")
            if not token:
                return None

    def _search_page(self, bounded: bool, **request) -> dict:
        try:
            return self.session.braket_client.search_quantum_tasks(**request)
        except botocore.exceptions.ClientError as exc:
            if bounded and _code(exc) == "ValidationException":
                raise _BoundRefused() from exc
            raise

    def poll(self, handle: str) -> RemoteStatus:
        answer = self.call(self._about_task, self.session.braket_client.get_quantum_task,
                           quantumTaskArn=handle)
        state = answer["status"]
        tags = answer.get("tags")
        return RemoteStatus(state=STATES.get(state, "queued"), provider_state=state,
                            error=answer.get("failureReason"),
                            tags=None if tags is None else tuple(v for k, v in tags.items() if k == TAG_KEY))

    def fetch(self, handle: str, tasks: list[Task]) -> list:
        remote = AwsQuantumTask(handle, aws_session=self.session)
        result = self.call(self._about_task, remote.result)
        if result is None:
            raise RuntimeError(f"Braket has no result for {handle} ({remote.state()})")
        if isinstance(result, ProgramSetQuantumTaskResult):
            return self._program_set_counts(result, tasks)
        (task,) = tasks
        prepared = prepare_program(task, self.target(), self._prepared)  # same text, same map
        return [measure_counts(result, prepared)]

    def _program_set_counts(self, result: ProgramSetQuantumTaskResult, tasks: list[Task]) -> list:
        """Counts (or TaskFailed) per task from a program set's result, in qrun's bit order.

        Each task's entry is found where ``_packed`` put it; a result whose shape is not the
        one sent (another number of programs or executables, an entry with other inputs) is
        refused rather than mapped to the wrong experiment."""
        programs, where = self._packed(tasks)
        per_program = Counter(p for p, _ in where)
        if [len(entry) for entry in result.entries] != [per_program[p] for p in range(len(programs))]:
            raise RuntimeError(f"Braket's result for {result.task_metadata.id} does not have the "
                               "shape of the program set sent; refusing to guess which executable "
                               "is which experiment")
        return [self._entry_counts(task, programs[p], k, result.entries[p][k])
                for task, (p, k) in zip(tasks, where, strict=True)]

    def _entry_counts(self, task: Task, program: OpenQASMProgram, index: int, entry):
        if not hasattr(entry, "counts"):  # a ProgramSetExecutableFailure: this one alone failed
            metadata = entry.failureMetadata
            return TaskFailed(f"Braket {metadata.category.value.lower()} failure: {metadata.failureReason}"
                              + (" (retryable)" if metadata.retryable else ""))
        expected = {name: values[index] for name, values in (program.inputs or {}).items()}
        if expected and dict(entry.inputs or {}) != expected:
            raise RuntimeError(f"Braket returned the inputs {entry.inputs} where qrun sent {expected}; "
                               "refusing to guess which executable is which experiment")
        prepared = prepare_program(task, self.target(), self._prepared)
        return prepared.counts_by_clbit(entry.measured_qubits, dict(entry.counts))

    def cancel(self, handle: str) -> None:
        self.call(self._about_task, self.session.cancel_quantum_task, handle)

    def job_report(self, handle: str) -> dict:
        """What Braket says of a done task: it bills a QPU task per task and per shot
        requested (a program set's total), and records no calibration with a task; the
        device's properties say when they were last updated (read at most once a minute)."""
        answer = self.call(self._about_task, self.session.braket_client.get_quantum_task,
                           quantumTaskArn=handle)
        action = answer.get("actionMetadata") or {}
        usage = {"tasks": 1, "shots": answer.get("shots"), "seconds": None,
                 "numSuccessfulShots": answer.get("numSuccessfulShots"),
                 "executableCount": action.get("executableCount"), "actionType": action.get("actionType")}
        return {"usage": usage, "calibration": self._device_calibration()}

    def _device_calibration(self) -> dict | None:
        read_at, calibration = self._calibration
        if time.monotonic() - read_at > CALIBRATION_READ_EVERY:
            answer = self.call(self.session.get_device, self.device)
            capabilities = json.loads(answer["deviceCapabilities"])
            updated = {name: (capabilities.get(name) or {}).get("updatedAt")
                       for name in ("service", "standardized")}
            calibration = {"device": self.device, "properties_updated_at": updated["service"],
                           **({"standardized_updated_at": updated["standardized"]}
                              if updated["standardized"] else {})}
            self._calibration = (time.monotonic(), calibration)
        return calibration

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("amazon-braket-sdk", "boto3"))}


class _Session(boto3.Session):
    """A boto3 Session that keeps one client or resource per thread, optionally at an endpoint.

    The Braket SDK makes a new S3 resource for every result it downloads; building one costs
    more CPU than the download, so each call thread reuses its own (boto3 resources are not
    shared between threads). With ``endpoint`` every service it serves (Braket, S3) is sent to
    that address: the seam for rehearsals against a fake service; the SDK's code is unchanged.
    """

    def __init__(self, endpoint: str | None, **kwargs):
        super().__init__(**kwargs)
        self._endpoint = endpoint
        self._local = threading.local()

    def client(self, *args, **kwargs):
        return self._cached("client", super().client, args, kwargs)

    def resource(self, *args, **kwargs):
        return self._cached("resource", super().resource, args, kwargs)

    def _cached(self, kind: str, make, args, kwargs):
        if self._endpoint:
            kwargs.setdefault("endpoint_url", self._endpoint)
        cache = self._local.__dict__.setdefault("made", {})
        key = (kind, args, repr(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = make(*args, **kwargs)
        return cache[key]


def _code(exc: botocore.exceptions.ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _http_status(exc: botocore.exceptions.ClientError) -> int:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
    return error_text(exc)
