"""The code's habits, checked where CI runs the tests: ruff clean on qrun/ and on the
plugin example, mypy clean on qrun/ (both configured in pyproject.toml)."""

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


def test_mypy_is_clean(tmp_path):
    """Types as configured in pyproject.toml ([tool.mypy]), on the whole package."""
    checked = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "qrun"],
                             cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
