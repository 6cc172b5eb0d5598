"""Plan stage: a validated Manifest -> experiments (with content keys) -> jobs.

Pure functions. Experiments are generated lazily, so a 100,000-point sweep streams into
the store without ever being a list. Jobs are cut only for the experiments that still need
to run, so they depend on what the store already holds.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import pairwise

from .manifest import BackendSpec, Manifest
from .providers import PROVIDERS, Limits
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
    params_json: str  # params as canonical JSON, as hashed into the key and stored
    shots: int
    # What the key hashes besides the above, kept so that `plan` can say what changed when
    # a key does: the point's index in its circuit's sweep, the campaign seed, and
    # backend_digest (the store keeps the identity it stands for).
    point: int = 0
    seed: int | None = None
    backend_id: str = ""


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
    return _KeyMaker(program_digest, backend_id, shots, seed).key(canonical_json(params))


class _KeyMaker:
    """experiment_key for many bindings of one (program, backend, shots, seed).

    The key hashes the canonical JSON of [version, program, params, backend, shots, seed];
    only the params part changes within a sweep, so the rest is encoded once.
    """

    def __init__(self, program_digest: str, backend_id: str, shots: int, seed: int | None):
        head, tail = canonical_json([KEY_VERSION, program_digest, 0, backend_id, shots, seed]) \
            .split(",0,", 1)
        self.head, self.tail = (head + ",").encode(), ("," + tail).encode()

    def key(self, params_json: str) -> str:
        return hashlib.sha256(self.head + params_json.encode() + self.tail).hexdigest()


def experiments(manifest: Manifest) -> Iterator[Experiment]:
    """Every experiment of the manifest, each once, in manifest order."""
    backend_ids = {name: backend_digest(b) for name, b in manifest.backends.items()}
    runs = [(target, circuit_name, backend_name) for target in manifest.targets
            for circuit_name in target.circuits for backend_name in target.backends]
    groups = Counter(_group(manifest, backend_ids, *run) for run in runs)
    # The same work listed twice runs once. Keys of different groups never meet, so a set
    # of keys is kept only where a repeat can happen: for a group listed more than once
    # (shared by its listings), or for a sweep whose values repeat. One set of every key
    # grew with the campaign: storing a plan of 100,000 traced an 18 MB peak, 3.5 MB at 10,000.
    shared: dict = {group: set() for group, listed in groups.items() if listed > 1}
    for target, circuit_name, backend_name in runs:
        circuit = manifest.circuits[circuit_name]
        backend = manifest.backends[backend_name]
        group = _group(manifest, backend_ids, target, circuit_name, backend_name)
        seen = shared.get(group)
        if seen is None and _sweep_may_repeat(circuit.sweep, circuit.sweep_mode):
            seen = set()
        keys = _KeyMaker(*group, manifest.seed)
        for point, params in enumerate(combinations(circuit.sweep, circuit.sweep_mode)):
            params_json = canonical_json(params)
            key = keys.key(params_json)
            if seen is not None:
                if key in seen:
                    continue
                seen.add(key)
            yield Experiment(key=key, circuit=circuit_name, backend=backend_name,
                             provider=backend.provider, program=circuit.program.digest,
                             params=params, params_json=params_json, shots=target.shots,
                             point=point, seed=manifest.seed, backend_id=backend_ids[backend_name])


def _group(manifest: Manifest, backend_ids: dict, target, circuit_name: str,
           backend_name: str) -> tuple[str, str, int]:
    """What a listing's keys share besides the parameters: (program, backend identity, shots)."""
    return (manifest.circuits[circuit_name].program.digest, backend_ids[backend_name],
            target.shots)


def _sweep_may_repeat(values: dict, mode: str) -> bool:
    """Whether a sweep can yield one binding twice.

    A grid repeats a point when any variable repeats a value; zipped columns only when every
    variable does. Equal numbers count as repeats even where their keys differ (1 and 1.0,
    0.0 and -0.0): that only keeps a set where none was needed.
    """
    if not values:
        return False
    repeats = [_has_repeats(column) for column in values.values()]
    return all(repeats) if mode == "zip" else any(repeats)


def _has_repeats(column: list) -> bool:
    ordered = sorted(column)
    return any(a == b for a, b in pairwise(ordered))


# Local simulators get jobs of at most this many experiments unless told otherwise: enough
# jobs to keep every worker busy to the end (at 100, 500 circuits made 5 jobs for 2 workers,
# and the last one ran alone: bench/peer_braket.py 16.1 s, against 7.9 s at 25), and little
# work lost when a job is interrupted.
LOCAL_EXPERIMENTS_PER_JOB = 25


def job_limits(manifest: Manifest, backend: str, declared: Limits | None = None) -> Limits:
    """The backend's limits tightened by the manifest's `split:` rules.

    ``declared`` are what the device itself says one job may carry (a Braket device's
    program-set size, read by its adapter at apply): they replace the provider's guess made
    without the network, and what the manifest sets may tighten them, never pass them."""
    spec = manifest.backends[backend]
    limits = spec.limits
    if declared is not None:
        limits = limits.overridden(declared).overridden(spec.chosen_limits).tightened(declared)
    limits = limits.tightened(manifest.split)
    chosen = spec.chosen_limits.max_experiments_per_job or manifest.split.max_experiments_per_job
    if PROVIDERS[spec.provider].local and chosen is None:
        # A device's own cap (an IBM fake backend's 300 circuits) bounds the default, not it.
        default = min(filter(None, (limits.max_experiments_per_job, LOCAL_EXPERIMENTS_PER_JOB)))
        limits = replace(limits, max_experiments_per_job=default)
    return limits


def cut_jobs(to_run: Iterable[tuple], limits_of) -> Iterator[JobSpec]:
    """Group (backend, experiment key, shots) into jobs that respect each backend's limits.

    Experiments of one backend and one shot count share jobs of at most
    ``max_experiments_per_job`` and ``max_total_shots_per_job`` shots together; an
    experiment with more shots than ``max_shots_per_job`` (or than a job may hold) is cut
    into slices, one job each, merged back when all are done.
    """
    # (backend, shots) -> (experiments a job holds, slices being filled)
    open_jobs: dict[tuple[str, int], tuple[int | float, list[Slice]]] = {}
    limits_by_backend: dict = {}
    for backend, key, shots in to_run:
        limits = limits_by_backend.get(backend)
        if limits is None:
            limits = limits_by_backend[backend] = limits_of(backend)
        cap = _shots_cap(limits)
        if cap and shots > cap:
            for index, share in enumerate(_shares(shots, cap)):
                yield _job(backend, (Slice(key, index, share),))
            continue
        opened = open_jobs.get((backend, shots))
        if opened is None:
            opened = open_jobs[backend, shots] = (_experiments_per_job(limits, shots), [])
        per_job, group = opened
        group.append(Slice(key, 0, shots))
        if len(group) >= per_job:
            yield _job(backend, tuple(group))
            group.clear()
    for (backend, _), (_, group) in open_jobs.items():
        if group:
            yield _job(backend, tuple(group))


def jobs_needed(experiments: int, shots: int, limits: Limits) -> int:
    """How many jobs cut_jobs makes of ``experiments`` of one backend with ``shots`` each
    (what a plan's cost estimate counts as tasks, without cutting them)."""
    if not experiments:
        return 0
    cap = _shots_cap(limits)
    if cap and shots > cap:
        return experiments * -(-shots // cap)
    per_job = _experiments_per_job(limits, shots)
    return int(-(-experiments // per_job)) if per_job < experiments else 1


def _shots_cap(limits: Limits) -> int | None:
    """The most shots one experiment may have in a job (more: it is cut into slices)."""
    caps = [cap for cap in (limits.max_shots_per_job, limits.max_total_shots_per_job) if cap]
    return min(caps) if caps else None


def _experiments_per_job(limits: Limits, shots: int) -> int | float:
    """How many experiments of ``shots`` each one job may carry (inf: no limit)."""
    per_job = limits.max_experiments_per_job or float("inf")
    if limits.max_total_shots_per_job and shots:
        per_job = min(per_job, max(1, limits.max_total_shots_per_job // shots))
    return per_job


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


def canonical_json(value) -> str:
    """One spelling per value: sorted keys, no spaces. Keys hash it; the store keeps it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
