"""A cloud provider inside the test process: qrun's engine, store and API run for real,
the provider is a dictionary. Each way a real service misbehaves is a switch, so the
engine's rules (never submit while a tag's fate is unknown, distrust a handle whose job
carries another tag, leave a silent service) are tested in milliseconds.

Its jobs finish at once; a job's counts name the job itself (`{"<handle>": shots}`), so a
test can tell whose result qrun stored.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter

from qrun.providers.base import JobNotFound, NoRoomYet, RemoteStatus, TransientBackendError

FAILURE_TEXT = "the memory device failed this job (injected)"


class MemoryCloud:
    """The switches below, and the shares the fakes take too (error_rate: calls answered as
    a busy service; fail_jobs: jobs that end failed; lose_after_accept: created jobs whose
    answer is lost), drawn from a seeded random source."""

    def __init__(self, error_rate: float = 0.0, fail_jobs: float = 0.0,
                 lose_after_accept: float = 0.0, stall: bool = False, latency: float = 0.0,
                 seed: int = 0):
        self.error_rate, self.fail_jobs, self.lose_after_accept = error_rate, fail_jobs, lose_after_accept
        self.latency = latency
        self.random = random.Random(seed)
        self.injected: Counter = Counter()  # "503", "429", "lost", "failed job" -> how many, as the fakes count
        self.jobs: dict = {}  # handle -> {"tag": str, "shots": [int], "state": str}
        self.accepted: Counter = Counter()  # tag -> jobs created with it
        self.lookups: Counter = Counter()  # tag -> lookups asked
        self.lose_answers = False  # a created job's answer is lost (the job exists)
        self.refuse_lookups = False  # every lookup is refused, as with an expired credential
        self.refuse_submissions = False
        self.busy_submissions = 0  # the next N submissions are answered 429, nothing created
        self.full_submissions = 0  # the next N are turned away: no room for more jobs (NoRoomYet)
        self.stall = stall  # created jobs stay queued
        self.failures_pass = False  # failed jobs say a new attempt may succeed (a device fault)
        self.silent = threading.Event()  # set: every call hangs until it is cleared
        self.released = threading.Event()
        self.hanging = threading.Event()  # some call hangs on the silent service
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- what a test does to the service

    def forget_everything(self, reuse_ids: bool = False) -> None:
        """Restored from an old backup: no job is known; with ``reuse_ids`` new jobs get
        the handles the forgotten ones had."""
        with self._lock:
            self.jobs.clear()
            if reuse_ids:
                self._ids = itertools.count(1)

    def plant(self, tag: str, shots: list) -> str:
        """A job someone else submitted (another campaign, another user)."""
        return self._create(tag, shots)

    def _chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self.random.random() < share

    def _busy_sometimes(self) -> None:
        if self._chance(self.error_rate):
            self.injected["503"] += 1
            raise TransientBackendError("HTTP 503: the memory service is busy (injected)")

    def _create(self, tag: str, shots: list) -> str:
        failed = self._chance(self.fail_jobs)
        if failed:
            self.injected["failed job"] += 1
        with self._lock:
            handle = f"job-{next(self._ids)}"
            self.jobs[handle] = {"tag": tag, "shots": shots,
                                 "state": "queued" if self.stall else "failed" if failed else "done"}
            self.accepted[tag] += 1
        return handle

    def _hang_if_silent(self) -> None:
        if self.silent.is_set():
            self.hanging.set()
        while self.silent.is_set() and not self.released.is_set():
            self.released.wait(0.05)

    # -- the remote adapter contract (qrun/backends/base.py)

    def submit(self, tasks, seed, tag):
        self._hang_if_silent()
        self._busy_sometimes()
        with self._lock:
            busy, self.busy_submissions = self.busy_submissions > 0, max(0, self.busy_submissions - 1)
        if busy:
            raise TransientBackendError("HTTP 429: too many requests (nothing was created)")
        with self._lock:
            full, self.full_submissions = self.full_submissions > 0, max(0, self.full_submissions - 1)
        if full:
            self.injected["no room"] += 1
            raise NoRoomYet("the account holds as many unfinished jobs as it may (injected)")
        if self.refuse_submissions:
            raise RuntimeError("HTTP 401: the credential was refused")
        handle = self._create(tag, [task.shots for task in tasks])
        if self.lose_answers or self._chance(self.lose_after_accept):
            self.injected["lost"] += 1
            raise TransientBackendError("the answer was lost after the job was created")
        return handle

    def find(self, tag):
        self._hang_if_silent()
        self._busy_sometimes()
        self.lookups[tag] += 1
        if self.refuse_lookups:
            raise RuntimeError("HTTP 401: the credential was refused")
        with self._lock:
            return next((h for h, job in self.jobs.items() if job["tag"] == tag), None)

    def poll(self, handle):
        self._hang_if_silent()
        self._busy_sometimes()
        job = self.jobs.get(handle)
        if job is None:
            raise JobNotFound(f"no job {handle}")
        state = job["state"]
        return RemoteStatus(state=state, provider_state=state.upper(), tags=(job["tag"],),
                            error=FAILURE_TEXT if state == "failed" else None,
                            transient=self.failures_pass)

    def fetch(self, handle, tasks):
        job = self.jobs.get(handle)
        if job is None:
            raise JobNotFound(f"no job {handle}")
        return [{handle: shots} for shots in job["shots"]]

    def cancel(self, handle):
        job = self.jobs.get(handle)
        if job is None:
            raise JobNotFound(f"no job {handle}")
        job["state"] = "cancelled"

    def metadata(self):
        return {"provider": "memory", "device": "memory"}
