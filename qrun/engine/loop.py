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

Never paying twice rests on one rule: an attempt whose fate at the provider is unknown (its
submission may have landed) stays unknown until the provider answers a lookup of its tag.
Every unknown tag of a job is looked up before the job is sent again; a lookup that fails or
is refused leaves the job as it is, for a later try or the next apply, with the reason.
A handle the provider no longer knows (or one whose job carries another tag) is not trusted:
the tag is looked up, and an attempt found under neither is lost and may be tried again.

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
from ..errors import BackendUnavailable
from ..executors import ExecutorChoice
from ..manifest import Manifest
from ..planner import job_limits
from ..providers import PROVIDERS, Limits, remote_adapter_for
from ..providers.base import JobNotFound, RemoteStatus, SubmissionUnknown, Task, TaskFailed, TransientBackendError
from ..providers.faults import NO_FAULTS, Faults
from ..providers.local import run_local_job
from ..store import NEXT_APPLY, RUNNING, SUBMITTED, SUBMITTING, JobRow, Store
from .calls import CALL_THREADS, CallThreads, SubmitOutcome, submit_once
from .remote import Call, RemoteJob, Service

# Polls of one job left unanswered in a row (each already retried inside the adapter) before
# this run stops following it; with the polls' backoff that is about ten minutes.
POLLS_UNANSWERED = 25
# Polls of one job refused in a row (a credential revoked meanwhile...) before this run
# stops following it: the job stays submitted, and the next apply re-attaches it.
POLLS_REFUSED = 8
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


@dataclass
class _Op:
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


class Engine:
    def __init__(self, store: Store, manifest: Manifest, apply_id: int,
                 executor: ExecutorChoice = ExecutorChoice(), faults: Faults = NO_FAULTS,
                 progress=None, silence_limit: float = SILENCE_LIMIT):
        self.store = store
        self.manifest = manifest
        self.apply_id = apply_id
        self.executor = executor
        self.faults = faults  # injected into local runs (QRUN_FAULTS), for rehearsals
        self.progress = progress or NullProgress()
        self.silence_limit = silence_limit
        self.outcome = RunOutcome()
        self._in_flight: dict[Future, _Op] = {}  # local runs and provider calls under way
        self._remote: dict[int, RemoteJob] = {}  # job id -> remote job this run follows
        self._services: dict[str, Service] = {}  # backend -> its pace and silence
        self._unanswered: dict = {}  # job id -> submissions of it left unanswered in this run
        self._programs: dict = {}  # digest -> (format, content, item), shared by all tasks
        self._pool = None  # where local jobs run (executors.LocalPool or RayPool), started on need
        self._threads: CallThreads | None = None

    def run(self) -> RunOutcome:
        local = [p for p, info in PROVIDERS.items() if info.local]
        self.store.recover_interrupted(self.apply_id, local)
        self.store.wake_deferred(self.apply_id)
        self._resume_remote()
        try:
            self._loop()
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            self._stop_gracefully()
        finally:
            if self._pool is not None:
                # Idle workers are waited for, so none outlives the run; busy ones (an error
                # cut the run short) are not: they die with this process (executors.py).
                self._pool.shutdown(wait=not any(op.kind is Call.RUN for op in self._in_flight.values()))
            if self._threads is not None:
                self._threads.shutdown()
        return self.outcome

    # -- the loop

    def _loop(self) -> None:
        while True:
            self._leave_silent_services()
            self._start_ready_jobs()
            self._poll_due()
            if not self._in_flight and not self._remote:
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
        due = [r.next_poll for r in self._remote.values() if not r.busy]
        wait_for = min(due) - time.time() if due else 1.0
        return min(1.0, max(0.01, wait_for))

    def _service(self, backend: str) -> Service:
        service = self._services.get(backend)
        if service is None:
            service = self._services[backend] = Service()
        return service

    def _left(self, backend: str) -> bool:
        return backend in self._services and self._services[backend].left

    # -- services that do not answer

    def _note_answer(self, op: _Op, future: Future) -> None:
        """Keep, per backend, since when none of its calls got an answer."""
        error = future.exception()
        if isinstance(error, JobNotFound):
            error = None  # an answer: the service knows no such job
        unanswered = isinstance(error, TransientBackendError) or \
            (op.kind is Call.SUBMIT and error is None and future.result().unanswered)
        self._service(op.job.backend).heard(not unanswered, op.started)

    def _leave_silent_services(self) -> None:
        now = time.time()
        for op in self._in_flight.values():  # a call still waiting counts as silence too
            if op.kind is not Call.RUN and now - op.started > self.silence_limit:
                self._service(op.job.backend).heard(False, op.started)
        for backend, service in list(self._services.items()):
            since = service.silent_since
            if since is not None and now - since > self.silence_limit and not service.left:
                self._leave(backend, now - since)

    def _leave(self, backend: str, silent_for: float) -> None:
        """Stop working with a backend's service for this run; its work waits, with why."""
        self._service(backend).left = True
        spec = self.manifest.backends.get(backend)
        where = ""
        if spec is not None:
            endpoint = spec.options.get("endpoint")
            where = f" ({spec.provider}{' at ' + endpoint if endpoint else ''})"
        reason = (f"{backend}{where} gave no answer for {silent_for:.0f} s; left for the next "
                  "apply, which re-attaches submitted jobs and looks the others up by tag first")
        for future, op in list(self._in_flight.items()):
            if op.job.backend == backend and op.kind is not Call.RUN:
                del self._in_flight[future]  # its answer, should it come, is not waited for
        for job_id, remote in list(self._remote.items()):
            if remote.job.backend == backend:
                del self._remote[job_id]
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
        local_room = 2 * self._workers() - sum(op.kind is Call.RUN for op in self._in_flight.values())
        per_backend = self._jobs_per_backend()
        has_local = any(PROVIDERS[b.provider].local for b in self.manifest.backends.values())
        if (local_room <= 0 or not has_local) and self._remote_backends_full(per_backend):
            return starts  # no room anywhere: spare the database a query
        busy = {op.job.id for op in self._in_flight.values()} | set(self._remote)
        for job in self.store.ready_jobs(self.apply_id, 2 * self._workers() + CALL_THREADS):
            if job.id in busy or self._left(job.backend):
                continue
            local = PROVIDERS[job.provider].local
            if local and local_room <= 0:
                continue
            limits = self._limits(job)
            if limits.max_parallel is not None and per_backend.get(job.backend, 0) >= limits.max_parallel:
                continue
            if not local and not self._service(job.backend).rate_allows(limits.submit_rate, time.time()):
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
            if PROVIDERS[spec.provider].local or self._left(name):
                continue
            cap = job_limits(self.manifest, name).max_parallel
            if cap is None or per_backend.get(name, 0) < cap:
                return False
        return True

    def _jobs_per_backend(self) -> dict:
        counts: dict = {}
        jobs = {op.job.id: op.job for op in self._in_flight.values()}
        jobs.update({job_id: r.job for job_id, r in self._remote.items()})
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
            tasks = [self._task(work) for work in slices]
            config = job.backend_config
            future = self._local_pool().submit(run_local_job, config["provider"], config["device"],
                                               config["options"], job.seed, tasks, self.faults)
            self._in_flight[future] = _Op(Call.RUN, job, attempt_id, slices)
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
        """Re-attach, by handle, the remote jobs an earlier run left submitted or running.

        Jobs it left submitting (their fate unknown) are started again like pending ones:
        _begin_remote looks their tags up before anything is sent."""
        for job, attempt_id, tag, handle, state in self.store.unfinished_remote_jobs(self.apply_id):
            if state != SUBMITTING and handle is not None:
                self._remote[job.id] = RemoteJob.attached(job, attempt_id, tag,
                                                          self.store.job_work(job.id), handle)

    def _begin_remote(self, job: JobRow):
        """Record the intent to submit (attempt and tag); return what submits once committed.

        A job left submitting keeps its attempt: its tag is looked up first. A job started
        anew gets a new attempt; any earlier tag of it whose fate is unknown (from a qrun
        that did not keep fates, or a cancel) is looked up before it is sent.
        """
        opened = self.store.open_attempt(job.id) if job.state == SUBMITTING else None
        if opened is None:
            self.store.start_attempt(self.apply_id, job, state=SUBMITTING)
        attempt = self.store.open_attempt(job.id)
        if attempt is None:
            raise RuntimeError(f"job {job.id} has no open attempt right after one was started")
        attempt_id, tag = attempt
        lookups = [(a, t) for a, t in self.store.unresolved_tags(job.id)
                   if a != attempt_id or opened is not None]  # a new tag was never sent
        remote = RemoteJob(job=job, attempt_id=attempt_id, tag=tag,
                           slices=self.store.job_work(job.id), lookups=lookups)
        self._remote[job.id] = remote
        return lambda: self._call(Call.SUBMIT, remote)

    def _call(self, kind: Call, remote: RemoteJob) -> None:
        config = remote.job.backend_config
        try:
            adapter = remote_adapter_for(config["provider"], config["device"], config["options"],
                                         config.get("credentials"))
        except Exception as exc:  # no SDK, no credentials, a bad region: nothing can be sent
            self._unreachable(kind, remote, f"cannot reach {config['provider']}: {_describe(exc)}")
            return
        if self._threads is None:
            self._threads = CallThreads(CALL_THREADS)
        remote.start(kind)
        if kind is Call.SUBMIT:
            tasks = [self._task(work) for work in remote.slices]
            future = self._threads.submit(submit_once, adapter, tasks, remote.job.seed,
                                          remote.tag, list(remote.lookups))
        elif kind is Call.POLL:
            future = self._threads.submit(adapter.poll, remote.handle)
        elif kind is Call.FETCH:
            tasks = [self._task(work) for work in remote.slices]
            future = self._threads.submit(adapter.fetch, remote.handle, tasks)
        elif kind is Call.FIND:
            future = self._threads.submit(adapter.find, remote.tag)
        else:
            future = self._threads.submit(adapter.cancel, remote.handle)
        self._in_flight[future] = _Op(kind, remote.job, remote.attempt_id, remote.slices, remote)

    def _unreachable(self, kind: Call, remote: RemoteJob, reason: str) -> None:
        """No adapter for the job's backend. A job that may be at the provider waits for the
        next apply; one that surely is not (never sent) fails."""
        self._forget(remote)
        op = _Op(kind, remote.job, remote.attempt_id, remote.slices, remote)
        if kind is Call.SUBMIT and not remote.lookups:
            self._failed(op, reason, transient=False, tag_absent=True)
            return
        waiting = (reason + "; the job may be at the provider already, so it waits for the next "
                   "apply (which re-attaches it or looks its tag up first)")
        if kind is Call.SUBMIT:
            self.store.defer_submission(self.apply_id, remote.job.id, NEXT_APPLY, waiting)
        else:
            self.store.note_job_error(self.apply_id, remote.job.id, waiting)

    def _poll_due(self) -> None:
        now = time.time()
        for remote in list(self._remote.values()):
            if not remote.due(now):
                continue
            timeout = self._timeout(remote.job)
            if timeout and now - remote.submitted_at > timeout:
                self._call(Call.CANCEL, remote)
            else:
                self._call(Call.POLL, remote)

    def _timeout(self, job: JobRow) -> float | None:
        spec = self.manifest.backends.get(job.backend)
        return spec.timeout if spec else None

    def _follow(self, remote: RemoteJob, handle: str) -> None:
        remote.follow(handle)
        self._remote[remote.job.id] = remote  # again, if Ctrl-C let go of it meanwhile

    def _forget(self, remote: RemoteJob) -> None:
        """The job leaves this run: done, failed, deferred or left to the next apply."""
        if self._remote.get(remote.job.id) is remote:
            del self._remote[remote.job.id]

    # -- outcomes

    def _settle(self, future: Future) -> None:
        op = self._in_flight.pop(future)
        if op.kind is not Call.RUN:
            self._note_answer(op, future)
        handler = {Call.RUN: self._settle_run, Call.SUBMIT: self._settle_submit,
                   Call.POLL: self._settle_poll, Call.FETCH: self._settle_fetch,
                   Call.CANCEL: self._settle_cancel, Call.FIND: self._settle_find}[op.kind]
        handler(op, future)

    def _settle_run(self, op: _Op, future: Future) -> None:
        try:
            counts, metadata = future.result()
        except BrokenProcessPool:
            # A worker died (out of memory, a crash in a simulator): the pool is unusable.
            if self._pool is not None:
                self._pool.broken()
            if self.outcome.interrupted:  # killed with us (SIGTERM to the group): not a failure
                self.store.release_attempt(self.apply_id, op.job.id, op.attempt_id)
                return
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
        remote = op.about
        outcome: SubmitOutcome = future.result()
        if outcome.absent:
            self.store.mark_tags_absent(outcome.absent)
            remote.lookups = [(a, t) for a, t in remote.lookups if a not in outcome.absent]
        handle = outcome.handle
        if handle is None:  # not sent, or its fate unknown: it leaves this try
            self._forget(remote)
        if outcome.lookup_of is not None or isinstance(outcome.error, SubmissionUnknown):
            self._lookup_failed(remote, outcome)
        elif outcome.unanswered:
            # Unknown whether the provider took it: the attempt stays "submitting" and its
            # next try looks the tag up first.
            self._defer_submission(remote, _describe(outcome.error))
        elif outcome.error is not None or handle is None:  # refused (invalid circuit, over a limit, credentials)
            self._failed(op, _describe(outcome.error), transient=False, tag_absent=True)
        elif outcome.found is not None and outcome.found[0] != remote.attempt_id:
            # An earlier attempt's tag found the job: that attempt is the job's.
            attempt_id, tag = outcome.found
            self.store.adopt_attempt(self.apply_id, remote.job.id, attempt_id, handle,
                                     superseded=remote.attempt_id)
            remote.attempt_id, remote.tag = attempt_id, tag
            self._follow(remote, handle)
        else:
            self.store.record_submission(self.apply_id, remote.job.id, remote.attempt_id, handle)
            self._follow(remote, handle)

    def _defer_submission(self, remote: RemoteJob, error: str) -> None:
        """Try the submission (its lookups first) again later in this run, a bounded number
        of times; a service that stays unreachable is left for the next apply."""
        tries = self._unanswered[remote.job.id] = self._unanswered.get(remote.job.id, 0) + 1
        retry_at = time.time() + self._backoff(tries) \
            if tries < self.manifest.retry.max_attempts else NEXT_APPLY
        if retry_at == NEXT_APPLY:
            error += " (left for the next apply, which looks the job up first)"
        self.store.defer_submission(self.apply_id, remote.job.id, retry_at, error)

    def _lookup_failed(self, remote: RemoteJob, outcome: SubmitOutcome) -> None:
        """A tag could not be looked up: nothing is sent, the job's fate stays unknown."""
        why = _describe(outcome.error)
        tag = outcome.lookup_of or remote.tag
        consequence = ("an earlier submission of this job may have been accepted, so nothing "
                       "is sent again until a lookup answers")
        if outcome.unanswered:
            self._defer_submission(remote, f"no answer to the lookup of tag {tag} ({why}); "
                                           f"{consequence}")
            return
        self.store.defer_submission(
            self.apply_id, remote.job.id, NEXT_APPLY,
            f"the provider refused the lookup of tag {tag}: {why}; {consequence}. Fix the cause "
            "(a credential?) and run `qrun apply`; if the provider cannot look tags up, check "
            "its job list, then `qrun retry --resubmit-unresolved`")

    def _settle_poll(self, op: _Op, future: Future) -> None:
        remote = op.about
        try:
            status: RemoteStatus = future.result()
        except JobNotFound as exc:
            self._distrust(remote, f"the provider has no job {remote.handle} any more ({_describe(exc)})")
            return
        except TransientBackendError as exc:  # polling again later is always safe
            remote.unanswered_polls += 1
            if remote.unanswered_polls >= POLLS_UNANSWERED:
                self._stop_following(remote, f"no answer to {POLLS_UNANSWERED} polls "
                                             f"({_describe(exc)})")
                return
            self._poll_later(remote)
            return
        except Exception as exc:  # refused: may pass (a credential renewed), but not for ever
            remote.refused_polls += 1
            if remote.refused_polls >= POLLS_REFUSED:
                self._stop_following(remote, f"{POLLS_REFUSED} polls refused ({_describe(exc)})")
                return
            self._poll_later(remote)
            return
        remote.answered()
        if status.tags is not None and remote.tag not in status.tags:
            shown = ", ".join(status.tags) or "none"
            self._distrust(remote, f"the job behind handle {remote.handle} carries other tags "
                                   f"({shown}), not this attempt's {remote.tag}")
            return
        if status.state == "done":
            self.store.note_provider_state(self.apply_id, remote.job.id, RUNNING,
                                           status.provider_state)
            self._call(Call.FETCH, remote)
            return
        if status.finished:
            self._forget(remote)
            error = status.error or f"the provider reports the job {status.provider_state}"
            self._failed(op, error, transient=status.transient)
            return
        self.store.note_provider_state(self.apply_id, remote.job.id,
                                       RUNNING if status.state == "running" else SUBMITTED,
                                       status.provider_state)
        self._poll_later(remote)

    def _stop_following(self, remote: RemoteJob, why: str) -> None:
        """Leave a submitted job to the next apply, which re-attaches it by its handle."""
        self._forget(remote)
        reason = f"job {remote.job.id} ({remote.handle}): {why}; left submitted, `qrun apply` re-attaches it"
        self.store.note_job_error(self.apply_id, remote.job.id, reason)
        self.outcome.notices.append(reason)

    def _distrust(self, remote: RemoteJob, why: str) -> None:
        """The handle names no job of this attempt: look the attempt's tag up."""
        remote.distrust = why
        self._call(Call.FIND, remote)

    def _settle_find(self, op: _Op, future: Future) -> None:
        remote = op.about
        try:
            handle = future.result()
        except Exception as exc:
            self._stop_following(remote, f"{remote.distrust}, and looking its tag {remote.tag} up "
                                         f"failed ({_describe(exc)})")
            return
        if handle is not None and handle != remote.handle:  # the tag names the job: follow it
            self.store.record_submission(self.apply_id, remote.job.id, remote.attempt_id, handle)
            self._follow(remote, handle)
            return
        self._forget(remote)
        self._failed(op, f"{remote.distrust}, and no job carries its tag {remote.tag}: the "
                         "attempt is lost", transient=True, tag_absent=True)

    def _settle_fetch(self, op: _Op, future: Future) -> None:
        remote = op.about
        try:
            counts = future.result()
        except JobNotFound as exc:
            self._distrust(remote, f"the provider has no job {remote.handle} any more ({_describe(exc)})")
            return
        except TransientBackendError:
            self._poll_later(remote)  # the result stays at the provider: fetch again later
            return
        except Exception as exc:
            self._forget(remote)
            self._failed(op, _describe(exc), transient=False)
            return
        self._forget(remote)
        config = remote.job.backend_config
        adapter = remote_adapter_for(config["provider"], config["device"], config["options"],
                                     config.get("credentials"))
        metadata = {**adapter.metadata(), "remote_id": remote.handle}
        self._complete(op, counts, metadata)

    def _settle_cancel(self, op: _Op, future: Future) -> None:
        remote = op.about
        try:
            future.result()
        except JobNotFound:
            pass  # nothing left at the provider to cancel
        except TransientBackendError:
            self._poll_later(remote)  # try to cancel again at the next due time
            return
        except Exception as exc:  # the provider refuses: report it, do not ask forever
            self._forget(remote)
            self._failed(op, f"timed out, and the provider refused to cancel it: {_describe(exc)}",
                         transient=False)
            return
        self._forget(remote)
        timeout = self._timeout(remote.job)
        self._failed(op, f"timed out after {timeout:g} s; the remote job was cancelled",
                     transient=False)

    def _poll_later(self, remote: RemoteJob) -> None:
        remote.poll_later()

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

    def _failed(self, op: _Op, error: str, transient: bool, tag_absent: bool = False) -> None:
        attempt = op.job.attempts + 1
        retry_at = None
        if transient and attempt < self.manifest.retry.max_attempts:
            retry_at = time.time() + self._backoff(attempt)
        failed = self.store.fail_attempt(self.apply_id, op.job.id, op.attempt_id, error, retry_at,
                                         tag_absent=tag_absent)
        self.outcome.failed += len(failed)
        if failed:
            self.progress.experiments_finished(0, len(failed))

    # -- Ctrl-C

    def _stop_gracefully(self) -> None:
        """Stop starting jobs; keep what finishes; leave remote jobs to the next apply."""
        try:
            for future, op in list(self._in_flight.items()):
                if op.kind is Call.RUN and future.cancel():
                    self._in_flight.pop(future)
                    self.store.release_attempt(self.apply_id, op.job.id, op.attempt_id)
            self._remote.clear()  # submitted jobs stay with the provider, re-attached later
            for future, op in list(self._in_flight.items()):
                if op.kind not in (Call.RUN, Call.SUBMIT):
                    del self._in_flight[future]  # its job stays submitted in the state
            # Local runs finish and are kept; a submission's answer is waited for a while
            # (its handle spares the next apply a lookup), but not for ever: one left
            # unanswered stays "submitting", and its tag is looked up next time.
            submissions_until = time.time() + STOP_GRACE
            while self._in_flight:
                if time.time() > submissions_until:
                    for future, op in list(self._in_flight.items()):
                        if op.kind is Call.SUBMIT:
                            del self._in_flight[future]
                    if not self._in_flight:
                        break
                done, _ = wait(list(self._in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    self._settle(future)
                self._remote.clear()
            # Jobs recorded as started whose dispatch the interrupt cut short: back to pending.
            self.store.recover_interrupted(self.apply_id, [p for p, i in PROVIDERS.items() if i.local])
        except KeyboardInterrupt:
            # A second Ctrl-C: leave at once. Jobs still marked running are recovered
            # (run again) by the next apply; submitting ones are reconciled by their tag.
            if self._pool is not None:
                self._pool.terminate()


def _describe(exc: BaseException | None) -> str:
    return TaskFailed.of(exc).error if exc is not None else "no reason given"
