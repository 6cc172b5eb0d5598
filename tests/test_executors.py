"""The local worker pool: how it sets its workers up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qrun import executors


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_share_the_cores_between_their_threads(workers, monkeypatch):
    # Without a limit each worker's Aer starts a thread per core, and the workers' threads
    # fight for the cores (bench/scale.py ran 20x slower).
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pool = executors.LocalPool(workers)
    try:
        threads = {pool.submit(os.getenv, "OMP_NUM_THREADS").result(timeout=60) for _ in range(4)}
    finally:
        pool.shutdown()
    assert threads == {str(max(1, executors.default_workers() // workers))}


def test_a_users_thread_setting_wins():
    # In a fresh process: the pool's fork server keeps the environment it started with.
    probe = ("import os; from qrun import executors; pool = executors.LocalPool(2); "
             "print(pool.submit(os.getenv, 'OMP_NUM_THREADS').result(timeout=60)); pool.shutdown()")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OMP_NUM_THREADS": "3"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
