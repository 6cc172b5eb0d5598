"""pulser.local: Pulser sequences emulated by pulser-simulation's QutipBackendV2.

Outcomes are bitstrings over the register's atoms in register order ('1' is the Rydberg
state), which is qrun's convention already: character i is atom i.
"""

from __future__ import annotations

import numpy as np
from pulser.backend import BitStrings
from pulser_simulation import QutipBackendV2, QutipConfig

from qrun.providers.base import Task, run_each, sdk_versions
from qrun.sources.pulser import build, load_sequence


class Adapter:
    provider = "pulser.local"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.mimic_qpu = bool(options.get("mimic_qpu", False))
        self.with_modulation = bool(options.get("with_modulation", False))
        self._sequences: dict = {}  # program digest -> parametrized Sequence

    def run(self, tasks: list[Task], seed: int | None) -> list:
        return run_each(tasks, seed, self._run_one)

    def _run_one(self, task: Task, seed: int | None) -> dict:
        sequence = self._sequences.get(task.program_digest)
        if sequence is None:
            sequence = self._sequences[task.program_digest] = load_sequence(task.program_content)
        config = QutipConfig(observables=[BitStrings(num_shots=task.shots)],
                             with_modulation=self.with_modulation)
        backend = QutipBackendV2(build(sequence, task.params), config=config,
                                 mimic_qpu=self.mimic_qpu)
        if seed is not None:
            np.random.seed(seed)  # Pulser samples bitstrings from NumPy's global generator
        return {key: int(n) for key, n in backend.run().final_bitstrings.items()}

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("pulser-core", "pulser-simulation"))}
