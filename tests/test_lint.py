"""The code's habits, checked where CI runs the tests: ruff clean on qrun/ and on the
plugin example, mypy clean on qrun/ (both configured in pyproject.toml)."""

from __future__ import annotations

import ast
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


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_store_touches_sqlite():
    package = REPO / "qrun"
    outside = [str(path.relative_to(REPO)) for path in package.rglob("*.py")
               if "store" not in path.relative_to(package).parts[:1]
               and _imported_modules(path) & {"sqlite3", "sqlite_utils"}]
    assert outside == []
    assert _imported_modules(package / "store" / "connection.py") & {"sqlite3"}  # the check sees imports
