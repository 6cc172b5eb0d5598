"""Where a campaign came from: the manifest's git commit and whether the tree was dirty.

Asked of the `git` command, because it is the authority on a repository's state; when git
or the repository is absent, provenance is simply unknown (None), never an error.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None


def git_state(manifest: Path, sources: list[Path]) -> GitState:
    """The commit checked out around ``manifest``, and whether what it runs differs from it.

    Dirty means: tracked files have uncommitted changes, or the manifest or one of its
    sources is not tracked at all (so the commit alone cannot reproduce the campaign).
    """
    folder = manifest.parent
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return GitState(None, None)
    changed = _git(folder, "status", "--porcelain", "--untracked-files=no")
    untracked = _git(folder, "ls-files", "--others", "--exclude-standard", "--",
                     str(manifest), *map(str, sources))
    dirty = bool(changed) or bool(untracked) if changed is not None else None
    return GitState(commit, dirty)


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
