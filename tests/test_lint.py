"""The code's habits, checked where CI runs the tests: ruff (configured in pyproject.toml)
clean on qrun/ and on the plugin example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is in the test extra"
    checked = subprocess.run([ruff, "check", "--no-cache", "qrun", "examples/plugins"], cwd=REPO,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
