"""Plan stage: a validated Manifest -> experiments (with content keys) -> jobs.

Pure functions. Experiments are generated lazily, so a 100,000-point sweep streams into
the store without ever being a list. Jobs are cut only for the experiments that still need
to run, so they depend on what the store already holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .backends import Limits
from .manifest import BackendSpec, Manifest
from .sweep import combinations

KEY_VERSION = "qrun/v1"  # bump only if the meaning of a key changes


@dataclass(frozen=True, slots=True)
class Experiment:
    key: str
    circuit: str  # names are labels: renaming a circuit keeps its results
    backend: str
    provider: str
    program: str  # Program.digest
    params: dict
    shots: int


@dataclass(frozen=True)
class Slice:
    """A share of one experiment's shots; most experiments are a single slice."""

    experiment: str  # experiment key
    index: int
    shots: int


@dataclass(frozen=True)
class JobSpec:
    key: str
    backend: str
    slices: tuple  # of Slice


def backend_digest(backend: BackendSpec) -> str:
    return _digest(backend.identity)


def experiment_key(program_digest: str, params: dict, backend_id: str, shots: int,
                   seed: int | None) -> str:
    """Content key: same program, bindings, backend identity, shots and seed -> same key."""
    return _digest([KEY_VERSION, program_digest, params, backend_id, shots, seed])


def experiments(manifest: Manifest) -> Iterator[Experiment]:
    """Every experiment of the manifest, each once, in manifest order."""
    seen: set = set()
    backend_ids = {name: backend_digest(b) for name, b in manifest.backends.items()}
    for target in manifest.targets:
        for circuit_name in target.circuits:
            circuit = manifest.circuits[circuit_name]
            for backend_name in target.backends:
                backend = manifest.backends[backend_name]
                for params in combinations(circuit.sweep, circuit.sweep_mode):
                    key = experiment_key(circuit.program.digest, params, backend_ids[backend_name],
                                         target.shots, manifest.seed)
                    if key in seen:  # the same work listed twice runs once
                        continue
                    seen.add(key)
                    yield Experiment(key=key, circuit=circuit_name, backend=backend_name,
                                     provider=backend.provider, program=circuit.program.digest,
                                     params=params, shots=target.shots)


def job_limits(manifest: Manifest, backend: str) -> Limits:
    """The backend's limits tightened by the manifest's `split:` rules."""
    return manifest.backends[backend].limits.tightened(manifest.split)


def cut_jobs(to_run: Iterable[tuple], limits_of) -> Iterator[JobSpec]:
    """Group (backend, experiment key, shots) into jobs that respect each backend's limits.

    Experiments of one backend and one shot count share jobs of at most
    ``max_experiments_per_job``; an experiment with more shots than ``max_shots_per_job``
    is cut into slices, one job each, merged back when all are done.
    """
    open_jobs: dict = {}  # (backend, shots) -> list of slices being filled
    for backend, key, shots in to_run:
        limits = limits_of(backend)
        cap = limits.max_shots_per_job
        if cap and shots > cap:
            for index, share in enumerate(_shares(shots, cap)):
                yield _job(backend, (Slice(key, index, share),))
            continue
        group = open_jobs.setdefault((backend, shots), [])
        group.append(Slice(key, 0, shots))
        if limits.max_experiments_per_job and len(group) >= limits.max_experiments_per_job:
            yield _job(backend, tuple(group))
            group.clear()
    for (backend, _), group in open_jobs.items():
        if group:
            yield _job(backend, tuple(group))


def _shares(shots: int, cap: int) -> list[int]:
    """Split shots into as few slices of at most ``cap`` as possible, sizes within one."""
    count = -(-shots // cap)
    base, extra = divmod(shots, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _job(backend: str, slices: tuple) -> JobSpec:
    return JobSpec(key=_digest([backend, [(s.experiment, s.index, s.shots) for s in slices]]),
                   backend=backend, slices=slices)


def derived_seed(seed: int | None, job_key: str) -> int | None:
    """A job's simulator seed: fixed by the campaign seed, different for every job."""
    if seed is None:
        return None
    return int(hashlib.sha256(f"{seed}:{job_key}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
