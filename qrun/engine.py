"""Engine stage: the scheduler loop that takes stored jobs to done or failed.

The coordinator (this loop, in the main process) is the only writer of the state database.
Local simulation runs in a pool of worker processes that only compute: they receive a job's
tasks and return counts. Calls to cloud providers (submit, poll, fetch, cancel) run in a pool
of threads: they mostly wait on the network. Neither pool ever sees the database.

Each step is committed before the next begins.
  local job:  start_attempt (running) -> worker runs -> complete_job (results and done in one
              transaction) or fail_attempt (retry later under the policy, or failed)
  remote job: start_attempt (submitting: the intent, with its idempotency tag) -> submit ->
              record_submission (the handle) -> polls -> fetch -> complete_job
A crash anywhere leaves at worst a local job marked running, run again by the next apply,
or a remote job marked submitting, which the next apply first looks up at the provider by
its tag (so it is never submitted twice), or submitted, which it re-attaches by handle.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from . import executors
from .backends import PROVIDERS, adapter_for, run_local_job
from .backends.base import RemoteStatus, Task, TaskFailed, TransientBackendError
from .backends.faults import NO_FAULTS, Faults
from .errors import BackendUnavailable
from .executors import ExecutorChoice
from .manifest import Manifest
from .planner import job_limits
from .store import NEXT_APPLY, RUNNING, SUBMITTED, SUBMITTING, JobRow, Store

POLL_FIRST = 0.0  # poll a new remote job at once: a fast backend may be done already
POLL_INTERVAL = 0.25  # then every 0.25 s, slowing down by half each time...
POLL_MAX = 30.0  # ...to this interval
CALL_THREADS = 64  # concurrent calls to cloud providers
# Polls left unanswered in a row (each already retried inside the adapter) before this run
# stops following a job; with the polls' backoff that is about ten minutes.
POLLS_UNANSWERED = 25


@dataclass
class RunOutcome:
    finished: int = 0  # experiments that reached done in this run
    failed: int = 0  # experiments that failed for good in this run
    interrupted: bool = False
    # What this run could not finish, besides failed experiments (those are in the state,
    # with their errors): jobs left to the next apply because their service stopped answering.
    notices: list = field(default_factory=list)


class NullProgress:
    """What the engine reports to; the CLI passes a rich progress bar instead."""

    def experiments_finished(self, done: int, failed: int) -> None:
        pass


@dataclass
class _Remote:
    """A remote job this run follows: its attempt, handle and polling schedule."""

    job: JobRow
    attempt_id: int
    tag: str
    slices: list
    handle: str | None = None
    next_poll: float = 0.0
    interval: float = POLL_INTERVAL / 1.5
    submitted_at: float = 0.0
    reconcile: bool = False  # look the tag up before (re)submitting: a call may have landed
    unanswered_polls: int = 0


@dataclass
class _Op:
    """Work in flight: a local run, or one call to a provider about a remote job."""

    kind: str  # run | submit | poll | fetch | cancel
    job: JobRow
    attempt_id: int
    slices: list
    remote: _Remote | None = None


class Engine:
    def __init__(self, store: Store, manifest: Manifest, apply_id: int,
                 executor: ExecutorChoice = ExecutorChoice(), faults: Faults = NO_FAULTS,
                 progress=None):
        self.store = store
        self.manifest = manifest
        self.apply_id = apply_id
        self.executor = executor
        self.faults = faults  # injected into local runs (QRUN_FAULTS), for rehearsals
        self.progress = progress or NullProgress()
        self.outcome = RunOutcome()
        self._in_flight: dict[Future, _Op] = {}
        self._following: dict[int, _Remote] = {}  # job id -> remote job awaiting its result
        self._programs: dict = {}  # digest -> (format, content, item), shared by all tasks
        self._pool = None  # where local jobs run (executors.LocalPool or RayPool), started on need
        self._threads: ThreadPoolExecutor | None = None
        self._last_submit: dict = {}  # backend -> time of its last submission (rate limits)
        self._unanswered: dict = {}  # job id -> submissions of it left unanswered in this run

    def run(self) -> RunOutcome:
        local = [p for p, info in PROVIDERS.items() if info.local]
        self.store.recover_interrupted(self.apply_id, local)
        self._resume_remote()
        try:
            self._loop()
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            self._stop_gracefully()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
        return self.outcome

    # -- the loop

    def _loop(self) -> None:
        while True:
            self._start_ready_jobs()
            self._poll_due()
            if not self._in_flight and not self._following:
                wake_at = self.store.next_retry_time(self.apply_id)
                if wake_at is None:
                    return  # nothing pending: every job of the plan is done or failed
                time.sleep(min(max(0.0, wake_at - time.time()), 5.0))
                continue
            if not self._in_flight:  # only jobs waiting for their next poll (wait([]) would spin)
                time.sleep(self._quiet_time())
                continue
            done, _ = wait(list(self._in_flight), timeout=self._quiet_time(),
                           return_when=FIRST_COMPLETED)
            with self.store.transaction():  # one commit for all that finished meanwhile
                for future in done:
                    self._settle(future)

    def _quiet_time(self) -> float:
        """How long the loop may wait for results before a poll or a retry falls due."""
        due = [r.next_poll for r in self._following.values() if not self._busy(r.job.id)]
        wait_for = min(due) - time.time() if due else 1.0
        return min(1.0, max(0.01, wait_for))

    def _busy(self, job_id: int) -> bool:
        return any(op.job.id == job_id for op in self._in_flight.values())

    def _start_ready_jobs(self) -> None:
        """Start ready jobs while workers and per-backend limits have room.

        Their intents (attempts, tags) are committed together, before any of them starts.
        """
        starts = self._jobs_to_start()
        if not starts:
            return
        with self.store.transaction():
            begun = [begin(job) for begin, job in starts]
        for dispatch in begun:
            dispatch()

    def _jobs_to_start(self) -> list:
        """(how to begin, job) for the ready jobs there is room for."""
        starts = []
        local_room = 2 * self._workers() - sum(op.kind == "run" for op in self._in_flight.values())
        per_backend = self._jobs_per_backend()
        has_local = any(PROVIDERS[b.provider].local for b in self.manifest.backends.values())
        if (local_room <= 0 or not has_local) and self._remote_backends_full(per_backend):
            return starts  # no room anywhere: spare the database a query
        busy = {op.job.id for op in self._in_flight.values()} | set(self._following)
        for job in self.store.ready_jobs(self.apply_id, 2 * self._workers() + CALL_THREADS):
            if job.id in busy:
                continue
            local = PROVIDERS[job.provider].local
            if local and local_room <= 0:
                continue
            limits = self._limits(job)
            if limits.max_parallel is not None and per_backend.get(job.backend, 0) >= limits.max_parallel:
                continue
            if not local and not self._rate_allows(job.backend, limits.submit_rate):
                continue
            if local:
                starts.append((self._begin_local, job))
                local_room -= 1
            else:
                starts.append((self._begin_remote, job))
            per_backend[job.backend] = per_backend.get(job.backend, 0) + 1
        return starts

    def _remote_backends_full(self, per_backend: dict) -> bool:
        for name, spec in self.manifest.backends.items():
            if PROVIDERS[spec.provider].local:
                continue
            cap = job_limits(self.manifest, name).max_parallel
            if cap is None or per_backend.get(name, 0) < cap:
                return False
        return True

    def _jobs_per_backend(self) -> dict:
        counts: dict = {}
        jobs = {op.job.id: op.job for op in self._in_flight.values()}
        jobs.update({job_id: r.job for job_id, r in self._following.items()})
        for job in jobs.values():
            counts[job.backend] = counts.get(job.backend, 0) + 1
        return counts

    def _limits(self, job: JobRow):
        if job.backend in self.manifest.backends:
            return job_limits(self.manifest, job.backend)
        from .backends import Limits

        return Limits()

    def _rate_allows(self, backend: str, rate: float | None) -> bool:
        if not rate:
            return True
        now = time.time()
        if now - self._last_submit.get(backend, 0.0) < 1.0 / rate:
            return False
        self._last_submit[backend] = now
        return True

    # -- local jobs

    def _begin_local(self, job: JobRow):
        """Record the attempt; return what sends the job to a worker once that is committed."""
        slices = self.store.job_work(job.id)
        attempt_id = self.store.start_attempt(self.apply_id, job)

        def dispatch():
            tasks = [self._task(work) for work in slices]
            config = job.backend_config
            future = self._local_pool().submit(run_local_job, config["provider"], config["device"],
                                               config["options"], job.seed, tasks, self.faults)
            self._in_flight[future] = _Op("run", job, attempt_id, slices)
        return dispatch

    def _task(self, work) -> Task:
        program = self._programs.get(work.program)
        if program is None:
            program = self._programs[work.program] = self.store.program(work.program)
        fmt, content, item = program
        return Task(program_format=fmt, program_content=content, program_item=item,
                    program_digest=work.program, params=work.params, shots=work.shots)

    def _local_pool(self):
        if self._pool is None:
            self._pool = executors.start(self.executor)
        return self._pool

    def _workers(self) -> int:
        """Local jobs that run at once (two per worker are kept in flight)."""
        if self._pool is not None:
            return self._pool.workers
        return self.executor.workers or executors.default_workers()

    # -- remote jobs

    def _resume_remote(self) -> None:
        """Follow the remote jobs an earlier run left: reconcile or re-attach each."""
        for job, attempt_id, tag, handle, state in self.store.unfinished_remote_jobs(self.apply_id):
            remote = _Remote(job=job, attempt_id=attempt_id, tag=tag,
                             slices=self.store.job_work(job.id), handle=handle,
                             submitted_at=time.time())
            if state == SUBMITTING:  # the provider may or may not have the job: ask first
                remote.reconcile = True
                self._call("submit", remote)
            else:
                self._following[job.id] = remote  # re-attach by handle: poll at once

    def _begin_remote(self, job: JobRow):
        """Record the intent to submit (attempt and tag); return what submits once committed."""
        reconcile = job.state == SUBMITTING  # an earlier try of this attempt may have landed
        if not reconcile:
            self.store.start_attempt(self.apply_id, job, state=SUBMITTING)
        attempt_id, tag = self.store.open_attempt(job.id)
        remote = _Remote(job=job, attempt_id=attempt_id, tag=tag,
                         slices=self.store.job_work(job.id), reconcile=reconcile)
        return lambda: self._call("submit", remote)

    def _call(self, kind: str, remote: _Remote) -> None:
        config = remote.job.backend_config
        try:
            adapter = adapter_for(config["provider"], config["device"], config["options"],
                                  config.get("credentials"))
        except Exception as exc:  # no SDK, no credentials, a bad region: nothing can be sent
            self._following.pop(remote.job.id, None)
            self._failed(_Op(kind, remote.job, remote.attempt_id, remote.slices, remote),
                         f"cannot reach {config['provider']}: {_describe(exc)}", transient=False)
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="qrun-call")
        if kind == "submit":
            tasks = [self._task(work) for work in remote.slices]
            future = self._threads.submit(_submit, adapter, tasks, remote.job.seed, remote.tag,
                                          remote.reconcile)
        elif kind == "poll":
            future = self._threads.submit(adapter.poll, remote.handle)
        elif kind == "fetch":
            tasks = [self._task(work) for work in remote.slices]
            future = self._threads.submit(adapter.fetch, remote.handle, tasks)
        else:
            future = self._threads.submit(adapter.cancel, remote.handle)
        self._in_flight[future] = _Op(kind, remote.job, remote.attempt_id, remote.slices, remote)

    def _poll_due(self) -> None:
        now = time.time()
        for remote in list(self._following.values()):
            if remote.next_poll > now or self._busy(remote.job.id):
                continue
            timeout = self._timeout(remote.job)
            if timeout and now - remote.submitted_at > timeout:
                self._call("cancel", remote)
            else:
                self._call("poll", remote)

    def _timeout(self, job: JobRow) -> float | None:
        spec = self.manifest.backends.get(job.backend)
        return spec.timeout if spec else None

    # -- outcomes

    def _settle(self, future: Future) -> None:
        op = self._in_flight.pop(future)
        handler = {"run": self._settle_run, "submit": self._settle_submit,
                   "poll": self._settle_poll, "fetch": self._settle_fetch,
                   "cancel": self._settle_cancel}[op.kind]
        handler(op, future)

    def _settle_run(self, op: _Op, future: Future) -> None:
        try:
            counts, metadata = future.result()
        except BrokenProcessPool:
            # A worker died (out of memory, a crash in a simulator): the pool is unusable.
            self._pool.broken()
            self._failed(op, "a worker process died while running this job", transient=True)
            return
        except BackendUnavailable as exc:
            self._failed(op, str(exc), transient=False)
            return
        except TransientBackendError as exc:
            self._failed(op, _describe(exc), transient=True)
            return
        except Exception as exc:  # the adapter's own error: deterministic, reported as is
            self._failed(op, _describe(exc), transient=False)
            return
        self._complete(op, counts, metadata)

    def _settle_submit(self, op: _Op, future: Future) -> None:
        remote = op.remote
        try:
            remote.handle = future.result()
        except TransientBackendError as exc:
            # Unknown whether the provider took it: the attempt stays "submitting" and its
            # next try looks the tag up first. A service that stays unreachable is left for
            # the next apply, rather than tried forever.
            tries = self._unanswered[remote.job.id] = self._unanswered.get(remote.job.id, 0) + 1
            retry_at = time.time() + self._backoff(tries) \
                if tries < self.manifest.retry.max_attempts else NEXT_APPLY
            error = _describe(exc)
            if retry_at == NEXT_APPLY:
                error += " (left for the next apply, which looks the job up first)"
            self.store.defer_submission(self.apply_id, remote.job.id, retry_at, error)
            return
        except Exception as exc:  # refused (invalid circuit, over a limit, credentials)
            self._failed(op, _describe(exc), transient=False)
            return
        self.store.record_submission(self.apply_id, remote.job.id, remote.attempt_id, remote.handle)
        remote.submitted_at = time.time()
        remote.next_poll = time.time() + POLL_FIRST
        self._following[remote.job.id] = remote

    def _settle_poll(self, op: _Op, future: Future) -> None:
        remote = op.remote
        try:
            status: RemoteStatus = future.result()
        except Exception as exc:  # polling again later is always safe
            remote.unanswered_polls += 1
            if remote.unanswered_polls >= POLLS_UNANSWERED:
                # The service is gone for now: the job stays submitted, the next apply
                # re-attaches it by its handle.
                self._following.pop(remote.job.id, None)
                self.outcome.notices.append(
                    f"job {remote.job.id} ({remote.handle}): no answer to {POLLS_UNANSWERED} "
                    f"polls ({_describe(exc)}); left submitted, `qrun apply` re-attaches it")
                return
            self._poll_later(remote)
            return
        remote.unanswered_polls = 0
        if status.state == "done":
            self.store.note_provider_state(self.apply_id, remote.job.id, RUNNING,
                                           status.provider_state)
            self._call("fetch", remote)
            return
        if status.finished:
            self._following.pop(remote.job.id, None)
            error = status.error or f"the provider reports the job {status.provider_state}"
            self._failed(op, error, transient=status.transient)
            return
        self.store.note_provider_state(self.apply_id, remote.job.id,
                                       RUNNING if status.state == "running" else SUBMITTED,
                                       status.provider_state)
        self._poll_later(remote)

    def _settle_fetch(self, op: _Op, future: Future) -> None:
        remote = op.remote
        try:
            counts = future.result()
        except TransientBackendError:
            self._poll_later(remote)  # the result stays at the provider: fetch again later
            return
        except Exception as exc:
            self._following.pop(remote.job.id, None)
            self._failed(op, _describe(exc), transient=False)
            return
        self._following.pop(remote.job.id, None)
        config = remote.job.backend_config
        adapter = adapter_for(config["provider"], config["device"], config["options"],
                              config.get("credentials"))
        metadata = {**adapter.metadata(), "remote_id": remote.handle}
        self._complete(op, counts, metadata)

    def _settle_cancel(self, op: _Op, future: Future) -> None:
        remote = op.remote
        try:
            future.result()
        except TransientBackendError:
            self._poll_later(remote)  # try to cancel again at the next due time
            return
        except Exception as exc:  # the provider refuses: report it, do not ask forever
            self._following.pop(remote.job.id, None)
            self._failed(op, f"timed out, and the provider refused to cancel it: {_describe(exc)}",
                         transient=False)
            return
        self._following.pop(remote.job.id, None)
        timeout = self._timeout(remote.job)
        self._failed(op, f"timed out after {timeout:g} s; the remote job was cancelled",
                     transient=False)

    def _poll_later(self, remote: _Remote) -> None:
        remote.interval = min(POLL_MAX, remote.interval * 1.5)
        remote.next_poll = time.time() + remote.interval * random.uniform(0.8, 1.2)

    def _complete(self, op: _Op, counts: list, metadata: dict) -> None:
        results = [(s.experiment, s.index, c) for s, c in zip(op.slices, counts)
                   if not isinstance(c, TaskFailed)]
        failures = [(s.experiment, c.error) for s, c in zip(op.slices, counts)
                    if isinstance(c, TaskFailed)]
        finished, failed = self.store.complete_job(self.apply_id, op.job.id, op.attempt_id,
                                                   results, failures, metadata)
        self.outcome.finished += len(finished)
        self.outcome.failed += len(failed)
        self.progress.experiments_finished(len(finished), len(failed))

    def _backoff(self, attempt: int) -> float:
        policy = self.manifest.retry
        delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: no thundering herds

    def _failed(self, op: _Op, error: str, transient: bool) -> None:
        attempt = op.job.attempts + 1
        retry_at = None
        if transient and attempt < self.manifest.retry.max_attempts:
            retry_at = time.time() + self._backoff(attempt)
        failed = self.store.fail_attempt(self.apply_id, op.job.id, op.attempt_id, error, retry_at)
        self.outcome.failed += len(failed)
        if failed:
            self.progress.experiments_finished(0, len(failed))

    # -- Ctrl-C

    def _stop_gracefully(self) -> None:
        """Stop starting jobs; keep what finishes; leave remote jobs to the next apply."""
        try:
            for future, op in list(self._in_flight.items()):
                if op.kind == "run" and future.cancel():
                    self._in_flight.pop(future)
                    self.store.release_attempt(self.apply_id, op.job.id, op.attempt_id)
            self._following.clear()  # submitted jobs stay with the provider, re-attached later
            while self._in_flight:
                done, _ = wait(list(self._in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    op = self._in_flight[future]
                    if op.kind in ("poll", "fetch", "cancel"):
                        self._in_flight.pop(future)  # its job stays submitted in the state
                    else:
                        self._settle(future)
                self._following.clear()
            # Jobs recorded as started whose dispatch the interrupt cut short: back to pending.
            self.store.recover_interrupted(self.apply_id, [p for p, i in PROVIDERS.items() if i.local])
        except KeyboardInterrupt:
            # A second Ctrl-C: leave at once. Jobs still marked running are recovered
            # (run again) by the next apply; submitting ones are reconciled by their tag.
            if self._pool is not None:
                self._pool.terminate()


def _submit(adapter, tasks: list, seed, tag: str, reconcile: bool) -> str:
    """Submit a job once: when a call may already have landed, find it by its tag first."""
    if reconcile:
        handle = adapter.find(tag)
        if handle is not None:
            return handle
    return adapter.submit(tasks, seed, tag)


def _describe(exc: Exception) -> str:
    return TaskFailed.of(exc).error
