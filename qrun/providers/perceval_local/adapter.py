"""perceval.local: Perceval circuits and experiments on a local Perceval simulator.

Outcomes are Fock states as Perceval prints them, mode 0 first: "|1,0,1,0>".
Note that SLOS, the default, is an exact (probability) simulator: its sampled counts are the
exact distribution with noise added and rounded, so outcomes rarer than about one in the
shot count do not appear. CliffordClifford2017 draws true samples, more slowly.
"""

from __future__ import annotations

import perceval as pcvl

from qrun.providers.base import Task, run_each, sdk_versions
from qrun.sources.perceval import load


class Adapter:
    provider = "perceval.local"

    def __init__(self, device: str, options: dict):
        self.device = device
        self.computer = pcvl.SimulatedComputer(device)
        self._programs: dict = {}  # program digest -> (experiment, input state)

    def run(self, tasks: list[Task], seed: int | None) -> list:
        return run_each(tasks, seed, self._run_one)

    def _run_one(self, task: Task, seed: int | None) -> dict:
        loaded = self._programs.get(task.program_digest)
        if loaded is None:
            loaded = self._programs[task.program_digest] = load(task.program_content)
        experiment, state = loaded
        parameters = experiment.get_circuit_parameters()
        for name, value in task.params.items():
            parameters[name].set_value(value)
        experiment.with_input(state)
        if seed is not None:
            pcvl.random_seed(seed)
        with self.computer.acquire():
            result = pcvl.ExecutionFactory(self.computer, experiment).sample_count(max_samples=task.shots)
        return {str(outcome): int(count) for outcome, count in result["results"].items()}

    def metadata(self) -> dict:
        return {"provider": self.provider, "device": self.device,
                "sdk": sdk_versions(("perceval-quandela",))}
