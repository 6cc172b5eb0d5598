"""Engine stage: the scheduler loop that takes stored jobs to done or failed.

The coordinator (this loop, in the main process) is the only writer of the state database.
Local simulation runs in a pool of worker processes that only compute: they receive a job's
tasks, return counts, and never see the database.

Order of events for each job, each step committed before the next begins:
    start_attempt (job running, attempt recorded) -> worker runs -> complete_job (results and
    done in one transaction) or fail_attempt (retry later under the policy, or failed).
A crash anywhere leaves at worst a job marked running, which the next apply runs again.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from .backends import PROVIDERS, run_local_job
from .backends.base import Task, TaskFailed, TransientBackendError
from .errors import BackendUnavailable
from .manifest import Manifest
from .planner import job_limits
from .store import JobRow, Store


@dataclass
class RunOutcome:
    finished: int = 0  # experiments that reached done in this run
    failed: int = 0  # experiments that failed for good in this run
    interrupted: bool = False
    errors: list = field(default_factory=list)


class NullProgress:
    """What the engine reports to; the CLI passes a rich progress bar instead."""

    def experiments_finished(self, done: int, failed: int) -> None:
        pass


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: workers start from a clean, single-threaded server process, so they never
    # inherit the coordinator's threads, locks or open database; Qiskit is preloaded there once.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["qrun.backends.preload"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_sigint)


class Engine:
    def __init__(self, store: Store, manifest: Manifest, apply_id: int, workers: int | None = None,
                 progress=None):
        self.store = store
        self.manifest = manifest
        self.apply_id = apply_id
        self.workers = workers or default_workers()
        self.progress = progress or NullProgress()
        self.outcome = RunOutcome()
        self._in_flight: dict[Future, tuple] = {}  # -> (job, attempt id, its slices)
        self._programs: dict = {}  # digest -> (format, content, item), shared by all tasks
        self._executor: ProcessPoolExecutor | None = None

    def run(self) -> RunOutcome:
        local = [p for p, info in PROVIDERS.items() if info.local]
        self.store.recover_interrupted(self.apply_id, local)
        try:
            self._loop()
        except KeyboardInterrupt:
            self.outcome.interrupted = True
            self._stop_gracefully()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
        return self.outcome

    # -- the loop

    def _loop(self) -> None:
        while True:
            self._fill()
            if not self._in_flight:
                wake_at = self.store.next_retry_time(self.apply_id)
                if wake_at is None:
                    return  # nothing pending: every job of the plan is done or failed
                time.sleep(min(max(0.0, wake_at - time.time()), 5.0))
                continue
            done, _ = wait(list(self._in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                self._settle(future)

    def _fill(self) -> None:
        """Start ready jobs while workers and per-backend limits have room."""
        room = 2 * self.workers - len(self._in_flight)  # keep every worker's queue fed
        if room <= 0:
            return
        per_backend: dict = {}
        for job, _, _ in self._in_flight.values():
            per_backend[job.backend] = per_backend.get(job.backend, 0) + 1
        # Jobs in flight are marked running, so they are not among the ready ones.
        for job in self.store.ready_jobs(self.apply_id, room * 4):
            if room <= 0:
                break
            cap = self._max_parallel(job)
            if cap is not None and per_backend.get(job.backend, 0) >= cap:
                continue
            self._start(job)
            per_backend[job.backend] = per_backend.get(job.backend, 0) + 1
            room -= 1

    def _max_parallel(self, job: JobRow) -> int | None:
        if job.backend in self.manifest.backends:
            return job_limits(self.manifest, job.backend).max_parallel
        return None

    def _start(self, job: JobRow) -> None:
        slices = self.store.job_work(job.id)
        tasks = [self._task(work) for work in slices]
        attempt_id = self.store.start_attempt(self.apply_id, job)
        config = job.backend_config
        future = self._pool().submit(run_local_job, config["provider"], config["device"],
                                     config["options"], job.seed, tasks)
        self._in_flight[future] = (job, attempt_id, slices)

    def _task(self, work) -> Task:
        program = self._programs.get(work.program)
        if program is None:
            program = self._programs[work.program] = self.store.program(work.program)
        fmt, content, item = program
        return Task(program_format=fmt, program_content=content, program_item=item,
                    program_digest=work.program, params=work.params, shots=work.shots)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = _pool(self.workers)
        return self._executor

    # -- outcomes

    def _settle(self, future: Future) -> None:
        job, attempt_id, slices = self._in_flight.pop(future)
        try:
            counts, metadata = future.result()
        except BrokenProcessPool:
            # A worker died (out of memory, a crash in a simulator): the pool is unusable.
            self._executor = None
            self._failed(job, attempt_id, "a worker process died while running this job",
                         transient=True)
            return
        except BackendUnavailable as exc:
            self._failed(job, attempt_id, str(exc), transient=False)
            return
        except TransientBackendError as exc:
            self._failed(job, attempt_id, _describe(exc), transient=True)
            return
        except Exception as exc:  # the adapter's own error: deterministic, reported as is
            self._failed(job, attempt_id, _describe(exc), transient=False)
            return
        results = [(s.experiment, s.index, c) for s, c in zip(slices, counts)
                   if not isinstance(c, TaskFailed)]
        failures = [(s.experiment, c.error) for s, c in zip(slices, counts) if isinstance(c, TaskFailed)]
        finished, failed = self.store.complete_job(self.apply_id, job.id, attempt_id, results,
                                                   failures, metadata)
        self.outcome.finished += len(finished)
        self.outcome.failed += len(failed)
        self.outcome.errors.extend(error for _, error in failures)
        self.progress.experiments_finished(len(finished), len(failed))

    def _failed(self, job: JobRow, attempt_id: int, error: str, transient: bool) -> None:
        policy = self.manifest.retry
        attempt = job.attempts + 1
        retry_at = None
        if transient and attempt < policy.max_attempts:
            delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (attempt - 1))
            retry_at = time.time() + delay * random.uniform(0.5, 1.0)  # jitter: no herds
        failed = self.store.fail_attempt(self.apply_id, job.id, attempt_id, error, retry_at)
        self.outcome.failed += len(failed)
        if failed:
            self.outcome.errors.append(error)
            self.progress.experiments_finished(0, len(failed))

    # -- Ctrl-C

    def _stop_gracefully(self) -> None:
        """Stop starting jobs; keep what running workers finish; put the rest back."""
        try:
            for future, (job, attempt_id, _) in list(self._in_flight.items()):
                if future.cancel():
                    self._in_flight.pop(future)
                    self.store.release_attempt(self.apply_id, job.id, attempt_id)
            while self._in_flight:
                done, _ = wait(list(self._in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    self._settle(future)
        except KeyboardInterrupt:
            # A second Ctrl-C: leave at once. Jobs still marked running are recovered
            # (run again) by the next apply.
            if self._executor is not None:
                for process in list(getattr(self._executor, "_processes", {}).values()):
                    process.terminate()


def _describe(exc: Exception) -> str:
    return TaskFailed.of(exc).error
