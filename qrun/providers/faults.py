"""Rehearsing failures: `QRUN_FAULTS` makes local simulators fail on purpose.

A campaign that will run for days on a cloud meets busy services, crashed workers and
circuits a device refuses. Before paying for that, rehearse it locally:

    QRUN_FAULTS="transient=0.3,permanent=0.1,seed=7" qrun apply campaign.yaml

- transient: the share of local job runs that fail before running, as a crashed worker or
  a busy device would. qrun retries them inside the attempt (bounded, jittered backoff);
  a job whose tries are all spent fails its attempt, and the manifest's `retry` policy
  decides whether it gets another.
- permanent: the share of experiments that fail every time, as a circuit a device refuses
  would. They are picked by their content (program and parameters), so they fail again on
  every attempt while the variable is set, and succeed under `qrun retry` once it is unset:
  the cause is removed.
- seed: changes which experiments are picked.

The cloud fakes in qrun.fakes inject the same kinds of faults at the HTTP level.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass

from qrun.errors import QrunError
from qrun.providers.base import TaskFailed, TransientBackendError

ENV = "QRUN_FAULTS"
TRANSIENT_ERROR = "injected transient fault (QRUN_FAULTS)"
PERMANENT_ERROR = "injected permanent fault (QRUN_FAULTS): this experiment always fails"


@dataclass(frozen=True)
class Faults:
    transient: float = 0.0
    permanent: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.transient or self.permanent)

    def describe(self) -> str:
        return f"transient={self.transient:g}, permanent={self.permanent:g}, seed={self.seed}"

    def before_run(self) -> None:
        """Fail this run of a job now and then, before any work, as a lost worker would."""
        if self.transient and random.random() < self.transient:
            raise TransientBackendError(TRANSIENT_ERROR)

    def after_run(self, tasks: list, outcomes: list) -> list:
        """Replace the outcome of each doomed experiment by its failure."""
        if not self.permanent:
            return outcomes
        return [TaskFailed(PERMANENT_ERROR) if self._doomed(task) else outcome
                for task, outcome in zip(tasks, outcomes)]

    def _doomed(self, task) -> bool:
        # A hash of the experiment's content, not a random draw: the same experiments fail
        # on every attempt and in every process, as a real permanent fault would.
        content = json.dumps([self.seed, task.program_digest, task.program_item, task.params],
                             sort_keys=True, default=str)
        draw = int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "big") / 2 ** 64
        return draw < self.permanent


NO_FAULTS = Faults()


def from_env(environ=os.environ) -> Faults:
    """The faults QRUN_FAULTS asks for (none when unset); a bad value is a usage error."""
    text = environ.get(ENV, "").strip()
    if not text:
        return NO_FAULTS
    values: dict = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("transient", "permanent", "seed") or name in values:
            raise QrunError(f"{ENV}: cannot read {part.strip()!r}; expected for example "
                            f"{ENV}='transient=0.3,permanent=0.1,seed=7'")
        values[name] = _number(name, value.strip())
    return Faults(**values)


def _number(name: str, text: str):
    try:
        value = int(text) if name == "seed" else float(text)
    except ValueError:
        raise QrunError(f"{ENV}: {name} must be a number, not {text!r}") from None
    if name != "seed" and not 0.0 <= value <= 1.0:
        raise QrunError(f"{ENV}: {name} is a share of runs, between 0 and 1, not {text}")
    return value
