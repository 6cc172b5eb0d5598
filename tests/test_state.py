"""The state database: damaged or foreign files, locks, failures and retries."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from qrun.errors import LockedError, StateError
from qrun.store import SCHEMA_VERSION, Store

from .conftest import qrun, write

SMALL = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: small}
    spec:
      shots: 20
      circuits: [{name: ghz, source: circuits/ghz.qasm}]
      backends: [{name: aer, provider: qiskit.aer}]
"""


@pytest.fixture
def small(project):
    return write(project, "small.yaml", SMALL)


def test_new_database_is_wal_and_versioned(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with Store.open(tmp_path / "s.sqlite") as again:  # reopening migrates nothing
        assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize("damage, message", [
    ("foreign", "not a qrun state database"),
    ("newer", "written by a newer qrun"),
    ("garbage", "not a usable qrun state database"),
])
def test_damaged_or_foreign_state_is_refused_untouched(small, _state_dir, damage, message):
    _state_dir.mkdir(parents=True)
    db = _state_dir / "small.sqlite"
    if damage == "foreign":
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("CREATE TABLE notes (text)")
            conn.execute("INSERT INTO notes VALUES ('precious')")
    elif damage == "newer":
        Store.open(db).close()
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA user_version = 999")
    else:
        db.write_bytes(b"this is not sqlite at all" * 100)
    before = db.read_bytes()
    result = qrun("apply", small)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_live_lock_holder_is_named_and_respected(small, _state_dir):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        db = _state_dir / "small.sqlite"
        with Store.open(db) as store:
            store.conn.execute(
                "INSERT INTO locks(name, host, pid, pid_started, since, token, command) "
                "VALUES ('small', ?, ?, NULL, 0, 'x', 'apply')", (socket.gethostname(), holder.pid))
        blocked = qrun("apply", small)
        assert blocked.returncode == 1
        assert f"pid {holder.pid} on host {socket.gethostname()}" in blocked.stderr
        refused = qrun("unlock", small)
        assert refused.returncode == 1 and "locked by" in refused.stderr
        assert "locked by pid" in qrun("status", small).stdout
    finally:
        holder.kill()
        holder.wait()
    broken = qrun("unlock", small)
    assert broken.returncode == 0 and f"lock of pid {holder.pid}" in broken.stdout
    assert qrun("apply", small).returncode == 0


def test_lock_from_another_host_needs_force(small, _state_dir):
    with Store.open(_state_dir / "small.sqlite") as store:
        store.conn.execute("INSERT INTO locks(name, host, pid, since, token, command) "
                           "VALUES ('small', 'elsewhere', 1, 0, 'x', 'apply')")
    assert qrun("apply", small).returncode == 1
    assert qrun("unlock", small).returncode == 1
    assert qrun("unlock", small, "--force").returncode == 0
    assert qrun("apply", small).returncode == 0


def test_lock_api(tmp_path):
    with Store.open(tmp_path / "l.sqlite") as first, Store.open(tmp_path / "l.sqlite") as second:
        first.acquire_lock("c", "apply")
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            second.acquire_lock("c", "apply")
        first.release_lock("c")
        second.acquire_lock("c", "apply")
        second.release_lock("c")


def test_missing_state_is_an_error_for_export(small, tmp_path):
    result = qrun("export", small, "-o", tmp_path / "x.jsonl")
    assert result.returncode == 2 and "run qrun apply first" in result.stderr
    with pytest.raises(StateError):
        Store.open(tmp_path / "none.sqlite", create=False)


# A 40-qubit non-Clifford circuit passes validation (Aer's automatic method has no fixed
# ceiling) but Aer cannot allocate it: a deterministic failure of that experiment alone.
TOO_BIG = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[40];\ncreg c[40];\n" + \
    "".join(f"rx(0.1) q[{i}];\n" for i in range(40)) + "measure q -> c;\n"


def test_one_failing_experiment_does_not_sink_its_job(project, _state_dir):
    write(project, "circuits/big.qasm", TOO_BIG)
    manifest = write(project, "mixed.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: mixed}
        spec:
          shots: 20
          circuits:
            - {name: ghz, source: circuits/ghz.qasm}
            - {name: big, source: circuits/big.qasm}
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.1, 0.2]}}
          backends: [{name: aer, provider: qiskit.aer}]
          split: {max_experiments_per_job: 10}
          retry: {max_attempts: 3}
    """)
    result = qrun("apply", manifest)
    assert result.returncode == 1, result.stderr
    assert "failed experiments" in result.stderr and "big" in result.stderr
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert status["experiments"] == {"total": 4, "done": 3, "failed": 1, "pending": 0}
    assert status["failures"][0]["circuit"] == "big"
    db = sqlite3.connect(_state_dir / "mixed.sqlite")
    # Deterministic: tried once, not retried blindly.
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 1
    done_before = dict(db.execute("SELECT experiment, completed_at FROM results"))

    plan = qrun("plan", manifest, "-o", "json")
    assert json.loads(plan.stdout)["totals"]["failed"] == 1
    assert qrun("apply", manifest).returncode == 1  # apply does not rerun failures
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 1

    retried = qrun("retry", manifest)
    assert retried.returncode == 1  # still failing: the cause was not removed
    assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 2
    assert dict(db.execute("SELECT experiment, completed_at FROM results")) == done_before
