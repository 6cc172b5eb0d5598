"""Shared fixtures. Every test runs with HOME, MPLCONFIGDIR and XDG_DATA_HOME in a temporary
folder (several SDKs write there) and with its state databases in a temporary folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


# A private HOME for the whole test session, set when this file is imported, before any test
# module is: some SDKs fix where they write at import time (Qiskit's transpiler plugins, via
# stevedore, wrote their entry-point cache to the real ~/.cache while a session fixture set
# HOME only later). Subprocesses inherit it.
_HOME_VARIABLES = ("HOME", "MPLCONFIGDIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
_SAVED_HOME = {k: os.environ.get(k) for k in _HOME_VARIABLES}
_TEST_HOME = Path(tempfile.mkdtemp(prefix="qrun-tests-home-"))
os.environ.update(HOME=str(_TEST_HOME), MPLCONFIGDIR=str(_TEST_HOME / "mpl"),
                  XDG_DATA_HOME=str(_TEST_HOME / "data"), XDG_CONFIG_HOME=str(_TEST_HOME / "config"),
                  XDG_CACHE_HOME=str(_TEST_HOME / "cache"))


@pytest.fixture(autouse=True, scope="session")
def _private_home():
    yield _TEST_HOME
    for key, value in _SAVED_HOME.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """State databases of each test go to its own folder, never to ./runs of the repo."""
    monkeypatch.setenv("QRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("QRUN_DEBUG", raising=False)
    return tmp_path / "state"


def qrun(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """Run the qrun CLI as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "qrun", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


GHZ2 = """\
OPENQASM 2.0;
include "qelib1.inc";
qreg q[3];
creg c[3];
h q[0];
cx q[0], q[1];
cx q[1], q[2];
measure q -> c;
"""

ROT3 = """\
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[1] q;
bit[1] c;
rx(theta) q[0];
c[0] = measure q[0];
"""

FLIP_FIRST = """\
OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
x q[0];
c = measure q;
"""


@pytest.fixture
def project(tmp_path):
    """A folder with circuit files; tests add their manifest."""
    folder = tmp_path / "project"
    write(folder, "circuits/ghz.qasm", GHZ2)
    write(folder, "circuits/rot.qasm", ROT3)
    write(folder, "circuits/flip.qasm", FLIP_FIRST)
    return folder


# -- killing an apply at chosen moments (crash-safety tests)
#
# Kills are triggered by progress the test can see (jobs the fake provider accepted), not by
# wall-clock time: a sleep that lands mid-campaign on one machine lands after the end on a
# faster one, and then the test proves nothing.

def start_apply(manifest, env=None) -> subprocess.Popen:
    """`qrun apply` in its own process group, so a kill takes its workers too."""
    return subprocess.Popen([sys.executable, "-m", "qrun", "apply", str(manifest), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def kill(process: subprocess.Popen) -> subprocess.CompletedProcess:
    """SIGKILL the apply and its workers; what it printed until then."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_until(condition, process: subprocess.Popen, timeout: float = 60.0) -> bool:
    """True once `condition()` holds; False if the process ended or time ran out first."""
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.01)
    return True


def kill_after_more_accepted(manifest, accepted, rng, env=None, most: int = 3):
    """Start an apply and SIGKILL it once the provider accepted 1 to `most` more jobs, plus a
    random instant up to 0.3 s. Returns (output, whether the kill caught it running)."""
    process = start_apply(manifest, env)
    target = accepted() + rng.randint(1, most)
    running = wait_until(lambda: accepted() >= target, process, timeout=120)
    if running:
        time.sleep(rng.uniform(0.0, 0.3))
        running = process.poll() is None
    return kill(process), running
