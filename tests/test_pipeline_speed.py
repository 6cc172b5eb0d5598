"""The faster way local jobs reach their workers (issue 12) gives the same results.

Workers now come from a fork server started before validation, which imports Qiskit (and
a lone adapter's SDK) once; with several adapters each worker imports a share of them as it
starts, and a job goes to a worker that has its adapter. None of that may change a count:
the jobs below run in such a pool and, as the reference, directly in this process (the
adapter called as it always was), and their counts must be equal, outcome for outcome,
for the same seed. Circuits: bench/_circuits.py's random ones in OpenQASM 2 and 3 and the
QASMBench subset in tests/data, on Aer and on IBM's local fake backend; the example Pulser
sequence and Perceval circuits. No timing is asserted here (bench/quickstart.py and
bench/overhead_aer.py measure it).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from qrun import api, executors
from qrun.providers import PROVIDERS
from qrun.providers.base import Task
from qrun.providers.local import run_local_job

from .braket_corpus import qasmbench

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import _circuits  # noqa: E402  (bench/_circuits.py)


def _task(fmt: str, content: bytes, shots: int = 400, params: dict | None = None,
          item: int | None = None) -> Task:
    digest = hashlib.sha256(fmt.encode() + content).hexdigest()
    return Task(program_format=fmt, program_content=content, program_item=item,
                program_digest=digest, params=params or {}, shots=shots)


def _gate_tasks() -> list:
    """bench/_circuits.py circuits (both OpenQASM versions) and QASMBench's small ones."""
    tasks = []
    for ops in _circuits.circuits(12, 4, 8, seed=5):
        tasks.append(_task("qasm2", _circuits.qasm2(ops, 4).encode()))
        tasks.append(_task("qasm3", _circuits.qasm3(ops, 4).encode()))
    tasks += [_task(p.format, p.text.encode()) for p in qasmbench(max_qubits=5)]
    return tasks


def _manifest_tasks(name: str) -> tuple:
    """(provider, device, options, tasks) of an example manifest's first backend, one task
    per circuit and sweep point (what an apply of it would send)."""
    manifest = api.validate(REPO / "examples" / name)
    backend = next(iter(manifest.backends.values()))
    from qrun import planner

    tasks = []
    for experiment in planner.experiments(manifest):
        if experiment.backend != backend.name:
            continue
        program = manifest.circuits[experiment.circuit].program
        tasks.append(Task(program_format=program.format, program_content=program.content,
                          program_item=None, program_digest=program.digest,
                          params=dict(experiment.params), shots=experiment.shots))
    return backend.provider, backend.device, backend.options, tasks


def _jobs() -> list:
    """(provider, device, options, seed, tasks) of every job compared."""
    gate = _gate_tasks()
    five_qubits = [t for t in gate if b"qreg q[4]" in t.program_content or b"qubit[4]" in t.program_content]
    jobs = [("qiskit.aer", "automatic", {}, 11, gate),
            ("qiskit.aer", "statevector", {}, 12, gate[:10]),
            ("qiskit.ibm-local", "fake_manila", {}, 13, five_qubits[:4])]
    for example, seed in (("pulser.yaml", 14), ("perceval.yaml", 15)):
        provider, device, options, tasks = _manifest_tasks(example)
        jobs.append((provider, device, options, seed, tasks[:3]))
    return jobs


@pytest.fixture(scope="module")
def jobs():
    return _jobs()


def test_a_pool_with_its_adapters_preloaded_gives_the_counts_of_a_direct_run(jobs):
    assert sum(len(job[4]) for job in jobs) > 40  # the corpora were found
    modules = sorted({PROVIDERS[job[0]].adapter for job in jobs})
    pool = executors.LocalPool(2, modules)  # shared out: two adapters a worker or so
    try:
        futures = [pool.submit(run_local_job, *job, affinity=PROVIDERS[job[0]].adapter)
                   for job in jobs]
        pooled = [future.result(timeout=300) for future in futures]
    finally:
        pool.shutdown(wait=True)
    for job, (counts, metadata) in zip(jobs, pooled):
        direct, direct_metadata = run_local_job(*job)
        assert counts == direct, f"{job[0]} on {job[1]}: counts differ from a direct run"
        assert metadata == direct_metadata
        assert all(isinstance(c, dict) and sum(c.values()) == t.shots
                   for c, t in zip(counts, job[4])), f"{job[0]}: a task failed"


def _where(module: str) -> tuple:
    """(this worker's pid, whether ``module`` was imported before this job asked)."""
    loaded = module in sys.modules
    __import__(module)
    return os.getpid(), loaded


def test_jobs_go_to_the_worker_that_imported_their_adapter():
    # Two stand-in "adapters" from the standard library that nothing else imports.
    pool = executors.LocalPool(2, ["colorsys", "netrc"])
    try:
        runs = [pool.submit(_where, module, affinity=module).result(timeout=60)
                for module in ("colorsys", "netrc", "colorsys", "netrc")]
        # A module no worker was given: imported by the worker that gets its job.
        stranger = pool.submit(_where, "tabnanny", affinity="tabnanny").result(timeout=60)
    finally:
        pool.shutdown(wait=True)
    assert all(loaded for _, loaded in runs), "a job ran where its adapter was not imported"
    assert runs[0][0] == runs[2][0] != runs[1][0] == runs[3][0]
    assert stranger[1] is False


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_an_even_load_wins_over_affinity():
    # All the work is one adapter's: it is not left queued on the one worker holding it.
    pool = executors.LocalPool(2, ["colorsys", "netrc"])
    try:
        futures = [pool.submit(_pid_after, 0.2, affinity="colorsys") for _ in range(8)]
        pids = {future.result(timeout=60) for future in futures}
    finally:
        pool.shutdown(wait=True)
    assert len(pids) == 2


def test_the_adapters_a_manifest_names_are_guessed_from_its_text(tmp_path):
    quickstart = executors.local_adapters_named_in(REPO / "examples" / "quickstart.yaml")
    assert quickstart == sorted(PROVIDERS[p].adapter for p in
                                ("qiskit.aer", "braket.local", "qiskit.ibm-local", "pulser.local",
                                 "perceval.local"))
    flow = tmp_path / "flow.yaml"
    flow.write_text('backends: [{name: a, "provider": "qiskit.aer"}, {provider: braket.aws}]\n')
    assert executors.local_adapters_named_in(flow) == [PROVIDERS["qiskit.aer"].adapter]
    assert executors.local_adapters_named_in(tmp_path / "missing.yaml") == []
    (tmp_path / "other.yaml").write_text("provider: no.such.provider\n")
    assert executors.local_adapters_named_in(tmp_path / "other.yaml") == []


def test_the_engine_takes_the_early_pool_and_an_untaken_one_stops(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("backends:\n  - {name: aer, provider: qiskit.aer}\n")
    choice = executors.ExecutorChoice(workers=1)
    executors.start_early(choice, manifest)
    early = executors._early[(1, (PROVIDERS["qiskit.aer"].adapter,))]
    assert executors.start(choice, [PROVIDERS["qiskit.aer"].adapter]) is early
    assert early.submit(os.getpid).result(timeout=60) > 0
    early.shutdown(wait=True)

    from multiprocessing import forkserver

    executors.start_early(choice, manifest)
    untaken = executors._early[(1, (PROVIDERS["qiskit.aer"].adapter,))]
    executors.discard_early()  # the apply ended before any engine took it
    assert not executors._early
    untaken._starting.join(60)  # it kills its worker once started
    server = psutil.Process(forkserver._forkserver._forkserver_pid)

    def workers() -> list:
        return [p for p in server.children() if p.status() != psutil.STATUS_ZOMBIE]
    deadline = time.time() + 60
    while workers() and time.time() < deadline:
        time.sleep(0.1)
    assert not workers(), "the discarded pool's worker is still running"


def _openmp_threads() -> int:
    """What the OpenMP runtime Aer loaded would start per parallel region, in this process."""
    import ctypes

    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "libgomp" in line)
    return ctypes.CDLL(path).omp_get_max_threads()


@pytest.mark.skipif(executors.default_workers() < 2 or not sys.platform.startswith("linux"),
                    reason="needs two cores and Linux's fork server")
def test_aer_preloaded_by_the_fork_server_still_shares_the_cores():
    # OpenMP reads OMP_NUM_THREADS once, when Aer loads it: now in the fork server, so the
    # server must start with it set, or every worker's Aer would run a thread per core
    # (bench/scale.py: 389 s instead of 21). A fresh process: its fork server is its own.
    workers = executors.default_workers()
    probe = ("from qrun import executors; from tests.test_pipeline_speed import _openmp_threads; "
             f"pool = executors.LocalPool({workers}, ['{PROVIDERS['qiskit.aer'].adapter}']); "
             "print(pool.submit(_openmp_threads).result(timeout=120)); pool.shutdown(wait=True)")
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    import subprocess

    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=180, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
