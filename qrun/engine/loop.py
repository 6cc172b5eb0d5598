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

The rules for remote jobs, on which never paying twice rests, are in remote_jobs.py; this
loop schedules jobs, runs local ones, and records what every job came to.

Every wait is bounded: each provider call has its own time limit (in its adapter), and a
service that gives no answer for ``silence_limit`` seconds is left for this run: its work
waits for the next apply, and the apply says which service did not answer.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from .. import executors
from ..costs import Spending, work_by_backend
from ..errors import BackendUnavailable
from ..executors import ExecutorChoice
from ..manifest import Manifest
from ..planner import job_limits
from ..providers import PROVIDERS, Limits
from ..providers.base import JobNotFound, Task, TaskFailed, TransientBackendError
from ..providers.faults import NO_FAULTS, Faults
from ..providers.local import run_local_job
from ..store import PENDING, JobRow, Store
from .calls import CALL_THREADS, Op, describe
from .remote import Call, Service
from .remote_jobs import RemoteJobs

# How long a service may give no answer at all before this run leaves its work to the next
# apply (QRUN_SILENCE_LIMIT, in seconds, changes it).
SILENCE_LIMIT = 600.0
# After Ctrl-C or SIGTERM, how long the answers of submissions in flight are waited for.
STOP_GRACE = 10.0


@dataclass
class RunOutcome:
    finished: int = 0  # experiments that reached done in this run
    failed: int = 0  # experiments that failed for good in this run
    interrupted: bool = False
    # What this run could not finish, besides failed experiments (those are in the state,
    # with their errors): jobs left to the next apply because their service stopped answering.
    notices: list = field(default_factory=list)
    left_backends: list = field(default_factory=list)  # services that stopped answering


class NullProgress:
    """What the engine reports to; the CLI passes a rich progress bar instead."""

    def experiments_finished(self, done: int, failed: int) -> None:
        pass

    def waiting(self, backend: str, reason: str) -> None:
        """Submissions to ``backend`` wait (no room at the provider yet)."""


class Engine:
    def __init__(self, store: Store, manifest: Manifest, apply_id: int,
                 executor: ExecutorChoice = ExecutorChoice(), faults: Faults = NO_FAULTS,
                 progress=None, silence_limit: float = SILENCE_LIMIT,
                 spending: Spending | None = None):
        self.store = store
        self.manifest = manifest
        self.apply_id = apply_id
        self.executor = executor
        self.faults = faults  # injected into local runs (QRUN_FAULTS), for rehearsals
        self.progress = progress or NullProgress()
        self.silence_limit = silence_limit
        self.spending = spending  # a budget's bound on what may still be sent
        self._spending_read = False
        self._noted: set[tuple] = set()  # (backend, kind) of the notices given
        self.outcome = RunOutcome()
        self.in_flight: dict[Future, Op] = {}  # local runs and provider calls under way
        self.remote = RemoteJobs(self)  # the remote jobs this run follows
        self._services: dict[str, Service] = {}  # backend -> its pace and silence
        self._programs: dict = {}  # digest -> (format, content, item), shared by all tasks
        self._pool = None  # where local jobs run (executors.LocalPool or RayPool), started on need

    def run(self) -> RunOutcome:
        local = [p for p, info in PROVIDERS.items() if info.local]
        self.store.recover_interrupted(self.apply_id, local)
        self.store.wake_deferred(self.apply_id)
        self.remote.resume()
        try:
            self._loop()
            self.remote.finish(STOP_GRACE)
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            self._stop_gracefully()
        finally:
            if self._pool is not None:
                # Idle workers are waited for, so none outlives the run; busy ones (an error
                # cut the run short) are not: they die with this process (executors.py).
                self._pool.shutdown(wait=not any(op.kind is Call.RUN for op in self.in_flight.values()))
            self.remote.shutdown()
        return self.outcome

    # -- the loop

    def _loop(self) -> None:
        while True:
            self._leave_silent_services()
            self._start_ready_jobs()
            self.remote.poll_due()
            if not self.in_flight and not self.remote.jobs:
                wake_at = self.store.next_retry_time(self.apply_id)
                if wake_at is None:
                    return  # nothing pending: every job of the plan is done or failed
                time.sleep(self._idle_time(wake_at))
                continue
            if not self.in_flight:  # only jobs waiting for their next poll (wait([]) would spin)
                time.sleep(self._quiet_time())
                continue
            done, _ = wait(list(self.in_flight), timeout=self._quiet_time(),
                           return_when=FIRST_COMPLETED)
            with self.store.transaction():  # one commit for all that finished meanwhile
                for future in done:
                    self._settle(future)

    def _idle_time(self, wake_at: float) -> float:
        """How long the loop sleeps with nothing in flight: until the next job may start. A
        job ready now that did not start waits for room at its provider (or for its submit
        rate): sleep until the first room opens, not in a busy loop."""
        now = time.time()
        if wake_at > now:
            return min(wake_at - now, 5.0)
        rooms = [service.room_at for service in self._services.values() if service.room_at > now]
        return min(min(rooms) - now, 5.0) if rooms else 0.01

    def _quiet_time(self) -> float:
        """How long the loop may wait for results before a poll or a retry falls due."""
        due = self.remote.next_poll()
        wait_for = due - time.time() if due is not None else 1.0
        return min(1.0, max(0.01, wait_for))

    def service(self, backend: str) -> Service:
        """What this run knows of a backend's service (made on first use)."""
        service = self._services.get(backend)
        if service is None:
            service = self._services[backend] = Service()
        return service

    def left(self, backend: str) -> bool:
        """Whether this run stopped working with the backend's service (it went silent)."""
        return backend in self._services and self._services[backend].left

    # -- services that do not answer

    def _note_answer(self, op: Op, future: Future) -> None:
        """Keep, per backend, since when none of its calls got an answer."""
        error = future.exception()
        if isinstance(error, JobNotFound):
            error = None  # an answer: the service knows no such job
        unanswered = isinstance(error, TransientBackendError) or \
            (op.kind is Call.SUBMIT and error is None and future.result().unanswered)
        self.service(op.job.backend).heard(not unanswered, op.started)

    def _leave_silent_services(self) -> None:
        now = time.time()
        for op in self.in_flight.values():  # a call still waiting counts as silence too
            if op.kind is not Call.RUN and now - op.started > self.silence_limit:
                self.service(op.job.backend).heard(False, op.started)
        for backend, service in list(self._services.items()):
            since = service.silent_since
            if since is not None and now - since > self.silence_limit and not service.left:
                self._leave(backend, now - since)

    def _leave(self, backend: str, silent_for: float) -> None:
        """Stop working with a backend's service for this run; its work waits, with why."""
        self.service(backend).left = True
        spec = self.manifest.backends.get(backend)
        where = ""
        if spec is not None:
            endpoint = spec.options.get("endpoint")
            where = f" ({spec.provider}{' at ' + endpoint if endpoint else ''})"
        reason = (f"{backend}{where} gave no answer for {silent_for:.0f} s; left for the next "
                  "apply, which re-attaches submitted jobs and looks the others up by tag first")
        for future, op in list(self.in_flight.items()):
            if op.job.backend == backend and op.kind is not Call.RUN:
                del self.in_flight[future]  # its answer, should it come, is not waited for
        self.remote.leave(backend)
        jobs = self.store.leave_backend(self.apply_id, backend, reason)
        self.outcome.left_backends.append(backend)
        self.outcome.notices.append(f"{reason} ({jobs} jobs)")

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
        starts: list = []
        self._spending_read = False  # the budget's base is read once per round, on need
        local_room = 2 * self._workers() - sum(op.kind is Call.RUN for op in self.in_flight.values())
        per_backend = self._jobs_per_backend()
        has_local = any(PROVIDERS[b.provider].local for b in self.manifest.backends.values())
        if (local_room <= 0 or not has_local) and self._remote_backends_full(per_backend):
            return starts  # no room anywhere: spare the database a query
        busy = {op.job.id for op in self.in_flight.values()} | set(self.remote.jobs)
        for job in self.store.ready_jobs(self.apply_id, 2 * self._workers() + CALL_THREADS):
            if job.id in busy or self.left(job.backend):
                continue
            local = PROVIDERS[job.provider].local
            if local and local_room <= 0:
                continue
            limits = self._limits(job)
            if limits.max_parallel is not None and per_backend.get(job.backend, 0) >= limits.max_parallel:
                continue
            if not local and not self.service(job.backend).rate_allows(limits.submit_rate, time.time()):
                continue
            if local:
                starts.append((self._begin_local, job))
                local_room -= 1
            elif self.service(job.backend).room_at > time.time() or self._held(job):
                continue  # no room at the provider yet, or held for a later apply
            else:
                starts.append((self.remote.begin, job))
            per_backend[job.backend] = per_backend.get(job.backend, 0) + 1
        return starts

    def _held(self, job: JobRow) -> bool:
        """A job about to be sent that this run will not send waits for a later apply, and
        the run says why: its backend's quota is spent, or its cost does not fit what is
        left of the budget (raise spec.budget, then apply again)."""
        if job.state != PENDING:
            return False  # a job being looked up (submitting) was counted when it was sent
        closed = self.service(job.backend).closed
        if closed is not None:
            self.store.hold_for_next_apply(self.apply_id, job.id, closed)
            return True
        return self._held_by_budget(job)

    def _held_by_budget(self, job: JobRow) -> bool:
        if self.spending is None or self.spending.budget is None:
            return False
        if not self._spending_read:
            self.spending.refresh(work_by_backend(self.store.sent_work()))
            self._spending_read = True
        shots = sum(work.shots for work in self.store.job_work(job.id))
        refusal = self.spending.refusal(job.backend, shots)
        if refusal is None:
            return False
        self.store.hold_for_next_apply(self.apply_id, job.id, refusal)
        self.note_once("budget", job.backend, f"{job.backend}: jobs left pending, {refusal}")
        return True

    def note_once(self, kind: str, backend: str, notice: str) -> None:
        """A run-level notice, printed at the end: once per kind and backend."""
        if (kind, backend) not in self._noted:
            self._noted.add((kind, backend))
            self.outcome.notices.append(notice)

    def _remote_backends_full(self, per_backend: dict) -> bool:
        for name, spec in self.manifest.backends.items():
            if PROVIDERS[spec.provider].local or self.left(name):
                continue
            cap = job_limits(self.manifest, name).max_parallel
            if cap is None or per_backend.get(name, 0) < cap:
                return False
        return True

    def _jobs_per_backend(self) -> dict:
        counts: dict = {}
        jobs = {op.job.id: op.job for op in self.in_flight.values()}
        jobs.update({job_id: r.job for job_id, r in self.remote.jobs.items()})
        for job in jobs.values():
            counts[job.backend] = counts.get(job.backend, 0) + 1
        return counts

    def _limits(self, job: JobRow) -> Limits:
        if job.backend in self.manifest.backends:
            return job_limits(self.manifest, job.backend)
        return Limits()

    # -- local jobs

    def _begin_local(self, job: JobRow):
        """Record the attempt; return what sends the job to a worker once that is committed."""
        slices = self.store.job_work(job.id)
        attempt_id = self.store.start_attempt(self.apply_id, job)

        def dispatch():
            tasks = [self.task(work) for work in slices]
            config = job.backend_config
            spec = PROVIDERS.get(config["provider"])
            future = self._local_pool().submit(run_local_job, config["provider"], config["device"],
                                               config["options"], job.seed, tasks, self.faults,
                                               affinity=spec.adapter if spec else None)
            self.in_flight[future] = Op(Call.RUN, job, attempt_id, slices)
        return dispatch

    def task(self, work) -> Task:
        program = self._programs.get(work.program)
        if program is None:
            program = self._programs[work.program] = self.store.program(work.program)
        fmt, content, item = program
        return Task(program_format=fmt, program_content=content, program_item=item,
                    program_digest=work.program, params=work.params, shots=work.shots)

    def _local_pool(self):
        if self._pool is None:
            self._pool = executors.start(self.executor, self._local_adapters())
        return self._pool

    def _local_adapters(self) -> list:
        """The adapter modules of the manifest's local backends: each SDK is imported once
        for all the workers (executors.LocalPool)."""
        specs = (PROVIDERS.get(b.provider) for b in self.manifest.backends.values())
        return sorted({spec.adapter for spec in specs if spec is not None and spec.local})

    def _workers(self) -> int:
        """Local jobs that run at once (two per worker are kept in flight)."""
        if self._pool is not None:
            return self._pool.workers
        return self.executor.workers or executors.default_workers()

    # -- outcomes

    def _settle(self, future: Future) -> None:
        op = self.in_flight.pop(future)
        if op.kind is Call.RUN:
            self._settle_run(op, future)
        else:
            self._note_answer(op, future)
            self.remote.settle(op, future)

    def _settle_run(self, op: Op, future: Future) -> None:
        try:
            counts, metadata = future.result()
        except BrokenProcessPool:
            # A worker died (out of memory, a crash in a simulator): the pool is unusable.
            if self._pool is not None:
                self._pool.broken()
            if self.outcome.interrupted:  # killed with us (SIGTERM to the group): not a failure
                self.store.release_attempt(self.apply_id, op.job.id, op.attempt_id)
                return
            self.fail(op, "a worker process died while running this job", transient=True)
            return
        except BackendUnavailable as exc:
            self.fail(op, str(exc), transient=False)
            return
        except TransientBackendError as exc:
            self.fail(op, describe(exc), transient=True)
            return
        except Exception as exc:  # the adapter's own error: deterministic, reported as is
            self.fail(op, describe(exc), transient=False)
            return
        self.complete(op, counts, metadata)

    def complete(self, op: Op, counts: list, metadata: dict, report: dict | None = None) -> None:
        results = [(s.experiment, s.index, c) for s, c in zip(op.slices, counts)
                   if not isinstance(c, TaskFailed)]
        failures = [(s.experiment, c.error) for s, c in zip(op.slices, counts)
                    if isinstance(c, TaskFailed)]
        finished, failed = self.store.complete_job(self.apply_id, op.job.id, op.attempt_id,
                                                   results, failures, metadata, report)
        self.outcome.finished += len(finished)
        self.outcome.failed += len(failed)
        self.progress.experiments_finished(len(finished), len(failed))

    def backoff(self, attempt: int) -> float:
        policy = self.manifest.retry
        delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: no thundering herds

    def fail(self, op: Op, error: str, transient: bool, tag_absent: bool = False) -> None:
        attempt = op.job.attempts + 1
        retry_at = None
        if transient and attempt < self.manifest.retry.max_attempts:
            retry_at = time.time() + self.backoff(attempt)
        failed = self.store.fail_attempt(self.apply_id, op.job.id, op.attempt_id, error, retry_at,
                                         tag_absent=tag_absent)
        self.outcome.failed += len(failed)
        if failed:
            self.progress.experiments_finished(0, len(failed))

    # -- Ctrl-C

    def _stop_gracefully(self) -> None:
        """Stop starting jobs; keep what finishes; leave remote jobs to the next apply."""
        try:
            for future, op in list(self.in_flight.items()):
                if op.kind is Call.RUN and future.cancel():
                    self.in_flight.pop(future)
                    self.store.release_attempt(self.apply_id, op.job.id, op.attempt_id)
            self.remote.jobs.clear()  # submitted jobs stay with the provider, re-attached later
            for future, op in list(self.in_flight.items()):
                if op.kind not in (Call.RUN, Call.SUBMIT):
                    del self.in_flight[future]  # its job stays submitted in the state
            # Local runs finish and are kept; a submission's answer is waited for a while
            # (its handle spares the next apply a lookup), but not for ever: one left
            # unanswered stays "submitting", and its tag is looked up next time.
            submissions_until = time.time() + STOP_GRACE
            while self.in_flight:
                if time.time() > submissions_until:
                    for future, op in list(self.in_flight.items()):
                        if op.kind is Call.SUBMIT:
                            del self.in_flight[future]
                    if not self.in_flight:
                        break
                done, _ = wait(list(self.in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    self._settle(future)
                self.remote.jobs.clear()
            # Jobs recorded as started whose dispatch the interrupt cut short: back to pending.
            self.store.recover_interrupted(self.apply_id, [p for p, i in PROVIDERS.items() if i.local])
        except KeyboardInterrupt:
            # A second Ctrl-C: leave at once. Jobs still marked running are recovered
            # (run again) by the next apply; submitting ones are reconciled by their tag.
            if self._pool is not None:
                self._pool.terminate()


