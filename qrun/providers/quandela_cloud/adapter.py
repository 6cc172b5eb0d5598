"""quandela.cloud: Perceval circuits and experiments on Quandela's cloud platforms.

The SDK path is Perceval 1.3's non-deprecated one: a `RemoteComputer` over a
`QuandelaCommunicationLayer` (not the legacy `RemoteProcessor`/`RemoteJob`). A qrun job's
tasks that share a program become one cloud job: a `sample_count` computation with one
iteration per task (its circuit parameters and shot count), built with `ExecutionFactory`,
validated by the computer and sent by the communication layer. A qrun job whose tasks span
several programs becomes one cloud job per program, all in one job group; the handle is then
the job ids joined by commas, in program order (a plain id when there is one).

Idempotency: every cloud job carries qrun's tag as its job group name, and as its job name
("<tag>", or "<tag>:<i>/<n>" for part i of n). `find(tag)` asks the service for the jobs of
that group (GET /api/jobs?job_group_name=<tag>, through the SDK's own RPC handler, with its
token, proxies and timeouts). Perceval itself never lists jobs, and Quandela's published API
(v2.8) offers no such lookup to job tokens: where the service answers that route with
404/405, `find` raises an error that names the tag instead of guessing, so qrun never submits
a second paid job on its own: the job stays unresolved until the user checks the cloud's job
list for that group and, if it is not there, runs `qrun retry --resubmit-unresolved`. qrun's
fake (qrun.providers.quandela_cloud.fake) serves the lookup.

Shots: a task's shots are both the cloud's `max_shots` (what is billed) and `max_samples`;
on a lossy QPU a result may hold fewer samples than shots. An experiment with no
`min_detected_photons_filter` is given one equal to its input's photon count, heralds aside
(Perceval's remote computers require one), so results count the events where every photon is
detected, as a local SLOS run does. Outcomes are Fock states as Perceval prints them:
"|1,0,1,0>".

Account limits: where `RemoteComputer` waits, unbounded, until `/api/jobs/availability` shows
room in the account's job queue, the adapter sends the job and lets the service judge. Its
refusal, 400 "Cannot create more than N jobs", is NoRoomYet (qrun's engine waits, with
backoff, and fails nothing), as is 401 "Not enough credits" while unfinished jobs hold the
credits; 401 "Not enough credits" otherwise is QuotaSpent (submissions to the backend stop
for the apply). The refusal is what makes this reliable: qrun submits in parallel threads, so
an availability answer is stale before the job it was asked for is sent. A group turned away
after its first parts were made is no "nothing was created": it goes back to the engine as
an unanswered submission, whose next try looks the group up and sends the missing parts.

Credentials: `{env: VAR}` (the token is read from the environment at each call) or
`{profile: ...}` (Perceval's saved token: `RemoteConfig`, or PCVL_CLOUD_TOKEN). The token
lives only in the SDK's request headers; it is never put in an error, a log or metadata.
`options.endpoint` replaces the cloud's URL (a local fake in rehearsals and tests).

Retries, the creation rule and the lazy SDK objects are the cloud core's
(qrun.providers.cloud): a job is sent once; only a definite refusal (4xx, not 408 or 429)
says it was not created, anything else goes back to the engine, which looks the tag up.

Reports (`job_report`): per cloud job, the raw status answer (GET /api/job/status/<id>, the
SDK's `RPCHandler.get_job_status`) carries `duration` ("Job duration in seconds") and `shots`
(Quandela's cloud API v2.8, JobStatusResponse); the results fetch already read carry each
iteration's `nb_shots_used`. The usage is the cloud jobs (one per program of the qrun job:
credits are counted per cloud job), the `shots` the service reports (the `nb_shots_used`
total where it reports none), the summed `duration` as seconds, and `nb_shots_used` itself.
No credit is reported per job. Quandela publishes no calibration identity or timestamp for
a platform: the calibration recorded is the platform's `specs.pcvl_version` and
`specs.software_versions` with sha256 digests of its `perfs` and `specs` (canonical JSON of the
platform details, as served), read once per adapter.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse

import requests
from perceval.providers.quandela import QuandelaCommunicationLayer, RemoteConfig
from perceval.providers.quandela.rpc_handler import RPCHandler
from perceval.runtime import ExecutionFactory, RemoteComputer, RunningStatus
from perceval.utils.constants import KEY_RESULTS, KEY_RESULTS_LIST, KEY_SHOTS_USED, PERFS_KEY

from qrun.providers.base import (
    JobNotFound,
    NoRoomYet,
    QuotaSpent,
    RemoteStatus,
    SubmissionUnknown,
    Task,
    TaskFailed,
    TransientBackendError,
    sdk_versions,
)
from qrun.providers.cloud import CloudAdapter, CredentialError
from qrun.sources.perceval import load

TRANSIENT_STATUS = {408, 423, 425, 429}  # and every 5xx
LOOKUP_MISSING = {404, 405, 501}  # the service has no job lookup

# A job creation turned away by an account limit, as the Quandela cloud API (v2.8, POST
# /api/job) documents its answers; read by their text, the only place the SDK keeps them
# ("... answered with status code 400 [{'error': 'Cannot create more than 5 jobs'}]").
NO_ROOM = re.compile(r"cannot create more than \d+ jobs", re.IGNORECASE)  # 400: waiting jobs
# 401: credits held by waiting or running jobs come back as those jobs end: wait for them.
CREDITS_HELD = re.compile(r"not enough credits: all remaining credits are reserved", re.IGNORECASE)
CREDITS_SPENT = re.compile(r"not enough credits|not enough \w+ time left", re.IGNORECASE)  # 401

STATES = {RunningStatus.WAITING: "queued", RunningStatus.SUSPENDED: "queued",
          RunningStatus.UNKNOWN: "queued", RunningStatus.RUNNING: "running",
          RunningStatus.CANCEL_REQUESTED: "running", RunningStatus.SUCCESS: "done",
          RunningStatus.ERROR: "failed", RunningStatus.CANCELED: "cancelled"}


def known_devices() -> list:
    """Platforms are the cloud's to list (that needs the network); these are examples."""
    return ["sim:slos", "sim:belenos", "qpu:belenos", "qpu:ascella"]


class _Busy(Exception):
    """The service could not answer now (no status refresh): try again."""


class LookupUnsupported(SubmissionUnknown):
    """The service cannot list a job group: a lost submission cannot be reconciled."""


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if response is not None:
        return response.status_code
    # The SDK re-raises HTTP errors with the status only in their text.
    match = re.search(r"status code (\d{3})|\b(\d{3}) (?:Client|Server) Error", str(exc))
    return int(match.group(1) or match.group(2)) if match else None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _Busy):
        return True
    if isinstance(exc, ValueError):  # requests' invalid URL, schema or header: a bad endpoint
        return False
    if isinstance(exc, requests.RequestException):  # includes the SDK's HTTPErrors
        code = _status_code(exc)
        return code is None or code in TRANSIENT_STATUS or code >= 500
    return False


def _about_job(job_id: str, ask, *args):
    """Ask the SDK about one job; the service's 404 for it means the job is gone."""
    try:
        return ask(*args)
    except requests.HTTPError as exc:
        if _status_code(exc) == 404:
            raise JobNotFound(f"the Quandela cloud has no job {job_id}: {_text(exc)}") from None
        raise


def _text(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]


def _part_name(tag: str, index: int, count: int) -> str:
    return tag if count == 1 else f"{tag}:{index + 1}/{count}"


def _ids(handle: str) -> list:
    return handle.split(",")


def _handle(ids: list) -> str:
    return ",".join(ids)  # job ids are UUIDs


def _parts(tasks: list[Task]) -> list:
    """Task positions grouped by program, programs in order of first appearance."""
    groups: dict = {}
    for position, task in enumerate(tasks):
        groups.setdefault(task.program_digest, []).append(position)
    return list(groups.values())


def _total(values: list):
    """The sum of what the service said, or None if any of it is unknown (never 0 for it)."""
    if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return None
    return sum(values)


def _digest(value) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _calibration(platform: str, details: dict) -> dict:
    """What a platform's details say it runs under (no calibration id or time is published)."""
    served = details.get("specs")
    specs: dict = served if isinstance(served, dict) else {}
    return {"platform": platform, "pcvl_version": specs.get("pcvl_version"),
            "software_versions": specs.get("software_versions"),
            "perfs_sha256": _digest(details.get(PERFS_KEY)), "specs_sha256": _digest(details.get("specs"))}


class Adapter(CloudAdapter):
    provider = "quandela.cloud"
    service_name = "the Quandela cloud"

    def __init__(self, device: str, options: dict, credentials: dict):
        super().__init__(device, options, credentials)
        self.url = self.options.get("endpoint")
        self._payload_lock = threading.Lock()  # the computer's parameters are shared state
        self._found: dict = {}  # tag -> {job name: id} of a partial group find() just saw
        self._shots_used: dict = {}  # job id -> its results' nb_shots_used total (job_report pops it)
        self._platform: dict | None = None  # the calibration, from the platform details read once

    # -- the cloud core's hooks: the SDK's objects (the layer contacts the cloud on creation)

    def _token(self) -> str:
        if self.credentials.env:
            return self.credentials.secret()
        token = RemoteConfig().get_token()  # PCVL_CLOUD_TOKEN or Perceval's saved token
        if not token:
            raise CredentialError("quandela.cloud credentials: no token; set credentials: {env: VAR} "
                                  "or save one with perceval's RemoteConfig")
        return token

    def client_key(self) -> str | None:
        # Perceval's saved token may change too: made again for any new token.
        return hashlib.sha256(self._token().encode()).hexdigest()

    def connect(self) -> tuple:
        """(communication layer, RPC handler, remote computer) for the current token."""
        token = self._token()
        layer = QuandelaCommunicationLayer(self.device, token=token, url=self.url)
        rpc = RPCHandler(self.device, url=self.url, token=token)
        return layer, rpc, RemoteComputer(layer)

    def _connection(self) -> tuple:
        return self.client

    def is_transient(self, exc: BaseException) -> bool:
        return _transient(exc)

    def answer_status(self, exc: BaseException) -> int | None:
        return _status_code(exc) if isinstance(exc, requests.RequestException) else None

    def limit_reached(self, exc: BaseException):
        """The account's limits, from the service's own answer to the create (a 4xx); an error
        of ours that quotes the same words is not one."""
        status = _status_code(exc) if isinstance(exc, requests.RequestException) else None
        if status is None or not 400 <= status < 500:
            return None
        text = str(exc)
        if NO_ROOM.search(text) or CREDITS_HELD.search(text):
            return NoRoomYet
        if CREDITS_SPENT.search(text):
            return QuotaSpent
        return None

    def refusal(self, exc: Exception) -> Exception:
        if isinstance(exc, requests.RequestException):  # 4xx: bad token, unknown platform, ...
            return RuntimeError(f"the Quandela cloud refused: {_text(exc)}")
        return exc

    # -- submission

    def submit(self, tasks: list[Task], seed, tag: str) -> str:
        parts = _parts(tasks)
        known = self._found.pop(tag, {})
        ids: list[str] = []
        for index, positions in enumerate(parts):
            name = _part_name(tag, index, len(parts))
            job_id = known.get(name)
            if job_id is None:
                part_seed = None if seed is None else seed + positions[0]
                try:
                    job_id = self._submit_part([tasks[p] for p in positions], part_seed, tag, name)
                except (TransientBackendError, SubmissionUnknown):
                    raise
                except (NoRoomYet, QuotaSpent) as exc:
                    if ids:  # not "nothing was created" (the tag would be given up): try later
                        raise TransientBackendError(
                            f"{name} was turned away after {len(ids)} parts of the group were "
                            f"created ({exc}); the next try looks the group up and sends only "
                            "the parts it lacks") from None
                    raise
                except Exception as exc:
                    if ids:  # earlier parts exist (and are paid for): this is no refusal of all
                        raise SubmissionUnknown(f"{name} was refused after {len(ids)} parts of the "
                                                f"group were created: {_text(exc)}") from None
                    raise
            ids.append(job_id)
        return _handle(ids)

    def _submit_part(self, tasks: list[Task], seed, tag: str, name: str) -> str:
        experiment, state = load(tasks[0].program_content)  # a bad program fails here, for good
        experiment.with_input(state)
        if experiment.min_photons_filter is None:  # every photon but the heralded ones
            heralded = sum(experiment.in_heralds.values())
            experiment.min_detected_photons_filter(experiment.input_state.n - heralded)

        def prepare() -> tuple:  # nothing is sent yet: retried as any call
            layer, _, computer = self._connection()
            computation = self._computation(computer, experiment, tasks, tag, name)
            with self._payload_lock:
                seeded = seed is not None and "seed" in computer.available_parameters
                computer.parameters = {"seed": int(seed)} if seeded else {}
                return layer, computer.prepare_payload(computation)

        layer, payload = self.call(prepare)
        # Sent once: a lost answer goes back to the engine, which looks the tag up first; a
        # queue without room is the service's refusal (limit_reached), so nothing is asked first.
        return self.create(layer.send, payload)

    @staticmethod
    def _computation(computer, experiment, tasks: list[Task], tag: str, name: str):
        shots = max(task.shots for task in tasks)
        factory = ExecutionFactory(computer, experiment, max_shots_per_call=shots)
        for task in tasks:
            iteration: dict = {"max_samples": int(task.shots), "max_shots": int(task.shots)}
            if task.params:
                iteration["circuit_params"] = dict(task.params)
            factory.add_iteration(**iteration)
        computation = factory.build_computation("sample_count")
        computation.add_params(max_samples=shots)
        computation.job_name = name
        computation.job_group_name = tag
        computation.validate()
        computer.validate_single(computation)
        return computation

    # -- reconciliation

    def _lookup(self, tag: str) -> dict:
        """{job name: job id} of the jobs the service holds in the group ``tag``, oldest first."""
        _, rpc, _ = self._connection()
        query = urllib.parse.urlencode({"job_group_name": tag})
        try:
            answer = rpc.get_request(f"{rpc.build_endpoint('/api/jobs')}?{query}")
        except requests.HTTPError as exc:
            if _status_code(exc) in LOOKUP_MISSING:
                raise LookupUnsupported(
                    f"the Quandela cloud at {rpc.url} cannot look up job group {tag!r} (HTTP "
                    f"{_status_code(exc)}): qrun cannot tell whether its earlier submission of this "
                    f"job was accepted. Look for job group {tag!r} on {self.device} in the cloud's "
                    f"job list; if it is not there, `qrun retry --resubmit-unresolved` submits "
                    f"the job anew") from None
            raise
        jobs: dict = {}
        for job in answer.get("jobs", []):
            if job.get("job_group_name") == tag and job.get("platform_name", self.device) == self.device:
                jobs.setdefault(job["job_name"], job["job_id"])
        return jobs

    def find(self, tag: str) -> str | None:
        jobs = self.call(self._lookup, tag)
        if not jobs:
            return None
        if tag in jobs:
            return jobs[tag]
        totals = {int(name.rsplit("/", 1)[1]) for name in jobs
                  if re.fullmatch(re.escape(tag) + r":\d+/\d+", name)}
        if len(totals) == 1:
            total = totals.pop()
            names = [_part_name(tag, i, total) for i in range(total)]
            if all(name in jobs for name in names):
                return _handle([jobs[name] for name in names])
        self._found[tag] = jobs  # some parts were accepted: submit() sends only the others
        return None

    # -- following a job

    def _status(self, job_id: str):
        layer, _, _ = self._connection()
        status = _about_job(job_id, layer.get_job_status, job_id)
        if status is None:  # the SDK's word for a refresh that failed in a way that may pass
            raise _Busy(f"no status for job {job_id} now")
        return status

    def poll(self, handle: str) -> RemoteStatus:
        states, words, errors = [], [], []
        for job_id in _ids(handle):
            status = self.call(self._status, job_id)
            state = STATES.get(status.status, "queued")
            states.append(state)
            words.append(RunningStatus.to_server_response(status.status))
            if state in ("failed", "cancelled"):
                message = status.stop_message or status.message or f"job {job_id} {words[-1]}"
                errors.append(message if len(_ids(handle)) == 1 else f"job {job_id}: {message}")
        for final in ("failed", "cancelled"):
            if final in states:
                return RemoteStatus(state=final, provider_state=",".join(words),
                                    error=f"{self.device}: " + "; ".join(errors))
        state = "done" if all(s == "done" for s in states) else \
            "running" if any(s in ("running", "done") for s in states) else "queued"
        return RemoteStatus(state=state, provider_state=",".join(words))

    def fetch(self, handle: str, tasks: list[Task]) -> list:
        parts = _parts(tasks)
        ids = _ids(handle)
        if len(ids) != len(parts):
            raise RuntimeError(f"handle {handle} holds {len(ids)} jobs for {len(parts)} programs")
        outcomes: list = [None] * len(tasks)
        for job_id, positions in zip(ids, parts):
            layer, _, _ = self._connection()
            results = self.call(_about_job, job_id, layer.get_results, job_id)
            listed = results.get(KEY_RESULTS_LIST) if isinstance(results, dict) else None
            if not isinstance(listed, list) or len(listed) != len(positions):
                raise RuntimeError(f"job {job_id} returned {len(listed or [])} results for "
                                   f"{len(positions)} iterations")
            used = [result.get(KEY_SHOTS_USED) for result in listed]
            self._shots_used[job_id] = _total(used)
            for position, result in zip(positions, listed):
                counts = result.get(KEY_RESULTS)
                if hasattr(counts, "items"):
                    outcomes[position] = {str(state): int(count) for state, count in counts.items()}
                else:
                    outcomes[position] = TaskFailed(f"{self.device}: {counts}")
        return outcomes

    def job_report(self, handle: str) -> dict:
        """What the cloud says of done jobs: each one's status answer (duration, shots) and
        its results' nb_shots_used (kept by fetch), and the platform it ran on."""
        ids = _ids(handle)
        answers = [self.call(self._status_answer, job_id) for job_id in ids]
        used = _total([self._shots_used.pop(job_id, None) for job_id in ids])
        shots = _total([answer.get("shots") for answer in answers])
        return {"usage": {"tasks": len(ids), "shots": used if shots is None else shots,
                          "seconds": _total([answer.get("duration") for answer in answers]),
                          KEY_SHOTS_USED: used},
                "calibration": self._calibration()}

    def _status_answer(self, job_id: str) -> dict:
        _, rpc, _ = self._connection()
        answer = _about_job(job_id, rpc.get_job_status, job_id)
        return answer if isinstance(answer, dict) else {}

    def _calibration(self) -> dict:
        if self._platform is None:
            layer, _, _ = self._connection()
            self._platform = _calibration(self.device, self.call(layer.get_platform_details))
        return self._platform

    def cancel(self, handle: str) -> None:
        for job_id in _ids(handle):
            try:
                layer, _, _ = self._connection()
                self.call(_about_job, job_id, layer.cancel, job_id)
            except JobNotFound:
                continue  # gone: nothing left to cancel
            except RuntimeError:  # refused: already finished? then there is nothing to cancel
                if not self.call(self._status, job_id).completed:
                    raise

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("perceval-quandela",))}
