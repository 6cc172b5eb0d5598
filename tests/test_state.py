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
from qrun.store import read as read_state

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
    ("truncated", "shorter than its own header says"),
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
    elif damage == "truncated":  # a campaign with results, cut in half (a copy that failed)
        assert qrun("apply", small).returncode == 0
        os.truncate(db, db.stat().st_size // 2)
    else:
        db.write_bytes(b"this is not sqlite at all" * 100)
    before = db.read_bytes()
    for command in ("apply", "status", "export"):
        args = ("-o", str(_state_dir / "out.csv")) if command == "export" else ()
        result = qrun(command, small, *args)
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
    db = _state_dir / "mixed.sqlite"
    # Deterministic: tried once, not retried blindly.
    assert _attempt_count(db) == 1
    done_before = _completed(db)

    plan = qrun("plan", manifest, "-o", "json")
    assert json.loads(plan.stdout)["totals"]["failed"] == 1
    assert qrun("apply", manifest).returncode == 1  # apply does not rerun failures
    assert _attempt_count(db) == 1

    retried = qrun("retry", manifest)
    assert retried.returncode == 1  # still failing: the cause was not removed
    assert _attempt_count(db) == 2
    assert _completed(db) == done_before


def _attempt_count(db) -> int:
    with read_state(db) as state:
        return len(state.attempts())


def _completed(db) -> dict:
    with read_state(db) as state:
        return {r.experiment: r.completed_at for r in state.results()}

# -- a read-only runs folder, a full disk

SWEEP = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: grow}
    spec:
      shots: 20
      circuits:
        - {name: rot, source: circuits/rot.qasm, sweep: {theta: {linspace: [0, 3.14159, POINTS]}}}
      backends: [{name: aer, provider: qiskit.aer}]
      split: {max_experiments_per_job: 50}
"""


def _without_root_override():
    """For a child process: obey file permissions even as root, as any user would.

    Root ignores a folder's missing write bit through CAP_DAC_OVERRIDE. Dropped from the
    bounding set before exec, the command runs without it (files owned by root stay
    readable: root is their owner)."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


def _as_user(*args, limit_file_size=None) -> subprocess.CompletedProcess:
    """qrun in a child that obeys permissions and, optionally, cannot grow a file past a size:
    RLIMIT_FSIZE makes writes beyond it fail as on a full disk (Python ignores SIGXFSZ)."""
    def prepare():
        _without_root_override()
        if limit_file_size is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))
    return subprocess.run([sys.executable, "-m", "qrun", *map(str, args)], capture_output=True,
                          text=True, timeout=300, preexec_fn=prepare)


def _results(db) -> dict:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(conn.execute("SELECT experiment, counts || completed_at FROM results"))


def test_read_only_runs_folder(project, _state_dir):
    archived = write(project, "grow.yaml", SWEEP.replace("POINTS", "6"))
    assert qrun("apply", archived).returncode == 0
    kept = _results(_state_dir / "grow.sqlite")
    fresh = write(project, "fresh.yaml", SWEEP.replace("grow", "fresh").replace("POINTS", "2"))
    # An archived campaign: the database alone (the test's own reads left SQLite's empty
    # log files), on what behaves as a read-only mount: nothing in the folder can be written.
    for log in _state_dir.glob("grow.sqlite-*"):
        assert log.name.endswith("-shm") or log.stat().st_size == 0
        log.unlink()
    files = list(_state_dir.iterdir())
    for path in [*files, _state_dir]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        probe = subprocess.run(["touch", str(_state_dir / "probe")], preexec_fn=_without_root_override)
        assert probe.returncode != 0, "the folder must really be read-only for the command"
        # Nothing can be written: a clear error, exit 2, nothing touched.
        for manifest in (archived, fresh):
            applied = _as_user("apply", manifest)
            assert applied.returncode == 2 and "Traceback" not in applied.stderr, applied.stderr
            assert "not writable" in applied.stderr and "--state-dir" in applied.stderr
        # An archived campaign can still be read.
        status = _as_user("status", archived, "-o", "json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["experiments"]["done"] == 6
        exported = _as_user("export", archived, "-o", project / "out.jsonl")
        assert exported.returncode == 0, exported.stderr
        assert len((project / "out.jsonl").read_text().splitlines()) == 6
        assert sorted(_state_dir.iterdir()) == sorted(files)
    finally:
        for path in [_state_dir, *files]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert _results(_state_dir / "grow.sqlite") == kept


def test_full_disk_during_apply_loses_nothing_and_the_next_apply_carries_on(project, _state_dir):
    manifest = write(project, "grow.yaml", SWEEP.replace("POINTS", "20"))
    assert qrun("apply", manifest).returncode == 0
    db = _state_dir / "grow.sqlite"
    kept = _results(db)
    # The campaign grows a hundredfold; the disk has room for 32 KiB more.
    write(project, "grow.yaml", SWEEP.replace("POINTS", "2000"))
    full = _as_user("apply", manifest, limit_file_size=db.stat().st_size + 32 * 1024)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "disk is full or failing" in full.stderr and "Traceback" not in full.stderr
    after = _results(db)  # intact (integrity_check), and every result stored before is there
    assert {k: after[k] for k in kept} == kept
    # Space freed: the next apply finishes the campaign, without running anything twice.
    done = qrun("apply", manifest)
    assert done.returncode == 0, done.stderr
    final = _results(db)
    assert {k: final[k] for k in after} == after
    status = json.loads(qrun("status", manifest, "-o", "json").stdout)
    assert status["experiments"] == {"total": 2000, "done": 2000, "failed": 0, "pending": 0}


def test_full_disk_during_export_keeps_the_previous_file(project, _state_dir):
    manifest = write(project, "grow.yaml", SWEEP.replace("POINTS", "300"))
    assert qrun("apply", manifest).returncode == 0
    target = project / "out.jsonl"
    target.write_text("previous export\n")
    # Room for SQLite's shared-memory file (32 KiB), not for the export (about 100 KiB).
    full = _as_user("export", manifest, "-o", target, limit_file_size=48 * 1024)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    assert f"cannot write {target}" in full.stderr
    assert target.read_text() == "previous export\n"
    assert [p.name for p in project.iterdir() if p.name.startswith("out")] == ["out.jsonl"]


def test_a_transaction_left_open_by_an_interrupt_is_dropped_not_fatal(tmp_path):
    # Ctrl-C can land between BEGIN and the code that would roll it back; the next write must
    # neither fail ("cannot start a transaction within a transaction") nor commit the orphan.
    with Store.open(tmp_path / "s.sqlite") as store:
        store.conn.execute("BEGIN IMMEDIATE")
        store.conn.execute("INSERT INTO locks(name, host, pid) VALUES ('orphan', 'h', 1)")
        with store.transaction() as conn:
            conn.execute("INSERT INTO events(ts, entity, entity_id, state) VALUES (0,'t','1','x')")
        assert not store.conn.in_transaction
        assert store.conn.execute("SELECT count(*) FROM locks").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM events WHERE entity='t'").fetchone()[0] == 1
