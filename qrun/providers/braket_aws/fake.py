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
TN1's published capabilities, so rehearsals translate for the same device. Task ids are
random (uuid4), as real ones: a restarted fake never hands out an id it gave before.

    python -m qrun.fakes braket.aws --port 8123 [--error-rate 0.3 --latency 0.05 ...]
    # backends: [{name: sv1, provider: braket.aws, device: arn:aws:braket:::device/quantum-simulator/amazon/sv1,
    #             options: {endpoint: "http://127.0.0.1:8123"}}]
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import uuid
import warnings
from dataclasses import dataclass, field

from qrun.fakes.server import FakeServer, serve
from qrun.providers.braket_aws.devices import DEVICES, RETIRED

ACCOUNT = "000000000000"

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
    created: float = field(default_factory=time.time)
    status: str = "QUEUED"
    failure: str | None = None
    ended: float | None = None


class FakeBraket(FakeServer):
    name = "braket"

    def __init__(self, simulate: bool = True, retired: tuple = RETIRED,
                 access_key: str | None = None, **kwargs):
        super().__init__(**kwargs)
        # The one access key id accepted (requests are signed with SigV4, whose Authorization
        # header names it); None accepts any. Rotating it rehearses an expired credential.
        self.access_key = access_key
        # simulate=False answers every task with all-zero outcomes at once: for benchmarks
        # that measure the client, not the simulator.
        self.simulate = simulate
        self.retired = set(retired)  # device ARNs GetDevice calls RETIRED; their tasks refused
        self.tasks: dict[str, _Task] = {}
        self.by_client_token: dict[str, str] = {}
        self.objects: dict[tuple, bytes] = {}  # (bucket, key) -> bytes
        self.refused: list[str] = []  # messages of the CreateQuantumTask calls refused

    # -- routing

    def handle(self, method: str, path: str, headers, body: bytes):
        parsed = urllib.parse.urlsplit(path)
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        request = json.loads(body) if body and headers.get("Content-Type", "").endswith("json") else {}
        if self.access_key is not None and \
                f"Credential={self.access_key}/" not in headers.get("Authorization", ""):
            return 403, {"message": "The security token included in the request is invalid."}, \
                {"x-amzn-ErrorType": "UnrecognizedClientException"}
        if method == "GET" and len(parts) == 2 and parts[0] == "device":
            return self._device(parts[1])
        if method == "POST" and parts == ["quantum-task"]:
            return self._create(request)
        if method == "GET" and len(parts) == 2 and parts[0] == "quantum-task":
            return self._get(parts[1])
        if method == "PUT" and len(parts) == 3 and parts[0] == "quantum-task" and parts[2] == "cancel":
            return self._cancel(parts[1])
        if method == "POST" and parts == ["quantum-tasks"]:
            return self._search(request)
        if method == "GET" and len(parts) == 2 and parts[0] == "tags":
            task = self.tasks.get(parts[1])
            return (200, {"tags": task.tags}, {}) if task else self._not_found(parts[1])
        if method == "GET" and len(parts) >= 2:  # S3 GetObject, path style: /bucket/key
            data = self.objects.get((parts[0], "/".join(parts[1:])))
            if data is None:
                return 404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"}
            return 200, data, {"Content-Type": "application/json"}
        return 404, {"message": f"no route {method} {parsed.path}"}, {"x-amzn-ErrorType": "NotFound"}

    def error_body(self, status: int):
        return {"message": "injected fault"}

    # -- operations

    def _device(self, arn: str):
        device = DEVICES.get(arn)
        if device is None:
            return 404, {"message": f"Braket device {arn} not found"}, \
                {"x-amzn-ErrorType": "ResourceNotFoundException"}
        return 200, device.describe("RETIRED" if arn in self.retired else "ONLINE"), {}

    def _refusal(self, request: dict):
        """The error the real service answers this CreateQuantumTask with, or None."""
        arn = request.get("deviceArn", "")
        device = DEVICES.get(arn)
        if device is None:
            return _error(400, "ValidationException", f"Device {arn} does not exist or is not "
                                                      "available to this account")
        if arn in self.retired:
            return _error(410, "DeviceRetiredException", f"Device {arn} is retired")
        problem = device.refusal(request.get("action", ""), int(request.get("shots", -1)))
        return _error(400, "ValidationException", problem) if problem else None

    def _create(self, request: dict):
        token = request.get("clientToken")
        refusal = self._refusal(request)
        if refusal:
            with self.lock:
                self.refused.append(refusal[1]["message"])
            return refusal
        with self.lock:
            if token in self.by_client_token:  # AWS idempotency: same token, same task
                return 201, {"quantumTaskArn": self.by_client_token[token]}, {}
            task_id = str(uuid.uuid4())  # unique across restarts, as Braket's are
            arn = f"arn:aws:braket:us-east-1:{ACCOUNT}:quantum-task/{task_id}"
            task = _Task(arn=arn, device=request["deviceArn"], shots=request["shots"],
                         bucket=request["outputS3Bucket"],
                         directory=f"{request['outputS3KeyPrefix']}/{task_id}",
                         tags=request.get("tags", {}), action=request["action"])
            self.tasks[arn] = task
            if token:
                self.by_client_token[token] = arn
            self.accepted[task.tags.get("qrun-tag", arn)] += 1
        threading.Thread(target=self._run, args=(task,), daemon=True).start()
        if self.faults.chance(self.faults.lose_after_accept):
            return 500, {"message": "injected: the task was created, the answer lost"}, \
                {"x-amzn-ErrorType": "InternalServiceException"}
        return 201, {"quantumTaskArn": arn}, {}

    def _run(self, task: _Task) -> None:
        if self.faults.stall:
            return
        if self.faults.run_time:
            time.sleep(self.faults.run_time / 2)
        task.status = "RUNNING"
        if self.faults.run_time:
            time.sleep(self.faults.run_time / 2)
        if task.status != "RUNNING":  # cancelled meanwhile
            return
        if self.faults.chance(self.faults.fail_jobs):
            task.status, task.failure = "FAILED", "injected: the device failed this task"
            task.ended = time.time()
            return
        try:
            result = self._simulated(task) if self.simulate else self._zeros(task)
            self.objects[(task.bucket, f"{task.directory}/results.json")] = result.encode()
            task.status = "COMPLETED"
        except Exception as exc:  # the simulator refused the program: as Braket reports it
            task.status, task.failure = "FAILED", f"{type(exc).__name__}: {exc}"
        task.ended = time.time()

    @staticmethod
    def _simulated(task: _Task) -> str:
        from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator
        from braket.ir.openqasm import Program

        simulator = DensityMatrixSimulator if DEVICES[task.device].simulator == "dm" \
            else StateVectorSimulator
        result = simulator().run(Program.parse_raw(task.action), shots=task.shots)
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
                     "tags": task.tags}
        if task.failure:
            described["failureReason"] = task.failure
        if task.ended:
            described["endedAt"] = _iso(task.ended)
        return described

    def _get(self, arn: str):
        task = self.tasks.get(arn)
        return (200, self._describe(task), {}) if task else self._not_found(arn)

    def _cancel(self, arn: str):
        task = self.tasks.get(arn)
        if task is None:
            return self._not_found(arn)
        if task.status in ("QUEUED", "RUNNING", "CREATED"):
            task.status, task.ended = "CANCELLED", time.time()
        return 200, {"quantumTaskArn": arn, "cancellationStatus": "CANCELLING"}, {}

    def _search(self, request: dict):
        tasks = list(self.tasks.values())
        for condition in request.get("filters", []):
            if condition["name"] == "deviceArn":
                tasks = [t for t in tasks if t.device in condition["values"]]
            elif condition["name"] == "status":
                tasks = [t for t in tasks if t.status in condition["values"]]
        start = int(request.get("nextToken") or 0)
        size = int(request.get("maxResults") or 100)
        page = tasks[start:start + size]
        answer = {"quantumTasks": [{k: v for k, v in self._describe(t).items()
                                    if k not in ("deviceParameters", "failureReason")} for t in page]}
        if start + size < len(tasks):
            answer["nextToken"] = str(start + size)
        return 200, answer, {}

    @staticmethod
    def _not_found(arn: str):
        return 404, {"message": f"{arn} not found"}, {"x-amzn-ErrorType": "ResourceNotFoundException"}


def _error(status: int, code: str, message: str) -> tuple:
    return status, {"message": message}, {"x-amzn-ErrorType": code}


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def main(argv=None) -> None:
    serve(FakeBraket, argv)


if __name__ == "__main__":
    main()
