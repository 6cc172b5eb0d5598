"""Errors that qrun reports to users as messages, never as tracebacks.

Every error a user can cause derives from :class:`QrunError`; the CLI prints it and exits
with its ``exit_code``. Anything else escaping to the CLI is a bug in qrun.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_OVER_BUDGET = 3  # work whose estimated cost passes spec.budget (or is unknown) was refused
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM), handled as Ctrl-C is


class QrunError(Exception):
    """A problem the user can act on; printed without a traceback."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a manifest, located by file, line and key path."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ManifestError(QrunError):
    """A manifest with one or more problems; all of them are reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class StateError(QrunError):
    """The state database cannot be used (damaged, foreign, newer, read-only...)."""


class LockedError(QrunError):
    """Another live process holds the campaign lock."""

    exit_code = EXIT_FAILED


class RevisionError(QrunError):
    """A manifest's git revision cannot be read (no repository, no such revision or file)."""


class PlanFileError(QrunError):
    """A saved plan file that cannot be read: damaged, cut short, or from a newer qrun."""


class StalePlanError(QrunError):
    """A saved plan that no longer describes what apply would do (the manifest, a source or
    the stored state changed since it was made); nothing was run."""

    exit_code = EXIT_FAILED


class BackendUnavailable(QrunError):
    """A provider's SDK is missing or cannot be loaded."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping a unit, a CI time-out, `kill`), raised where Ctrl-C would
    be, so that it is handled the same way: stop submitting, keep what finished, end the
    workers. A KeyboardInterrupt, so every place that handles Ctrl-C handles it too."""
