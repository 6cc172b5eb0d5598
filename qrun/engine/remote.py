"""A remote job as one run follows it: the phase it is in, its handle, its polling schedule.

The store keeps a job's durable state (submitting, submitted, running, done...); this is
the run's own view of a remote job between two commits: which call about it is in flight,
and when it is next polled. One object per job, so no call about a job can start while
another is under way (a phase change that the table below does not allow raises).

    SUBMITTING --handle--> WAITING --due--> POLLING --queued/running--> WAITING
                              |                |---done--> FETCHING --retry later--> WAITING
                              |                `--no such job / other tag--> FINDING
                              `--timed out--> CANCELLING --retry later--> WAITING
    FINDING --found under its tag--> WAITING

A job leaves the run (the engine forgets its object) when it completes, fails, is deferred,
or is left to the next apply; those are the store's states, not phases.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field

from ..store import JobRow

POLL_FIRST = 0.0  # poll a new remote job at once: a fast backend may be done already
POLL_INTERVAL = 0.25  # then every 0.25 s, slowing down by half each time...
POLL_MAX = 30.0  # ...to this interval
POLL_GROWTH = 1.5


class Call(enum.Enum):
    """What an operation in flight does: a local run, or one call to a provider."""

    RUN = "run"
    SUBMIT = "submit"  # look every unknown tag up, then submit if none is found
    POLL = "poll"
    FETCH = "fetch"
    CANCEL = "cancel"
    FIND = "find"  # look the tag up: the handle is no longer trusted


class Phase(enum.Enum):
    SUBMITTING = "submitting"  # the lookups of its unknown tags, then its submission
    WAITING = "waiting"  # submitted: no call in flight, polled when due
    POLLING = "polling"
    FETCHING = "fetching"
    FINDING = "finding"  # its handle is not trusted: its tag is being looked up
    CANCELLING = "cancelling"


# The phase a call puts a job in.
PHASE_OF_CALL = {Call.SUBMIT: Phase.SUBMITTING, Call.POLL: Phase.POLLING,
                 Call.FETCH: Phase.FETCHING, Call.FIND: Phase.FINDING,
                 Call.CANCEL: Phase.CANCELLING}

TRANSITIONS = {
    Phase.SUBMITTING: {Phase.WAITING},
    Phase.WAITING: {Phase.POLLING, Phase.CANCELLING},
    Phase.POLLING: {Phase.WAITING, Phase.FETCHING, Phase.FINDING},
    Phase.FETCHING: {Phase.WAITING, Phase.FINDING},
    Phase.FINDING: {Phase.WAITING},
    Phase.CANCELLING: {Phase.WAITING},
}


class IllegalPhaseChange(RuntimeError):
    """The engine asked for a call its own rules exclude (a bug in qrun, never an input)."""


@dataclass
class RemoteJob:
    """A remote job this run follows: its attempt, handle, phase and polling schedule."""

    job: JobRow
    attempt_id: int
    tag: str
    slices: list
    phase: Phase = Phase.SUBMITTING
    handle: str | None = None
    next_poll: float = 0.0
    interval: float = POLL_INTERVAL / POLL_GROWTH
    submitted_at: float = 0.0
    # (attempt id, tag) whose fate at the provider is unknown: looked up, oldest first,
    # before the job is submitted (an earlier call may have landed).
    lookups: list = field(default_factory=list)
    unanswered_polls: int = 0
    refused_polls: int = 0
    distrust: str | None = None  # why the handle is no longer trusted (a FIND is under way)

    @classmethod
    def attached(cls, job: JobRow, attempt_id: int, tag: str, slices: list, handle: str) -> RemoteJob:
        """A job an earlier run left submitted, re-attached by its handle."""
        remote = cls(job=job, attempt_id=attempt_id, tag=tag, slices=slices)
        remote.follow(handle)
        return remote

    @property
    def busy(self) -> bool:
        """A call about it is in flight."""
        return self.phase is not Phase.WAITING

    def move(self, phase: Phase) -> None:
        if phase is not self.phase and phase not in TRANSITIONS[self.phase]:
            raise IllegalPhaseChange(f"job {self.job.id}: {self.phase.value} -> {phase.value}")
        self.phase = phase

    def start(self, call: Call) -> None:
        self.move(PHASE_OF_CALL[call])

    def follow(self, handle: str) -> None:
        """Submitted (or found again) under ``handle``: poll it from now on."""
        self.move(Phase.WAITING)
        self.handle = handle
        self.lookups = []
        self.distrust = None
        self.submitted_at = time.time()
        self.next_poll = time.time() + POLL_FIRST
        self.interval = POLL_INTERVAL / POLL_GROWTH

    def poll_later(self) -> None:
        """Back to waiting; the next poll comes later each time, with jitter."""
        self.move(Phase.WAITING)
        self.interval = min(POLL_MAX, self.interval * POLL_GROWTH)
        self.next_poll = time.time() + self.interval * random.uniform(0.8, 1.2)

    def due(self, now: float) -> bool:
        return self.phase is Phase.WAITING and self.next_poll <= now

    def answered(self) -> None:
        """A poll got an answer: the counts of unanswered and refused polls start again."""
        self.unanswered_polls = self.refused_polls = 0


@dataclass
class Service:
    """What one run knows of a backend's service: its pace and whether it answers."""

    last_submit: float = 0.0  # when a job was last sent to it (its submit_rate)
    silent_since: float | None = None  # since when none of its calls got an answer
    left: bool = False  # left to the next apply: it stopped answering
    room_at: float = 0.0  # no submission before this: the account had no room (NoRoomYet)
    room_waits: int = 0  # submissions turned away in a row, for the wait's backoff
    closed: str | None = None  # why nothing more is submitted in this run (QuotaSpent)

    def rate_allows(self, rate: float | None, now: float) -> bool:
        """Whether a submission may go now under ``rate`` per second; if so, it is counted."""
        if not rate:
            return True
        if now - self.last_submit < 1.0 / rate:
            return False
        self.last_submit = now
        return True

    def heard(self, answered: bool, asked_at: float) -> None:
        if answered:
            self.silent_since = None
        elif self.silent_since is None:
            self.silent_since = asked_at
