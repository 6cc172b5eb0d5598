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

import importlib
import logging
import multiprocessing
import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import QrunError
from .providers.base import TransientBackendError

EXECUTORS = ("local", "ray")
# The adapter modules the fork server imports once for all workers (read by preload.py).
PRELOAD_VARIABLE = "QRUN_PRELOAD_ADAPTERS"


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


def worker_threads(workers: int) -> str:
    """OMP_NUM_THREADS for each of ``workers`` workers: the cores shared out, or the user's.

    Each worker's simulator would otherwise start an OpenMP thread per core: with one
    worker per core that is cores x cores threads spinning on cores cores, and 100,000
    tiny Aer experiments took 389 s instead of 19 s (bench/scale.py). OpenMP reads it when
    its runtime loads, which is in the fork server when it preloads Aer (start_fork_server),
    else in the worker."""
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, default_workers() // workers))


def _prepare_worker(threads: str, coordinator: int, imports: tuple = ()) -> None:
    # Ctrl-C goes to the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_coordinator(coordinator)
    # Set, not defaulted: the fork server may have started for an earlier pool of this
    # process with another share (the user's own setting is in ``threads`` already).
    os.environ["OMP_NUM_THREADS"] = threads
    for module in imports:  # this worker's share of the adapters (LocalPool)
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 (the job that needs it meets and reports the error)
            pass


def start_fork_server(workers: int, adapter_modules: Iterable[str] = ()) -> bool:
    """Start the fork server the local workers come from, if it is not running yet.

    It starts at once and imports Qiskit and the given adapter modules (with their SDKs)
    in its own process, once for all workers: each worker is forked from it with them
    loaded. Called as soon as an apply knows its backends, the imports run on another
    core while the coordinator validates the manifest and stores the plan. Returns at once;
    the first worker waits for the imports. A server already running keeps what it
    imported (adapters it lacks are imported by the workers that need them), and the
    OpenMP thread count Aer read there: a process that runs pools of different sizes one
    after the other (tests) keeps its first pool's share. False where there is no fork
    server (not Linux): the workers then start by spawning.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(["qrun.providers.preload"])
    # The server keeps the environment it starts with; set only for its start.
    with _environment({PRELOAD_VARIABLE: ",".join(sorted(set(adapter_modules))),
                       "OMP_NUM_THREADS": worker_threads(workers)}):
        forkserver.ensure_running()
    return True


@contextmanager
def _environment(values: dict) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# `provider: qiskit.aer` (block or flow style, quoted or not) anywhere in a manifest.
_PROVIDER_NAMED = re.compile(r"""\bprovider["']?\s*:\s*["']?([A-Za-z0-9_.\-]+)""")


def local_adapters_named_in(manifest: str | Path) -> list[str]:
    """The adapter modules of the local providers a manifest's text seems to name.

    A guess made before validation, so that the fork server can start importing their
    SDKs (start_fork_server) while the manifest is validated: a wrong guess costs time
    only (an adapter missed is imported by the workers; one too many, imported for
    nothing), and a file that cannot be read gives none (validation says why).
    """
    from .providers import PROVIDERS

    try:
        text = Path(manifest).read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return []
    named = set(_PROVIDER_NAMED.findall(text))
    modules = []
    for provider in sorted(named):
        spec = PROVIDERS.get(provider)  # None: not a provider (validation reports it)
        if spec is not None and spec.local:
            modules.append(spec.adapter)
    return sorted(modules)


_early: dict = {}  # (workers, adapter modules) -> the LocalPool start_early began
_early_lock = threading.Lock()


def start_early(choice: ExecutorChoice, manifest: str | Path) -> None:
    """Start the local workers for an apply of ``manifest`` now, before it is validated.

    The fork server is started here (from this thread: it dies with the thread that
    started it, which runs the whole apply), the workers in a background thread as soon as
    it is ready; they import their SDKs while the coordinator validates and stores the
    plan. The engine's ``start`` then takes this pool; one nobody takes is stopped by
    ``discard_early``. A no-op for Ray, a manifest naming no local provider, or a second call.
    """
    if choice.kind != "local":
        return
    modules = tuple(sorted(set(local_adapters_named_in(manifest))))
    if not modules:
        return
    key = (choice.workers or default_workers(), modules)
    with _early_lock:
        if key in _early:
            return
        pool = _early[key] = LocalPool(*key)
    pool.start_soon()


def discard_early() -> None:
    """Stop the workers start_early began that no engine took (the apply ended before)."""
    with _early_lock:
        pools = list(_early.values())
        _early.clear()
    for pool in pools:
        pool.discard()


@contextmanager
def started_early(choice: ExecutorChoice, manifest: str | Path) -> Iterator[None]:
    """``start_early`` for the length of an apply, with ``discard_early`` after it."""
    start_early(choice, manifest)
    try:
        yield
    finally:
        discard_early()


PR_SET_PDEATHSIG = 1  # linux/prctl.h
# How long an apply that ends before its engine waits for early workers still starting.
DISCARD_GRACE = 15.0


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


# A job goes to the worker that has its adapter imported, unless that worker has this many
# more jobs waiting than the least busy one: then importing it there is worth it.
AFFINITY_SLACK = 2


class _Worker:
    """One worker process (an executor of one), with the adapters it has imported or will."""

    def __init__(self, executor: ProcessPoolExecutor, modules: Iterable[str]):
        self.executor = executor
        self.modules = set(modules)
        self.in_flight = 0


class LocalPool:
    """Worker processes on this machine, started on the first job; one that dies is replaced.

    ``adapter_modules``: the local adapters the jobs will use. Their SDKs are imported once:
    by the fork server when there is one adapter, else shared out between the workers,
    which import their shares side by side as they start, on different cores (the
    quickstart's four SDKs took 4.2 s one after the other). A job then goes to a worker
    that has its adapter (``submit``'s ``affinity``) unless the load is uneven; a worker that
    gets a job of another adapter imports that one too.
    """

    def __init__(self, workers: int | None, adapter_modules: Iterable[str] = ()):
        self.workers = workers or default_workers()
        self.adapter_modules = tuple(sorted(set(adapter_modules)))
        self._slots: list[_Worker] | None = None
        self._context: Any = None
        self._lock = threading.Lock()  # in_flight is lowered by the executors' threads
        self._starting: threading.Thread | None = None
        self._stopped = False
        self._discarded = False

    def start_soon(self) -> None:
        """Start the workers in a background thread (the fork server at once, from this one)."""
        shared = len(self.adapter_modules) > 1
        start_fork_server(self.workers, () if shared else self.adapter_modules)
        self._starting = threading.Thread(target=self._started, name="qrun-start-workers", daemon=True)
        self._starting.start()

    def _started(self) -> None:
        slots = self._start()
        with self._lock:
            self._slots = slots
            stop, kill = self._stopped, self._discarded
        if kill:
            self.terminate()
        if stop:  # stopped while they started
            self._stop(wait=False)

    def discard(self) -> None:
        """Stop workers nobody used: killed, not waited for. (Stopped gently, each would
        first finish its imports, and this process's exit waits for them.)

        Their start is waited for first, a bounded time: a process that exits while the
        fork server still spawns a worker leaves that worker unpickling a lock this process
        has removed, and its traceback reached the terminal after a clear error (a bad
        manifest, a read-only state folder)."""
        with self._lock:
            self._stopped = self._discarded = True
        if self._starting is not None:
            self._starting.join(timeout=DISCARD_GRACE)
        with self._lock:
            started = self._slots is not None
        if started:
            self.terminate()
            self._stop(wait=False)

    def _wait_started(self) -> None:
        """Wait for start_soon's workers (they exist once the fork server has its imports)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None

    def submit(self, fn, *args, affinity: str | None = None) -> Future:
        """Run ``fn(*args)`` in a worker; ``affinity``: the adapter module the job uses."""
        self._wait_started()
        if self._slots is None:
            self._slots = self._start()
        slot = self._choose(affinity)
        try:
            future = slot.executor.submit(fn, *args)
        except BrokenProcessPool:  # it died since its last job: a fresh one takes this
            self._replace(slot)
            future = slot.executor.submit(fn, *args)
        with self._lock:
            slot.in_flight += 1
        future.add_done_callback(lambda _: self._finished(slot))
        return future

    def _finished(self, slot: _Worker) -> None:
        with self._lock:
            slot.in_flight -= 1

    def _choose(self, affinity: str | None) -> _Worker:
        assert self._slots is not None
        with self._lock:
            least = min(self._slots, key=lambda w: w.in_flight)
            holders = [w for w in self._slots if affinity in w.modules]
            if holders:
                best = min(holders, key=lambda w: w.in_flight)
                if best.in_flight <= least.in_flight + AFFINITY_SLACK:
                    return best
            if affinity is not None:
                least.modules.add(affinity)  # it imports the adapter with this job
            return least

    def _start(self) -> list[_Worker]:
        # forkserver: workers start from a clean, single-threaded server process, so they never
        # inherit the coordinator's threads, locks or open database; Qiskit (and a lone
        # adapter's SDK) is preloaded there once, maybe already (start_early).
        shared = len(self.adapter_modules) > 1
        forked = start_fork_server(self.workers, () if shared else self.adapter_modules)
        self._context = multiprocessing.get_context("forkserver" if forked else "spawn")
        shares: list[list[str]] = [[] for _ in range(self.workers)]
        if shared:
            for i, module in enumerate(self.adapter_modules):
                shares[i % self.workers].append(module)
        else:
            shares = [list(self.adapter_modules) for _ in range(self.workers)]
        slots = [_Worker(self._executor(share if shared else ()), share) for share in shares]
        for slot in slots:  # start every worker now: their imports run side by side
            slot.executor.submit(int)
        return slots

    def _executor(self, imports: Iterable[str]) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=self._context,
                                   initializer=_prepare_worker,
                                   initargs=(worker_threads(self.workers), os.getpid(), tuple(imports)))

    def _replace(self, slot: _Worker) -> None:
        slot.executor.shutdown(wait=False, cancel_futures=True)
        slot.executor = self._executor(sorted(slot.modules))

    def broken(self) -> None:
        """A worker died (its jobs failed with BrokenProcessPool): start a fresh one in its place."""
        for slot in self._slots or []:
            if getattr(slot.executor, "_broken", False):
                self._replace(slot)

    def shutdown(self, wait: bool = False) -> None:
        """Stop the workers; with ``wait``, return once they are gone (they are idle then).

        The fork server they came from ends by itself when this process ends. Without
        ``wait``, workers still being started are stopped once started (not waited for)."""
        if wait:
            self._wait_started()
        with self._lock:
            self._stopped = True
            starting = self._slots is None and self._starting is not None
        if not starting:
            self._stop(wait)

    def _stop(self, wait: bool) -> None:
        for slot in self._slots or []:
            slot.executor.shutdown(wait=False, cancel_futures=True)
        if wait:  # all told first, then waited for: they stop side by side
            for slot in self._slots or []:
                slot.executor.shutdown(wait=True)

    def terminate(self) -> None:
        """Stop the workers now (a second Ctrl-C or SIGTERM)."""
        for slot in self._slots or []:  # those started so far (a start under way is not waited for)
            # None once the executor is shut down (by the starting thread, or an earlier stop)
            for process in list((getattr(slot.executor, "_processes", None) or {}).values()):
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

    def submit(self, fn, *args, affinity: str | None = None) -> Future:
        """Run ``fn(*args)``, which returns (outcomes, metadata), as a Ray task (Ray places
        it: ``affinity`` is for local workers)."""
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


def start(choice: ExecutorChoice, adapter_modules: Iterable[str] = ()):
    """The pool local jobs run in, for the chosen executor (``adapter_modules``: the local
    adapters its jobs use, imported once): the one start_early began for them, if any."""
    if choice.kind == "ray":
        return RayPool(choice.workers, choice.ray_address)
    workers = choice.workers or default_workers()
    with _early_lock:  # its adapters were guessed: one it lacks is imported where needed
        early = next((key for key in _early if key[0] == workers), None)
        if early is not None:
            return _early.pop(early)
    return LocalPool(workers, adapter_modules)
