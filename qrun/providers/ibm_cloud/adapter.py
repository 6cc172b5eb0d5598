"""qiskit.ibm: circuits on IBM Quantum Platform devices, through qiskit-ibm-runtime.

One qrun job is one runtime job: every task becomes one PUB of the current sampler,
``qiskit_ibm_runtime.executor_sampler.Sampler`` (``SamplerV2`` is deprecated in 0.51; the
executor sampler submits the ``executor`` program, whose results the SDK post-processes into
the usual ``PrimitiveResult``, also for a job re-attached by id after a crash). The job runs
in batch mode: one ``Batch`` per campaign and device takes all its jobs. Its id is kept in
the state (engine/groups.py), so the apply after a crash or a Ctrl-C sends the rest into the
same batch (``Batch.from_id``, rejoined while it takes jobs and has time left); once the
campaign has nothing left to send there, the batch is closed (its queued jobs still run). A
create refused because the batch no longer takes jobs made nothing: it is sent once more, in
a new batch.
Circuits are transpiled for the device's Target exactly as ``qiskit.ibm-local`` does (its
``_bound`` is reused: parse, transpile with the preset pass manager, bind parameters).

Idempotency: qrun's tag is the job's tag (``options.environment.job_tags``), so the service
keeps it with the job, and ``find(tag)`` asks the service (``service.jobs(job_tags=[tag])``).
A re-attached job is ``service.job(handle)``. A task whose circuit cannot be prepared (a
parse error) fails on its own: the others are submitted, and a second tag,
``qrun-skipped:<indices>``, keeps with the job which tasks it lacks, so ``fetch`` lines the
results up even for a job found again after a crash.

Credentials are references, read by the cloud core: ``{env: VAR}`` (an IBM Cloud API key
read from ``$VAR`` when the service is contacted, and again if it changes), ``{profile: NAME}``
(an account saved with ``QiskitRuntimeService.save_account(name=NAME)``), or nothing (the
SDK's default account).
``options.instance`` names the service instance (CRN or name); without it the SDK picks one.

Rehearsal against a local fake (``options.endpoint``: ``python -m qrun.fakes qiskit.ibm``).
The SDK talks to four IBM Cloud services, and every one of them can be moved by a setting the
SDK itself reads, so no SDK object is patched or replaced:
  * the Runtime API: the service's ``url`` argument with a ``url_resolver`` (the SDK's
    documented pair for a custom URL) -> ``<endpoint>/api/v1``;
  * the IAM token exchange (API key -> bearer token): the ``IAM_URL`` environment variable,
    which ``CloudAuth`` and ``Account`` read (there is no argument for it) -> ``<endpoint>/iam``;
  * Global Search and Global Catalog (listing the account's instances, done by every
    ``QiskitRuntimeService()``): the IBM Cloud SDK's external configuration,
    ``GLOBAL_SEARCH_URL`` and ``GLOBAL_CATALOG_URL`` -> ``<endpoint>/search``, ``/catalog``.
The three variables are process-wide, so they are set for the life of the process once an
adapter with an endpoint connects, and one process cannot drive a real account and a fake
(or two fakes) at once: the adapter refuses that instead of sending a key to the wrong place.

Report (``job_report``, asked once after a job's results are fetched): the usage is the
job's metrics (``job.metrics()``, ``GET /jobs/{id}/metrics``): ``seconds`` is
``usage.qpu_charge_time_seconds`` once ``usage.status`` says the charge is final, None while
it is ``"pending"`` (``job.usage()`` would say 0 then; unknown is never 0); ``shots`` are the
shots in the results the service returned. The calibration is ``job.properties()``: the
backend's properties in force when the job started running (the SDK asks for the snapshot
older than the metrics' ``timestamps.running``) and their ``last_update_date``. The job
record's ``calibration_id`` has no public accessor in the SDK, so it is not read.

Retries, credentials and the client are the cloud core's (qrun.providers.cloud): transient
failures (connection errors, 429, 5xx) are retried inside each call under the one policy; the
SDK also retries 5xx on its own (IBM's API guarantees that a 5xx leaves no job behind). A job
submission is made once: only a definite refusal (4xx, not 408 or 429) says no job was made;
any other end raises TransientBackendError, and the engine looks the tag up before trying again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests
from qiskit.providers.exceptions import QiskitBackendNotFoundError
from qiskit_ibm_runtime import Batch, QiskitRuntimeService
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError, RuntimeJobNotFound
from qiskit_ibm_runtime.executor_sampler import Sampler

from qrun.providers.base import (
    JobNotFound,
    NoRoomYet,
    QuotaSpent,
    RemoteStatus,
    Task,
    TaskFailed,
    TransientBackendError,
    qiskit_key_to_qrun,
    sdk_versions,
)
from qrun.providers.cloud import CloudAdapter
from qrun.providers.ibm_local import adapter as ibm_local
from qrun.sources.gate import parse_circuit

# A job's second tag when some of its tasks could not be prepared: their indices.
SKIPPED_TAG = "qrun-skipped:"

# RuntimeJobV2.status() -> qrun's state
STATES = {"INITIALIZING": "queued", "QUEUED": "queued", "RUNNING": "running", "DONE": "done",
          "ERROR": "failed", "CANCELLED": "cancelled"}

# The SDK warns on every construction with an explicit key ("A saved account will not be
# used") and without an instance; qrun's users chose both on purpose.
logging.getLogger("qiskit_ibm_runtime.qiskit_runtime_service").setLevel(logging.ERROR)

_endpoint_lock = threading.Lock()
_process_endpoint: list = []  # the endpoint this process's SDK settings point at, once set


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and its causes (the SDK re-raises HTTP errors inside its own)."""
    seen = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _status_code(exc: BaseException) -> int | None:
    for error in _chain(exc):
        if isinstance(error, RequestsApiError) and error.status_code not in (None, -1):
            return error.status_code
        if type(error).__name__ == "ApiException":  # ibm_cloud_sdk_core: IAM, Search, Catalog
            code = getattr(error, "status_code", None)
            if isinstance(code, int) and code > 0:
                return code
        response = getattr(error, "response", None)
        if isinstance(error, requests.HTTPError) and response is not None:
            return response.status_code
    return None


# IBM's error codes for account limits (quantum.cloud.ibm.com/docs/errors), as the service's
# error body carries them ({"errors": [{"code": 3458, ...}]}) or as older answers wrote them
# ("Error code: 3458"). Read by code, whatever the HTTP status they come with.
TOO_MANY_PENDING_JOBS = 3458
QUOTA_EXCEEDED = 4317
_ERROR_CODE = re.compile(r'"code"\s*:\s*"?(\d{4})\b|[Ee]rror code:?\s*(\d{4})\b')


def _error_codes(exc: BaseException) -> set[int]:
    codes = set()
    for error in _chain(exc):
        for found in _ERROR_CODE.finditer(str(error)):
            codes.add(int(found.group(1) or found.group(2)))
    return codes


def _transient(exc: BaseException) -> bool:
    """Worth another try as is: the network, a busy or failing service."""
    if isinstance(exc, TransientBackendError):
        return True
    for error in _chain(exc):
        if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                              requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)):
            return True
    code = _status_code(exc)
    return code is not None and (code == 429 or code >= 500)


# A batch rejoined only with this much of its maximum time left: a job queued in a batch
# that reaches it is failed by the service.
BATCH_TIME_MARGIN = 600.0


def _takes_jobs(details: dict) -> bool:
    """Whether a batch's record says it takes new jobs, with time left for them to run."""
    if details.get("state") == "closed" or not details.get("accepting_jobs", False):
        return False
    started, max_ttl = details.get("started_at"), details.get("max_ttl")
    if started and max_ttl:
        try:
            began = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        except ValueError:
            return True  # a date it cannot read: the service refuses jobs if it is over
        if began.tzinfo is None:
            began = began.replace(tzinfo=UTC)
        return (datetime.now(UTC) - began).total_seconds() + BATCH_TIME_MARGIN < float(max_ttl)
    return True


def _batch_refused(exc: BaseException) -> bool:
    """Whether a create was refused because its batch no longer takes jobs: a definite
    refusal (a 4xx, never 408/429) whose text names the session and why, or the SDK's own
    "The session is closed." raised before any request. IBM does not document the code."""
    if isinstance(exc, TransientBackendError):
        return False  # the job may exist: the engine looks its tag up, nothing is resent here
    for link in _chain(exc):
        text = str(link).lower()
        if "session is closed" in text:
            return True
        if ("session" in text or "batch" in text) and \
                any(word in text for word in ("not accept", "closed", "expired", "inactive")):
            status = _status_code(link)
            return status is None or 400 <= status < 500 and status not in (408, 429)
    return False


def _skipped(tags) -> set:
    """Tasks left out of a job at submission (they failed to prepare), from its tags."""
    for tag in tags or []:
        if tag.startswith(SKIPPED_TAG):
            return {int(i) for i in tag[len(SKIPPED_TAG):].split(",") if i}
    return set()


class Adapter(CloudAdapter):
    provider = "qiskit.ibm"
    service_name = "IBM Quantum"

    # ibm_local's circuit preparation, reused as is: it reads self.backend (the device's
    # IBMBackend here), self.optimization_level and self._isa (a transpilation cache).
    _bound: Callable[..., Any] = ibm_local.Adapter._bound

    def __init__(self, device: str, options: dict, credentials: dict):
        super().__init__(device, options, credentials)
        self.endpoint = (self.options.get("endpoint") or "").rstrip("/") or None
        self.instance = self.options.get("instance")
        self.optimization_level = self.options.get("optimization_level", 1)
        self._isa: dict = {}
        self._jobs: dict = {}  # handle -> RuntimeJobV2 (re-attached once per process)
        self._shots_returned: dict = {}  # handle -> shots in the results fetched, for job_report
        self._lock = threading.Lock()
        self._backend_object = None
        self._backend_service = None
        self._batch: Batch | None = None  # the open batch new jobs go into (groups hooks)
        self._batch_lock = threading.Lock()
        self._rejoin_tried: set = set()  # batch ids an earlier apply kept, asked once each

    # -- connection

    def _point_sdk_at_endpoint(self) -> None:
        with _endpoint_lock:
            if _process_endpoint and _process_endpoint[0] != self.endpoint:
                raise RuntimeError(
                    "qiskit.ibm: one qrun process cannot use several IBM endpoints (the SDK reads "
                    f"IAM and catalog addresses from the environment): {_process_endpoint[0] or 'IBM Cloud'} "
                    f"is in use, {self.endpoint or 'IBM Cloud'} was asked for; run them in separate applies")
            if not _process_endpoint:
                if self.endpoint:
                    os.environ["IAM_URL"] = f"{self.endpoint}/iam"
                    os.environ["GLOBAL_SEARCH_URL"] = f"{self.endpoint}/search"
                    os.environ["GLOBAL_CATALOG_URL"] = f"{self.endpoint}/catalog"
                _process_endpoint.append(self.endpoint)

    def connect(self) -> QiskitRuntimeService:
        """The cloud core's hook: the service object (made once; it lists the instances)."""
        self._point_sdk_at_endpoint()
        kwargs: dict = {"instance": self.instance or "auto"}
        if self.endpoint:
            runtime_api = f"{self.endpoint}/api/v1"
            kwargs.update(url=self.endpoint, url_resolver=lambda *_: runtime_api)
        if self.credentials.env:  # an IBM Cloud API key
            return QiskitRuntimeService(channel="ibm_quantum_platform", token=self.credentials.secret(),
                                        **kwargs)
        if self.credentials.profile:
            return QiskitRuntimeService(name=self.credentials.profile, **kwargs)
        return QiskitRuntimeService(**kwargs)

    @property
    def service(self) -> QiskitRuntimeService:
        return self.client

    @property
    def backend(self):
        """The device as an IBMBackend, its Target loaded (configuration and properties)."""
        service = self.service
        with self._lock:
            if self._backend_object is None or self._backend_service is not service:
                self._backend_service = service  # a new service (a rotated key): load again
                def load():
                    try:
                        backend = service.backend(self.device)
                    except QiskitBackendNotFoundError:
                        raise self._not_found_or_unanswered(service) from None
                    backend.target  # noqa: B018 - fetches the properties the Target needs
                    return backend
                self._backend_object = self.call(load)
            return self._backend_object

    def _not_found_or_unanswered(self, service) -> Exception:
        """Tell "the service has no such backend" from "the service did not answer".

        qiskit-ibm-runtime's backends() swallows a failed listing (429, 5xx, a lost
        connection) and then says "No backend matches the criteria", with no cause; with
        20 % transient faults that failed up to half a campaign for good. So the instances'
        backends are listed again, letting errors through: only a clean listing without the
        device means it does not exist. The service object also keeps the failed, empty
        listing (its discovery cache): that is cleared, so the next try discovers again.
        """
        if isinstance(getattr(service, "_backend_instance_groups", None), list):
            service._backend_instance_groups = []
        try:
            clients = list(getattr(service, "_api_clients", {}).values()) or \
                [service._active_api_client]
            listed = {device["name"] for client in clients for device in client.list_backends(True)}
        except Exception as exc:  # noqa: BLE001 - judged by _transient below
            if _transient(exc):
                return TransientBackendError(f"the service did not list its backends ({exc})")
            return exc
        if self.device in listed:
            return TransientBackendError(f"the service lists {self.device} but could not load it")
        shown = ", ".join(sorted(listed)) or "none"
        return QiskitBackendNotFoundError(f"the service has no backend {self.device!r} for this "
                                          f"account (it lists: {shown})")

    # -- the cloud core's rules for errors

    def is_transient(self, exc: BaseException) -> bool:
        return _transient(exc)

    def answer_status(self, exc: BaseException) -> int | None:
        return _status_code(exc)

    def limit_reached(self, exc: BaseException):
        codes = _error_codes(exc)
        if QUOTA_EXCEEDED in codes:
            return QuotaSpent
        if TOO_MANY_PENDING_JOBS in codes:
            return NoRoomYet
        return None

    def never_sent(self, exc: BaseException) -> bool:
        """A documented override of the creation rule (cloud.py): ``sampler.run`` reads the
        backend's status (and the instance's usage) before it POSTs the job, and raises a
        failure of that POST as IBMRuntimeError "Failed to run program" (RuntimeProgramNotFound
        for a 404). So a failed request of the SDK's own (RequestsApiError) not wrapped so
        failed before the POST: nothing was sent. (After the POST the SDK reads the backend
        again only if the service ran the job on another backend than the one asked for.)"""
        return isinstance(exc, RequestsApiError)

    def refusal(self, exc: Exception) -> Exception:
        """The error as is, unless it quotes the key: then its text without it."""
        text = self.credentials.scrub(str(exc))
        return exc if text == str(exc) else RuntimeError(f"{type(exc).__name__}: {' '.join(text.split())}")

    def _ask(self, handle: str, method: str, *args):
        """Call a job's method; a job object whose call failed half-way is dropped (it may
        hold a final state without its error text), so the next try re-attaches afresh."""
        def ask():
            job = self._jobs.get(handle)
            try:
                if job is None:
                    job = self._jobs[handle] = self.service.job(handle)
                return job, getattr(job, method)(*args)
            except Exception as exc:
                self._jobs.pop(handle, None)
                if isinstance(exc, RuntimeJobNotFound) or \
                        (isinstance(exc, RequestsApiError) and exc.status_code == 404):
                    raise JobNotFound(f"IBM Quantum has no job {handle}: {exc}") from None
                raise
        return self.call(ask)

    # -- the remote adapter contract

    def submit(self, tasks: list[Task], seed, tag: str) -> str:
        backend = self.backend
        pubs, skipped, first_error = [], [], None
        for i, task in enumerate(tasks):
            try:
                pubs.append((self._bound(task, seed), None, task.shots))
            except Exception as exc:  # this task fails on its own (at fetch); the others run
                skipped.append(i)
                first_error = first_error or exc
        if not pubs:
            raise first_error or RuntimeError("no task to submit")
        tags = [tag] + ([SKIPPED_TAG + ",".join(map(str, skipped))] if skipped else [])
        batch = self._open_batch(backend)
        try:
            job = self._run_in(batch, pubs, tags)
        except Exception as exc:
            if not _batch_refused(exc):
                raise
            # The batch stopped taking jobs (its time ran out, or it was closed elsewhere):
            # a definite refusal, nothing was made. Once more, in a new batch.
            self._drop_batch(batch)
            job = self._run_in(self._open_batch(backend), pubs, tags)
        self._jobs[job.job_id()] = job
        return job.job_id()

    def _run_in(self, batch: Batch, pubs: list, tags: list):
        sampler = Sampler(mode=batch)
        sampler.options.environment.job_tags = tags
        # Made once: anything but a definite refusal may have created the job, and goes
        # back to the engine, which looks the tag up before any new try.
        return self.create(sampler.run, pubs)

    # -- the batch: one per campaign and device, kept across applies (engine/groups.py)

    def _open_batch(self, backend) -> Batch:
        """The batch new jobs go into: the one open, else a new one (a batch costs nothing,
        so opening it is retried as a read)."""
        with self._batch_lock:
            if self._batch is None:
                self._batch = self.call(Batch, backend=backend)
            return self._batch

    def _drop_batch(self, batch: Batch) -> None:
        with self._batch_lock:
            if self._batch is batch:
                self._batch = None

    def group_id(self) -> str | None:
        with self._batch_lock:
            return self._batch.session_id if self._batch is not None else None

    def rejoin_group(self, group_id: str) -> None:
        """Send into the batch an earlier apply opened, if it still takes jobs and has time
        left; else a new batch is opened at the next submission."""
        with self._batch_lock:
            if self._batch is not None or group_id in self._rejoin_tried:
                return
            self._rejoin_tried.add(group_id)
            try:
                batch = self.call(Batch.from_id, group_id, self.service)
                details = self.call(batch.details) or {}
            except Exception:
                return  # gone, or not readable now: a new batch it is
            if _takes_jobs(details):
                self._batch = batch

    def close_group(self, group_id: str) -> None:
        """No more jobs for the batch: its queued jobs still run, and the service ends it
        once they are done (``Batch.close``: PATCH accepting_jobs false)."""
        with self._batch_lock:
            batch = self._batch if self._batch is not None and self._batch.session_id == group_id else None
            if batch is not None:
                self._batch = None
        if batch is None:
            batch = self.call(Batch.from_id, group_id, self.service)
        self.call(batch.close)

    def find(self, tag: str) -> str | None:
        jobs = self.call(self.service.jobs, job_tags=[tag], limit=10, descending=False)
        if not jobs:
            return None
        self._jobs.setdefault(jobs[0].job_id(), jobs[0])
        return jobs[0].job_id()

    def poll(self, handle: str) -> RemoteStatus:
        job, status = self._ask(handle, "status")
        state = STATES.get(status, "queued")
        error = None
        if state == "failed":  # status() read the error text along with the state
            error = self.credentials.scrub(job.error_message() or f"job {handle} failed")
        tags = getattr(job, "tags", None)
        return RemoteStatus(state=state, provider_state=status, error=error,
                            tags=None if tags is None else tuple(tags))

    def fetch(self, handle: str, tasks: list[Task]) -> list:
        job, result = self._ask(handle, "result")
        skipped = _skipped(job.tags)
        outcomes: list = [None] * len(tasks)
        for i in skipped:
            outcomes[i] = TaskFailed(self._local_error(tasks[i]))
        positions = [i for i in range(len(tasks)) if i not in skipped]
        if len(positions) != len(result):
            raise RuntimeError(f"job {handle} holds {len(result)} results for {len(positions)} "
                               "circuits: it is not the job qrun submitted for these experiments")
        for i, pub_result in zip(positions, result):
            counts = pub_result.join_data().get_counts()
            outcomes[i] = {qiskit_key_to_qrun(k): v for k, v in counts.items()}
        self._shots_returned[handle] = sum(sum(outcomes[i].values()) for i in positions)
        return outcomes

    def job_report(self, handle: str) -> dict:
        """What IBM says of a done job: its metrics (usage, timestamps) and the backend
        properties it ran under. IBM bills QPU seconds per job; the charge counts only once
        the metrics' ``usage.status`` is no longer ``"pending"``."""
        job, metrics = self._ask(handle, "metrics")
        answer = metrics.get("usage") or {}
        status = answer.get("status", "pending")  # the SDK's default when the key is absent
        charge = answer.get("qpu_charge_time_seconds")
        usage = {"tasks": 1, "shots": self._shots_returned.get(handle),
                 "seconds": None if status == "pending" else charge,
                 "final": status != "pending",  # the engine reads a pending charge again later
                 "qpu_charge_time_seconds": charge, "status": answer.get("status"),
                 "timestamps": metrics.get("timestamps"),
                 **{name: metrics[name] for name in ("circuits_execution_time_ns",)
                    if name in metrics}}
        _, properties = self._ask(handle, "properties")  # in force when the job ran
        calibration = None
        if properties is not None:
            updated = properties.last_update_date
            if isinstance(updated, datetime):  # the SDK gives it in local time
                updated = updated.astimezone(UTC).isoformat().replace("+00:00", "Z")
            calibration = {"backend": properties.backend_name or self.device,
                           "backend_version": properties.backend_version,
                           "properties_last_update": updated}
        return {"usage": usage, "calibration": calibration}

    def _local_error(self, task: Task) -> str:
        """Why a task could not be prepared at submission (parsed again: cheap, deterministic)."""
        try:
            circuit = parse_circuit(task.program_format, task.program_content, index=task.program_item)
            names = {p.name for p in circuit.parameters}
            missing = sorted(set(task.params) - names)
            if missing:
                raise KeyError(missing[0])
        except Exception as exc:
            return TaskFailed.of(exc).error
        return f"the circuit could not be transpiled for {self.device} at submission"

    def cancel(self, handle: str) -> None:
        try:
            self._ask(handle, "cancel")
        except RuntimeInvalidStateError:
            pass  # already finished: nothing left to stop

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sampler": "qiskit_ibm_runtime.executor_sampler.Sampler (batch mode)",
                **({"endpoint": self.endpoint} if self.endpoint else {}),
                "sdk": sdk_versions(("qiskit", "qiskit-ibm-runtime"))}
