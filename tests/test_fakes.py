"""`python -m qrun.fakes <provider>`: the rehearsal services start, say where, and stop on kill."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest


@pytest.mark.parametrize("provider", ["braket.aws", "qiskit.ibm", "pasqal.cloud", "quandela.cloud"])
def test_fake_serves_until_killed(provider):
    service = subprocess.Popen([sys.executable, "-m", "qrun.fakes", provider, "--port", "0",
                                "--error-rate", "0.1", "--stall"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = service.stdout.readline()  # printed once it listens
        assert re.search(r"at http://127\.0\.0\.1:\d+\b.*Ctrl-C stops it", banner), banner
    finally:
        service.send_signal(signal.SIGTERM)  # stops it as Ctrl-C does: cleanly, exit 0
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert "Traceback" not in err
