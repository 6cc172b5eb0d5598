"""Where local simulation runs: worker processes on this machine, or a Ray cluster.

Either way the engine hands a job's tasks to ``submit`` and gets a concurrent.futures
Future back, so it waits on local runs, Ray runs and cloud calls with one ``wait``. The
workers only compute; the coordinator stays the single writer of the state database.

    qrun apply M.yaml                          # a process pool, one worker per CPU
    qrun apply M.yaml --executor ray           # a Ray instance started for this run
    QRUN_RAY_ADDRESS=host:6379 qrun apply M.yaml --executor ray   # an existing cluster

Ray workers import qrun and the providers' SDKs themselves: install qrun on every node.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import socket
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import QrunError
from .providers.base import TransientBackendError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorChoice:
    kind: str = "local"  # local | ray
    workers: int | None = None  # local: processes; ray: tasks at once (default: cluster CPUs)
    ray_address: str | None = None  # None: start a private Ray instance for the run


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _prepare_worker(threads: int, coordinator: int) -> None:
    # Ctrl-C goes to the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_coordinator(coordinator)
    # Each worker's simulator would otherwise start an OpenMP thread per core: with one
    # worker per core that is cores x cores threads spinning on cores cores, and 100,000
    # tiny Aer experiments took 389 s instead of 19 s (bench/scale.py). Set before the
    # worker first loads Aer, whose OpenMP runtime reads it then; a user's setting wins.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process the moment its parent ends; False elsewhere.

    The kernel does it, so it works while this process sits in a simulator holding the
    GIL. (The parent is the thread that started this process: the fork server is started
    by the engine's loop, in the thread that runs the whole apply.)
    """
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _die_with_coordinator(coordinator: int) -> None:
    """Make this worker end as soon as the coordinator does, however it ends (SIGKILL too).

    Nothing else would stop it: a worker blocks in its simulator, and the fork server it
    comes from stays up while any worker holds its pipe, so left alone workers simulated
    for minutes with nobody to hand their results to. Two guards:
      - the kernel's parent-death signal: the fork server asks for it when it starts
        (backends/preload.py), so it is killed with the coordinator, and each worker asks for
        it here, so it is killed with the fork server;
      - a thread watching the coordinator itself (a pidfd the kernel makes readable when the
        process ends, or a check every half second), for systems without prctl and a fork
        server that died on its own.
    """
    die_with_parent()
    try:
        watched = os.pidfd_open(coordinator)
    except ProcessLookupError:  # gone already (maybe before the parent-death signal was set)
        os._exit(0)
    except (AttributeError, OSError):  # not Linux 5.3+: ask now and then
        watched = None

    def watch() -> None:
        if watched is not None:
            select.select([watched], [], [])
        else:
            import psutil

            while psutil.pid_exists(coordinator):
                time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, name="qrun-watch-coordinator", daemon=True).start()


class LocalPool:
    """A pool of worker processes, started on the first job and replaced if one dies."""

    def __init__(self, workers: int | None):
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn, *args) -> Future:
        if self._pool is None:
            self._pool = self._start()
        return self._pool.submit(fn, *args)

    def _start(self) -> ProcessPoolExecutor:
        # forkserver: workers start from a clean, single-threaded server process, so they never
        # inherit the coordinator's threads, locks or open database; Qiskit is preloaded there once.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            context.set_forkserver_preload(["qrun.providers.preload"])
        threads = max(1, default_workers() // self.workers)  # the cores shared out
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                   initializer=_prepare_worker, initargs=(threads, os.getpid()))

    def broken(self) -> None:
        """A worker died and took the pool down: the next job starts a fresh one."""
        self._pool = None

    def shutdown(self, wait: bool = False) -> None:
        """Stop the workers; with ``wait``, return once they are gone (they are idle then).

        The fork server they came from ends by itself when this process ends."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)

    def terminate(self) -> None:
        """Stop the workers now (a second Ctrl-C or SIGTERM)."""
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()


class RayPool:
    """Runs jobs as Ray tasks; their futures settle in the coordinator like local ones."""

    def __init__(self, workers: int | None, address: str | None):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
        try:
            import ray
        except ImportError:
            raise QrunError("--executor ray needs Ray: pip install 'qrun[ray]'") from None
        self._ray = ray
        if address:
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or default_workers(), include_dashboard=False,
                         logging_level=logging.ERROR, log_to_driver=False)
        except Exception as exc:  # no cluster there, a version mismatch...
            where = f"at {address}" if address else "on this machine"
            raise QrunError(f"cannot start or reach Ray {where}: {exc}") from None
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote: Any = None  # the Ray remote function, made on the first job

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)``, which returns (outcomes, metadata), as a Ray task."""
        if self._remote is None:
            # No retries by Ray: a lost task comes back as transient, and the engine's
            # retry policy decides, as for a local worker that died.
            self._remote = self._ray.remote(max_retries=0)(_in_ray_worker)
        settled: Future = Future()
        ray_future = self._remote.remote(fn, *args).future()
        ray_future.add_done_callback(lambda f: self._settle(f, settled))
        return settled

    def _settle(self, ray_future: Future, settled: Future) -> None:
        """Give the engine the task's own exception, or a transient one for Ray's failures."""
        if settled.cancelled():  # Ctrl-C withdrew the job meanwhile
            return
        exceptions = self._ray.exceptions
        try:
            settled.set_result(ray_future.result())
        except exceptions.RayTaskError as exc:  # the job's own error, as the worker raised it
            settled.set_exception(exc.cause if exc.cause is not None else exc)
        except exceptions.RayError as exc:  # a worker or node died, an object was lost
            settled.set_exception(TransientBackendError(f"Ray lost the task: {exc}"))
        except BaseException as exc:  # noqa: BLE001 (the engine decides what it means)
            settled.set_exception(exc)

    def broken(self) -> None:
        pass  # Ray replaces dead workers itself

    def shutdown(self, wait: bool = False) -> None:
        self._ray.shutdown()

    def terminate(self) -> None:
        self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a cluster that is not there: Ray itself waits minutes for it."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise QrunError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one "
                        "with `ray start --head`, or leave out the address to run Ray here") from None


def _in_ray_worker(fn, *args):
    """Runs in a Ray worker: the job, with the node it ran on added to its metadata."""
    import ray

    outcomes, metadata = fn(*args)
    return outcomes, {**metadata, "ray_node": ray.get_runtime_context().get_node_id()}


def start(choice: ExecutorChoice):
    """The pool local jobs run in, for the chosen executor."""
    if choice.kind == "ray":
        return RayPool(choice.workers, choice.ray_address)
    return LocalPool(choice.workers)
