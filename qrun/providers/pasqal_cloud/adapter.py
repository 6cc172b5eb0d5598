"""pasqal.cloud: Pulser sequences on Pasqal Cloud (emulators and QPUs), through pasqal-cloud.

One qrun job is one Pasqal *batch*: the batch carries the sequence (with its variables still
free, and a measurement added when it has none, as pulser's own Pasqal connection does) and
one Pasqal *job* per task, with that task's variables (integers for int variables, as
`sources.pulser.build` binds them) and its shots as `runs`. A task whose program differs
from the batch's most common one travels as its own job sequence, built with its values. A
task whose values the sequence refuses is not sent: it fails on its own, the others run.

Idempotency: the batch is created with qrun's tag as a batch tag (`tags=[tag]`), and `find`
lists the project's batches filtered by that tag (`GET /batches?tag=...`), at Pasqal.

Results: each job's counter maps bitstrings to counts, atom 0 of the register leftmost,
which is qrun's convention already (see base.py). A batch that ends in ERROR is fetched like
a done one: its jobs that finished keep their counts, the others fail with Pasqal's errors.

Credentials (`credentials: {env: VAR}`, read by the cloud core at each use, never stored;
Pasqal has no saved profiles): VAR holds either an access token
(sent as a bearer token, read again at every request, so it may be rotated) or
`email:password`, with which qrun logs in through Pasqal's token endpoint and renews the
token itself (the better choice for campaigns that outlast a token). Without
`options.project_id`, the account's only project is used (an error names them when several).

`options.endpoint` points the SDK at another Pasqal deployment: a known one (preprod, dev,
the Saudi region) takes its matching login service; any other address (a local fake service
in rehearsals and tests) serves the core API under /core-fast, the account API under
/account and the token endpoint at /oauth/token. These are the SDK's own `endpoints` and
token-provider settings; the code path is otherwise the same as in real use.

Retries: the SDK's own retry loop sleeps 2 to 32 s and re-sends a batch creation that was
answered 500/502/504, which could create the batch twice. So the adapter gives the SDK
(through its `client_class` hook) an HTTP session that turns connection errors, timeouts,
429 and 5xx into an exception the SDK does not retry, keeping the status answered. Reads and
cancellations (GET, PATCH) are then retried by the session under the cloud core's call
policy (qrun.providers.cloud), Retry-After honoured; a batch creation is made once, under the
core's creation rule: a 429 (or 408) turned it away before any work and is sent again in
place, Retry-After honoured; a lost answer or a 5xx goes back to the engine, which looks the
tag up before it sends anything again.

Account limits: pasqal-cloud 0.24 knows none (no error of its own, no availability call; it
retries 429 honouring Retry-After), and the Pasqal documentation read for this names no limit
on unfinished batches nor an answer for one, so no answer is read as "no room yet" rather
than guess its words (docs/cloud-pasqal_cloud.md says what was read).

Reports (`job_report`): Pasqal reports no cost, credit or duration for a batch; what it says
is each job's `runs` and the batch's `start_datetime`/`end_datetime` (pasqal_cloud batch.py
and job.py), read from the answers `fetch` already had. The usage is 1 task (one batch per
qrun job; Pasqal's billing is not documented), the jobs' runs as shots, and the seconds
between the batch's start and end. Pasqal publishes no calibration identity: the calibration
recorded is the device specs' `version` (Pulser's abstract-repr schema version, not a device
version) and `pulser_version`, with a sha256 of the specs JSON text, read once per adapter
(`get_device_specs_dict()`, GET /api/v1/devices/specs).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from datetime import datetime
from urllib.parse import urlsplit

import requests

with warnings.catch_warnings():  # the SDK turns DeprecationWarnings on for the whole process
    from pasqal_cloud.authentication import PasswordGrantTokenProvider, TokenProvider, TokenProviderError
    from pasqal_cloud.endpoints import (
        AUDIENCE,
        AUTH0_TOKEN_PROVIDER_GRANT_TYPE,
        AUTH_CONFIG,
        PASQAL_ENDPOINTS,
        PUBLIC_CLIENT_ID,
        REALM,
        Endpoints,
        TokenProviderConf,
    )
    from pasqal_cloud.http_client import HTTPClient
    from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
    from pasqal_cloud.utils.filters import BatchFilters, PaginationParams
    from pulser.backend.remote import RemoteConnection

from qrun.providers.base import JobNotFound, RemoteStatus, Task, TaskFailed, TransientBackendError, sdk_versions
from qrun.providers.cloud import CloudAdapter, Credentials, retrying
from qrun.sources.pulser import build, load_sequence

SDK_PACKAGES = ("pasqal-cloud", "pulser-core")
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
REQUEST_TIMEOUT = 30.0  # seconds for one HTTP request

# Pasqal's batch states -> qrun's. ERROR: some jobs failed; the others may have results.
STATES = {"PENDING": "queued", "PAUSED": "queued", "RUNNING": "running", "DONE": "done",
          "ERROR": "done", "CANCELED": "cancelled", "TIMED_OUT": "failed"}
TERMINAL = frozenset({"DONE", "ERROR", "CANCELED", "TIMED_OUT"})


class PasqalCloudError(RuntimeError):
    """Pasqal Cloud refused or failed something in a way that trying again will not fix."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of the refusal, when the SDK kept it


class _Transient(TransientBackendError):
    """One request that may succeed if sent again (no answer, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        # The HTTP status the service answered with (None: no answer). The creation rule
        # reads it: a 429 turned the batch away before any work, so it is sent again in place.
        self.status = status


def check_program(program, device: str, options: dict) -> str | None:
    """Pasqal runs measured sequences: one without a measurement must address one basis."""
    try:
        RemoteConnection._add_measurement_to_sequence(load_sequence(program.content, program.origin))
    except ValueError as exc:
        return f"{program.origin} cannot run on Pasqal Cloud: {' '.join(str(exc).split())}"
    return None


# -- HTTP: the session the SDK uses, with the cloud core's call policy

def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _Transient)


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


class _Session(requests.Session):
    """requests.Session with a timeout, transient failures raised as _Transient (which the
    SDK's own retry loop lets through), and idempotent requests retried here."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        if method.upper() not in ("GET", "PATCH"):  # a creation: the adapter decides
            return self._once(method, url, *args, **kwargs)
        return retrying(Adapter.policy, _is_transient, f"Pasqal Cloud ({method} {urlsplit(url).path})",
                        self._once, method, url, *args, **kwargs)

    def _once(self, method, url, *args, **kwargs):
        where = f"{method} {urlsplit(url).path}"
        try:
            response = super().request(method, url, *args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{where}: no answer ({type(exc).__name__})") from None
        except TokenProviderError as exc:  # the login, made while signing this request
            cause = exc.args[0] if exc.args else None
            status = getattr(getattr(cause, "response", None), "status_code", None)
            if status in TRANSIENT_STATUS:
                raise _Transient(f"login: HTTP {status}", status=status) from None
            raise PasqalCloudError(f"Pasqal Cloud refused the login: {cause}") from None
        status = response.status_code
        if status in TRANSIENT_STATUS:
            raise _Transient(f"{where}: HTTP {status}", _retry_after(response), status)
        if status >= 400 and "json" not in response.headers.get("Content-Type", ""):
            # The SDK's errors read a JSON body; say plainly what came instead.
            text = " ".join(response.text.split())[:300]
            raise PasqalCloudError(f"Pasqal Cloud answered {where} with HTTP {status}: {text}", status)
        return response


class _HTTPClient(HTTPClient):
    """The SDK's HTTP client on qrun's session (the SDK's `client_class` hook)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        verify = self.session.verify
        self.session = _Session()
        self.session.verify = verify


class _EnvToken(TokenProvider):
    """A bearer token read from the environment at every request (never kept)."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

    def get_token(self) -> str:
        return self.credentials.secret()


def _login(username: str, password: str, configuration) -> PasswordGrantTokenProvider:
    """Log in with email and password; the errors told apart: what may pass, what will not."""
    try:
        return _sdk(PasswordGrantTokenProvider, username, password, configuration)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"login: no answer ({type(exc).__name__})") from None
    except (TokenProviderError, requests.HTTPError) as exc:
        cause = exc.args[0] if isinstance(exc, TokenProviderError) and exc.args else exc
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if status in TRANSIENT_STATUS:
            raise _Transient(f"login: HTTP {status}", status=status) from None
        raise PasqalCloudError(f"Pasqal Cloud refused the login: {cause}", status) from None


def _sdk(function, *args, **kwargs):
    """Call the SDK; its errors derive from BaseException: make them ordinary exceptions."""
    try:
        return function(*args, **kwargs)
    except Exception:
        raise
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        response = getattr(exc.__cause__, "response", None)  # the SDK's errors wrap the HTTPError
        raise PasqalCloudError(" ".join(str(exc).split()) or type(exc).__name__,
                               getattr(response, "status_code", None)) from None


def _about_batch(handle: str, function, *args):
    """Call the SDK about one batch; Pasqal's 404 for it means the batch is gone."""
    try:
        return _sdk(function, *args)
    except PasqalCloudError as exc:
        if exc.status == 404:
            raise JobNotFound(f"Pasqal Cloud has no batch {handle}: {exc}") from None
        raise


def _services(endpoint: str | None) -> tuple:
    """(Endpoints, login configuration) for options.endpoint; (None, None): the SDK's own."""
    if not endpoint:
        return None, None
    base = endpoint.rstrip("/")
    for name, known in PASQAL_ENDPOINTS.items():
        if known.core.rsplit("/core-fast", 1)[0] == base:
            return known, AUTH_CONFIG.get(name if name.startswith("sa-") else f"fr-{name}")
    return (Endpoints(core=f"{base}/core-fast", account=f"{base}/account"),
            TokenProviderConf(token_endpoint=f"{base}/oauth/token", public_client_id=PUBLIC_CLIENT_ID,
                              audience=AUDIENCE, realm=REALM,
                              grant_type=AUTH0_TOKEN_PROVIDER_GRANT_TYPE))


# -- the adapter

class Adapter(CloudAdapter):
    provider = "pasqal.cloud"
    service_name = "Pasqal Cloud"
    credential_kinds = ("env",)
    credentials_required = True
    credentials_note = "a variable holding a token or email:password; Pasqal has no saved profiles"

    def __init__(self, device: str, options: dict, credentials: dict):
        super().__init__(device, options, credentials)
        self.endpoint = self.options.get("endpoint")
        self.project_id = self.options.get("project_id")
        self._sequences: dict = {}  # program digest -> measured, parametrized Sequence
        self._tags: dict = {}  # batch id -> its tags, read once: a handle is trusted by its tag
        self._usage: dict = {}  # batch id -> its usage, from the answers fetch read (job_report pops it)
        self._specs: dict | None = None  # {device_type: specs JSON text}, read once per adapter

    # -- the cloud core's hooks

    def connect(self) -> PasqalCloudClient:
        """The SDK client (making it may log in, and list the account's projects)."""
        endpoints, login = _services(self.endpoint)
        value = self.credentials.secret()
        token_provider: TokenProvider
        if ":" in value and "@" in value.split(":", 1)[0]:  # email:password (tokens hold no ':')
            username, password = value.split(":", 1)
            token_provider = _login(username, password, login or TokenProviderConf.from_region(None))
        else:
            token_provider = _EnvToken(self.credentials)
        client = PasqalCloudClient(token_provider=token_provider, endpoints=endpoints,
                                   project_id=self.project_id, client_class=_HTTPClient)
        if not client.project_id:
            client.project_id = self._only_project(client)
        return client

    def is_transient(self, exc: BaseException) -> bool:
        return _is_transient(exc)  # GETs and PATCHes are retried by the session already

    def answer_status(self, exc: BaseException) -> int | None:
        if isinstance(exc, (PasqalCloudError, _Transient)):
            return exc.status
        response = getattr(exc, "response", None)
        return getattr(response, "status_code", None) if isinstance(exc, requests.HTTPError) else None

    def _only_project(self, client) -> str:
        projects = _sdk(client.get_all_projects)
        if len(projects) == 1:
            return projects[0].id
        listed = ", ".join(f"{p.id} ({p.name})" for p in projects) or "none"
        raise PasqalCloudError(f"set options.project_id: this Pasqal account has "
                               f"{len(projects)} active projects: {listed}")

    # -- what qrun sends

    def _sequence(self, task: Task):
        sequence = self._sequences.get(task.program_digest)
        if sequence is None:
            sequence = RemoteConnection._add_measurement_to_sequence(
                load_sequence(task.program_content))
            self._sequences[task.program_digest] = sequence
        return sequence

    def _batch(self, tasks: list[Task]) -> tuple:
        """(batch sequence, Pasqal jobs, per task: its job's index or its TaskFailed).

        Deterministic in the tasks, so fetch recomputes it to match jobs to tasks."""
        loadable: Counter = Counter()
        for task in tasks:
            try:
                self._sequence(task)
                loadable[task.program_digest] += 1
            except Exception:  # reported per task below
                pass
        main = loadable.most_common(1)[0][0] if loadable else None
        jobs: list[dict] = []
        slots: list[int | TaskFailed] = []
        for task in tasks:
            try:
                sequence = self._sequence(task)
                built = build(sequence, task.params)  # refuse bad values before paying for them
                job: dict
                if task.program_digest == main:
                    job = {"runs": task.shots}
                    variables = _variables(sequence, task.params)
                    if variables:
                        job["variables"] = variables
                else:
                    job = {"runs": task.shots, "serialized_sequence": built.to_abstract_repr()}
            except Exception as exc:  # this task only
                slots.append(TaskFailed.of(exc))
                continue
            slots.append(len(jobs))
            jobs.append(job)
        if not jobs:
            errors = [slot.error for slot in slots if isinstance(slot, TaskFailed)]
            raise PasqalCloudError(f"no task of this job can be sent: {errors[0]}")
        sequence = self._sequences[main]
        return sequence.to_abstract_repr(), jobs, slots

    # -- the remote adapter contract (base.py)

    def submit(self, tasks: list[Task], seed, tag: str) -> str:
        """Create the batch, once (the cloud core's creation rule): a try whose answer was
        lost goes back to the engine, which looks the tag up before any new try. (Pasqal has
        no seed: emulators and QPUs sample on their own.)"""
        sequence, jobs, _ = self._batch(tasks)
        client = self.client
        batch = self.create(_sdk, client.create_batch, serialized_sequence=sequence, jobs=jobs,
                            open=False, device_type=self.device, tags=[tag])
        client.batches.pop(batch.id, None)  # the SDK would keep every batch it saw
        return batch.id

    def find(self, tag: str) -> str | None:
        client = self.client
        filters = BatchFilters(tag=tag, project_id=client.project_id)
        offset, found = 0, []
        while True:
            page = _sdk(client.get_batches, filters=filters,
                        pagination_params=PaginationParams(offset=offset))
            found += [b for b in page.results if tag in (b.tags or [])]
            offset += len(page.results)
            if not page.results or offset >= page.total:
                break
        if not found:
            return None
        return min(found, key=lambda b: b.created_at).id  # the first, should there be two

    def poll(self, handle: str) -> RemoteStatus:
        client = self.client
        if handle not in self._tags:  # the status answer has no tags: read them once
            self._tags[handle] = tuple(self._get_batch(handle).tags or ())
        try:
            state = _about_batch(handle, client.get_batch_status, handle).value
        except KeyError:  # a state this SDK version does not name
            state = self._get_batch(handle).status
        return RemoteStatus(state=STATES.get(state, "queued"), provider_state=state,
                            error="Pasqal Cloud timed the batch out" if state == "TIMED_OUT" else None,
                            transient=state == "TIMED_OUT", tags=self._tags[handle])

    def fetch(self, handle: str, tasks: list[Task]) -> list:
        _, _, slots = self._batch(tasks)
        batch = self._get_batch(handle)
        jobs = _sdk(lambda: batch.ordered_jobs)
        sent = [slot for slot in slots if isinstance(slot, int)]
        if len(jobs) != len(sent):
            raise PasqalCloudError(f"batch {handle} holds {len(jobs)} jobs; qrun sent {len(sent)}")
        outcomes: list[dict | TaskFailed] = []
        for task, slot in zip(tasks, slots):
            if isinstance(slot, TaskFailed):
                outcomes.append(slot)
                continue
            job = jobs[slot]
            if job.runs is not None and job.runs != task.shots:
                raise PasqalCloudError(f"batch {handle}: job {job.id} has {job.runs} runs where "
                                       f"qrun sent {task.shots}")
            if job.status == "DONE":
                counter = _sdk(lambda job=job: job.result)
                if counter is None:
                    raise TransientBackendError(f"job {job.id} is done but its result is not there yet")
                outcomes.append({str(bits): int(count) for bits, count in counter.items()})
            elif job.status in ("PENDING", "RUNNING") and batch.status not in TERMINAL:
                raise TransientBackendError(f"job {job.id} is still {job.status}")
            else:
                errors = "; ".join(job.errors or []) or "no error given"
                outcomes.append(TaskFailed(f"Pasqal Cloud job {job.id} {job.status}: {errors}"[:2000]))
        self._usage[handle] = _usage(batch, jobs)
        return outcomes

    def job_report(self, handle: str) -> dict:
        """What Pasqal says of a done batch: its jobs' runs and its start and end (from the
        answers fetch read; asked again only if it did not), and the device specs it ran on."""
        usage = self._usage.pop(handle, None)
        if usage is None:
            batch = self.call(self._get_batch, handle)
            usage = _usage(batch, self.call(_sdk, lambda: batch.ordered_jobs))
        return {"usage": usage, "calibration": self._calibration()}

    def _calibration(self) -> dict | None:
        if self._specs is None:
            self._specs = dict(self.call(lambda: _sdk(self.client.get_device_specs_dict)))
        text = self._specs.get(self.device)
        if not isinstance(text, str):
            return None
        try:
            specs = json.loads(text)
        except ValueError:
            specs = {}
        return {"device_type": self.device, "version": specs.get("version"),
                "pulser_version": specs.get("pulser_version"),
                "specs_sha256": hashlib.sha256(text.encode()).hexdigest()}

    def cancel(self, handle: str) -> None:
        try:
            _about_batch(handle, self.client.cancel_batch, handle)
        except PasqalCloudError:
            if self.poll(handle).finished:  # ended meanwhile: nothing left to cancel
                return
            raise

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device, "sdk": sdk_versions(SDK_PACKAGES)}

    def _get_batch(self, handle: str):
        client = self.client
        batch = _about_batch(handle, client.get_batch, handle)
        client.batches.pop(handle, None)
        return batch


def _usage(batch, jobs) -> dict:
    """A batch's usage as Pasqal records it: unknown stays None."""
    runs = [job.runs for job in jobs]
    start, end = _instant(batch.start_datetime), _instant(batch.end_datetime)
    return {"tasks": 1, "shots": sum(runs) if runs and None not in runs else None,
            "seconds": _seconds(start, end),
            "start_datetime": batch.start_datetime, "end_datetime": batch.end_datetime,
            "jobs_count_per_status": dict(batch.jobs_count_per_status or {}) or None}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    try:
        return (end - start).total_seconds() if start and end else None
    except TypeError:  # one with a time zone, one without: no duration to tell
        return None


def _instant(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _variables(sequence, params: dict) -> dict:
    """The job's variables as `sources.pulser.build` binds them: int variables as ints."""
    return {name: int(round(value)) if sequence.declared_variables[name].dtype is int else float(value)
            for name, value in params.items()}
