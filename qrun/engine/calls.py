"""Work in flight (a local run or a provider call), and calls to cloud providers, made in
threads: one submission with its lookups, and the threads themselves. Nothing here touches the state database; what a call learned comes
back to the engine's loop whole, errors included, and is committed there."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..providers.base import TaskFailed, TransientBackendError
from ..store import JobRow
from .remote import Call, RemoteJob

CALL_THREADS = 64  # concurrent calls to cloud providers


@dataclass
class Op:
    """Work in flight: a local run, or one call to a provider about a remote job."""

    kind: Call
    job: JobRow
    attempt_id: int
    slices: list
    remote: RemoteJob | None = None  # what a provider call is about (None for a local run)
    started: float = field(default_factory=time.time)

    @property
    def about(self) -> RemoteJob:
        if self.remote is None:
            raise TypeError(f"a local run of job {self.job.id} has no remote job")
        return self.remote


def fetch_and_report(adapter, handle: str, tasks: list) -> tuple[list, dict | None]:
    """A done job's counts, and what its provider reports of it (usage, calibration) where
    the adapter can tell (``job_report``). The report is asked after the results are in
    hand, and its failure costs only the report: the results are what was paid for."""
    counts = adapter.fetch(handle, tasks)
    ask = getattr(adapter, "job_report", None)
    if ask is None:
        return counts, None
    try:
        return counts, ask(handle)
    except Exception as exc:
        return counts, {"usage": None, "calibration": None, "error": describe(exc)}


def describe(exc: BaseException | None) -> str:
    """An error as one line of text, as it is recorded."""
    return TaskFailed.of(exc).error if exc is not None else "no reason given"


@dataclass
class SubmitOutcome:
    """What a submission call learned; it never raises, so none of it is lost."""

    absent: list[int]  # attempt ids whose tags the provider answered it does not hold
    handle: str | None = None
    found: tuple[int, str] | None = None  # (attempt id, tag) of an earlier attempt found by its tag
    error: BaseException | None = None  # the submission's, or the lookup's, error
    lookup_of: str | None = None  # the tag whose lookup failed with `error`
    group: str | None = None  # the provider-side group (IBM Batch) the job went into (groups.py)

    @property
    def unanswered(self) -> bool:
        return isinstance(self.error, TransientBackendError)


def submit_once(adapter, tasks: list, seed, tag: str, lookups: list,
                rejoin: str | None = None) -> SubmitOutcome:
    """Submit a job once: every tag of it that may have landed is looked up first, and a
    lookup that fails stops everything (nothing is sent while a job's fate is unknown).
    ``rejoin`` is the group an earlier apply kept open for the backend (groups.py)."""
    absent: list[int] = []
    for looked_attempt, looked_tag in lookups:
        try:
            handle = adapter.find(looked_tag)
        except Exception as exc:
            return SubmitOutcome(absent, error=exc, lookup_of=looked_tag)
        if handle is not None:
            return SubmitOutcome(absent, handle=handle, found=(looked_attempt, looked_tag))
        absent.append(looked_attempt)
    if rejoin is not None and hasattr(adapter, "rejoin_group"):
        adapter.rejoin_group(rejoin)  # best effort: the adapter opens a new group otherwise
    try:
        handle = adapter.submit(tasks, seed, tag)
    except Exception as exc:
        return SubmitOutcome(absent, error=exc)
    group_id = getattr(adapter, "group_id", None)
    return SubmitOutcome(absent, handle=handle, group=group_id() if group_id else None)


class CallThreads:
    """Threads for calls to providers, started as needed up to ``size``.

    Daemon threads, unlike ThreadPoolExecutor's (which the interpreter joins at exit): a
    call to a service that never answers must not keep qrun running after the engine has
    left it. Such a call's job stays as the state says (submitting or submitted), and the
    next apply looks it up or re-attaches it. The threads never touch the state database.
    """

    def __init__(self, size: int = CALL_THREADS):
        self._size = size
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        self._work.put((future, function, args))
        with self._lock:
            if self._idle > 0:  # a waiting thread takes it
                self._idle -= 1
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._serve, name="qrun-call", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, function, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as exc:  # noqa: BLE001 - the engine judges it
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Idle threads end; busy ones end with their call (or with the process)."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._work.put(None)
