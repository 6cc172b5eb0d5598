"""Processes and signals, as systemd, a CI time-out or a user's `kill` meet them:

- SIGTERM to `qrun apply` behaves as Ctrl-C: it stops submitting, keeps what finished, ends
  the workers and exits 143;
- after the coordinator dies in any way (SIGKILL of its pid alone included), none of its
  processes (fork server, workers) is left running;
- a second command on a running campaign hears of the lock as soon as its manifest is
  validated, not after the running apply's writes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import qrun, wait_until, write


def _heavy_circuit(qubits: int = 16, layers: int = 30) -> str:
    """A circuit that keeps Aer busy for a while (a few tenths of a second per run)."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{qubits}];", f"creg c[{qubits}];"]
    for layer in range(layers):
        for qubit in range(qubits):
            lines.append(f"rx({0.1 + 0.01 * layer}) q[{qubit}];")
        for qubit in range(layer % 2, qubits - 1, 2):
            lines.append(f"cx q[{qubit}], q[{qubit + 1}];")
    lines.append("measure q -> c;")
    return "\n".join(lines) + "\n"


def _campaign_of(count: int, project):
    """`count` experiments of the heavy circuit on Aer, one per job (shot counts tell them apart)."""
    write(project, "circuits/heavy.qasm", _heavy_circuit())
    targets = "\n".join(f"    - {{circuits: [heavy], backends: [aer], shots: {100 + i}}}"
                        for i in range(count))
    return write(project, "busy.yaml", f"""\
apiVersion: qrun/v1
kind: Campaign
metadata: {{name: busy}}
spec:
  seed: 1
  circuits:
    - {{name: heavy, source: circuits/heavy.qasm}}
  backends:
    - {{name: aer, provider: qiskit.aer, device: statevector}}
  targets:
{targets}
  split: {{max_experiments_per_job: 1}}
""")


def _start(manifest) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qrun", "apply", str(manifest), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _session(pid: int) -> list:
    """The processes of a session (what `qrun apply` started, in its own session)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def _gone_within(session: int, seconds: float, when: str) -> None:
    deadline = time.time() + seconds
    while _session(session) and time.time() < deadline:
        time.sleep(0.05)
    left = _session(session)
    assert not left, f"still running {seconds:g} s {when}: {[p.cmdline() for p in left]}"


def _done(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _started_with_workers(manifest, db, results: int) -> subprocess.Popen:
    """An apply, once it stored `results` results and runs its fork server and workers."""
    process = _start(manifest)
    if not wait_until(lambda: _done(db) >= results and len(_session(process.pid)) >= 3, process, 120):
        _cleanup(process)
        pytest.fail("the apply did not get going: " + "".join(process.communicate()))
    return process


def _cleanup(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=30)


def test_sigterm_is_handled_as_ctrl_c(project, _state_dir):
    manifest = _campaign_of(24, project)
    db = _state_dir / "busy.sqlite"
    process = _started_with_workers(manifest, db, results=2)
    try:
        process.send_signal(signal.SIGTERM)  # the coordinator only, as `kill PID` does
        out, err = process.communicate(timeout=120)
    finally:
        _cleanup(process)
    assert process.returncode == 143, out + err
    assert "Traceback" not in err and "run `qrun apply` again to resume" in err, err
    _gone_within(process.pid, 3.0, "after the apply ended")
    finished = _done(db)
    assert 2 <= finished < 24
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = {s for (s,) in conn.execute("SELECT state FROM jobs")}
    assert "running" not in states, "the interrupted jobs go back to pending"
    again = qrun("apply", manifest, "--no-progress")
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 24
        ran = conn.execute("SELECT count(*) FROM attempts WHERE state='done'").fetchone()[0]
    assert ran == 24, "nothing finished before the SIGTERM ran again"


def test_no_process_outlives_a_killed_coordinator(project, _state_dir):
    manifest = _campaign_of(40, project)
    db = _state_dir / "busy.sqlite"
    process = _started_with_workers(manifest, db, results=1)
    try:
        helpers = [p.pid for p in _session(process.pid) if p.pid != process.pid]
        assert helpers, "the apply has a fork server and workers"
        os.kill(process.pid, signal.SIGKILL)  # the coordinator alone: its children are not told
        process.communicate(timeout=30)
        _gone_within(process.pid, 5.0, "after the coordinator was killed")
    finally:
        _cleanup(process)


def test_a_second_command_hears_of_the_lock_at_once(project, _state_dir):
    # Far more than runs while the five commands do (the apply is killed at the end): with
    # 60 the apply could finish first on a machine running tests in parallel.
    manifest = _campaign_of(600, project)
    db = _state_dir / "busy.sqlite"
    process = _start(manifest)
    try:
        assert wait_until(lambda: _done(db) >= 1, process, 120)
        started = time.monotonic()
        validated = qrun("validate", manifest)
        validate_time = time.monotonic() - started
        assert validated.returncode == 0
        for command in (["apply"], ["retry"], ["cancel"], ["unlock"]):
            assert process.poll() is None, "the apply ended before the test could ask"
            started = time.monotonic()
            second = qrun(*command, manifest)
            elapsed = time.monotonic() - started
            assert second.returncode == 1, (command, second.stdout, second.stderr)
            assert "is locked by apply" in second.stderr and f"pid {process.pid}" in second.stderr
            # Validation plus a read of the lock; the running apply's writes are not waited for.
            assert elapsed < validate_time + 3.0, (command, elapsed, validate_time)
        assert process.poll() is None, "the running apply was not disturbed"
    finally:
        _cleanup(process)


# Each way qrun's coordinator first imports Perceval: reading a .pcvl file, loading the
# Quandela adapter, a factory that builds a Perceval circuit. Quandela's C++ extension takes
# SIGINT over when Perceval is first imported, and Ctrl-C then did nothing: a Quandela
# campaign polled on until it was killed (found by test_cloud_contract's cancel scenario).
PERCEVAL_IMPORTS = {
    # (without the sources' cache, which would spare the parse and the import)
    "a .pcvl source": "from pathlib import Path; from qrun.sources import load_file; "
                      "os.environ['QRUN_NO_CACHE'] = '1'; "
                      "load_file(Path(sys.argv[1]), 'hom.pcvl', photonic_input='|1,1>')",
    "the Quandela adapter": "from qrun.providers import PROVIDERS; "
                            "PROVIDERS['quandela.cloud'].adapter_module()",
}


@pytest.mark.parametrize("how", list(PERCEVAL_IMPORTS))
def test_ctrl_c_still_interrupts_once_perceval_is_imported(how, tmp_path):
    from .conftest import EXAMPLES

    source = tmp_path / "hom.pcvl"
    source.write_bytes((EXAMPLES / "circuits" / "hom.pcvl").read_bytes())
    program = "\n".join([
        "import os, signal, sys, time",
        PERCEVAL_IMPORTS[how],
        "assert 'exqalibur' in sys.modules",
        "try:",
        "    os.kill(os.getpid(), signal.SIGINT)",
        "    time.sleep(5)",
        "    print('swallowed')",
        "except KeyboardInterrupt:",
        "    print('interrupted')",
    ])
    ran = subprocess.run([sys.executable, "-c", program, str(source)], capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["interrupted"], ran.stdout + ran.stderr
