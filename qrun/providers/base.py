"""What every adapter shares: the task it is handed, the outcome convention, SDK versions.

Outcome strings (qrun's one bit-order convention, for every provider):
    character i of an outcome is classical bit i, so the leftmost character is bit 0.
    The circuit `x q[0]; c[0] = measure q[0]; c[1] = measure q[1];` yields "10".
This is reading order, as Braket, Pulser and Perceval print their outcomes; Qiskit prints
bit 0 rightmost, so its adapter reverses its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Task:
    """One experiment (or one slice of its shots) for a local adapter to run."""

    program_format: str
    program_content: bytes
    program_item: int | None  # circuit index inside a multi-circuit file (None: its only one)
    program_digest: str
    params: dict
    shots: int


@dataclass(frozen=True)
class TaskFailed:
    """What an adapter returns, in place of counts, for a task that failed on its own.

    One bad circuit fails its own experiment, not the others sharing its job. The error is
    kept as text: provider exception classes do not always survive the trip between processes.
    """

    error: str

    @classmethod
    def of(cls, exc: BaseException) -> TaskFailed:
        text = " ".join(str(exc).split())
        return cls(f"{type(exc).__name__}: {text}"[:2000] if text else type(exc).__name__)


def run_each(tasks: list, seed: int | None, run_one) -> list:
    """Counts (or TaskFailed) per task, running them one by one with ``run_one(task, seed)``.

    A failing task fails alone; each task gets its own seed derived from the job's.
    """
    outcomes = []
    for position, task in enumerate(tasks):
        try:
            outcomes.append(run_one(task, None if seed is None else seed + position))
        except Exception as exc:  # this task only: the others still run
            outcomes.append(TaskFailed.of(exc))
    return outcomes


class TransientBackendError(Exception):
    """A failure worth trying again as is (lost connection, busy service, crashed worker)."""

    # What the last try failed with, when the error says that a call's tries are spent
    # (cloud.retrying): the cloud core tells a create that was only throttled by it.
    last_error: BaseException | None = None


class SubmissionUnknown(Exception):
    """A submission may have created a job, and the provider cannot tell now: a lookup by
    tag inside the submission failed, or the provider has none. The attempt's fate stays
    unknown (nothing is sent again) until a lookup answers. Any other exception from
    ``submit`` means the provider refused: it created nothing."""


class NoRoomYet(Exception):
    """The provider turned a submission away before any work because the account holds as
    many unfinished jobs as it may (IBM's error 3458): nothing was created. The engine
    sends it again once the provider has had time to finish one; the job never fails for it."""


class QuotaSpent(Exception):
    """The account's quota for the period is spent (IBM's error 4317): nothing was created,
    and nothing will be until the period renews. The engine stops submitting to that
    backend for this apply; what is left stays pending for a later one."""


class JobNotFound(Exception):
    """The provider answers, definitively, that it holds no job under a handle (a purged
    job, a service restored from a backup). Not a network error: the engine then looks the
    attempt's tag up, and an attempt found under neither is lost (it may be tried again)."""


@dataclass(frozen=True)
class RemoteStatus:
    """A remote job's state as qrun understands it, with the provider's own word for it."""

    state: str  # queued | running | done | failed | cancelled
    provider_state: str
    error: str | None = None
    transient: bool = False  # for a failed job: a new attempt may succeed (device fault)
    # The tags (names) the provider keeps with the job, where its status answer carries
    # them; None where it does not say. The engine trusts a handle only if its job carries
    # the attempt's own tag: a handle may name another job (ids handed out again).
    tags: tuple | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


Counts = dict[str, int]  # outcome string (qrun's bit order) -> how many shots gave it


@runtime_checkable
class LocalAdapter(Protocol):
    """A provider that computes in this process (a simulator). Created once per worker as
    ``Adapter(device=..., options=...)`` and handed one job's tasks at a time."""

    def run(self, tasks: list[Task], seed: int | None) -> list[Counts | TaskFailed]:
        """Counts (or TaskFailed) per task, in the tasks' order (see ``run_each``)."""
        ...

    def metadata(self) -> dict:
        """What is recorded with results: provider, device, SDK versions (sdk_versions)."""
        ...


@runtime_checkable
class RemoteAdapter(Protocol):
    """A provider's cloud. Created as ``Adapter(device=..., options=..., credentials=...)``
    where credentials hold references (a profile or variable name), never secrets.

    Each call raises TransientBackendError for what may pass (network, 429, 5xx) once its
    own bounded retries are spent (every call's time is bounded), JobNotFound from poll,
    fetch and cancel when the provider answers that the handle names no job, and any other
    exception for what will not pass (bad circuit, auth). From submit, TransientBackendError
    and SubmissionUnknown say the job may exist; anything else says the provider created
    nothing. The engine alone decides what is sent again: an adapter never resubmits.
    """

    def submit(self, tasks: list[Task], seed: int | None, tag: str) -> str:
        """Send one job carrying qrun's idempotency ``tag``; return its handle."""
        ...

    def find(self, tag: str) -> str | None:
        """The handle of the job the provider holds under ``tag``, or None if it has none."""
        ...

    def poll(self, handle: str) -> RemoteStatus: ...

    def fetch(self, handle: str, tasks: list[Task]) -> list[Counts | TaskFailed]:
        """Counts (or TaskFailed) per task of a done job, in qrun's bit order."""
        ...

    def cancel(self, handle: str) -> None: ...

    def metadata(self) -> dict: ...

    # Optional, asked once a job's results are fetched:
    #   def job_report(self, handle: str) -> dict
    # What the provider says of the done job: {"usage": {...}, "calibration": {...}}.
    # ``usage`` holds ``tasks``, ``shots`` and ``seconds`` as billed where the provider
    # reports them (None where it does not: unknown is never 0), beside its own fields by
    # their own names; ``calibration`` names what the device ran under (a properties'
    # last update, a specs version), or None. A failure here never fails the job.


@cache
def sdk_versions(packages: tuple) -> dict:
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def qiskit_key_to_qrun(key: str) -> str:
    """Qiskit prints classical bit 0 rightmost and separates registers with spaces."""
    return key.replace(" ", "")[::-1]
