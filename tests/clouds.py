"""The four cloud providers behind one face, for tests that run the same scenario on each.

A `Cloud` knows how to start its provider's fake (on a chosen port, so a test can put a
fresh one, which has forgotten every job, where the old one was), how to write a small
campaign for it (three experiments, one per job), which environment holds its credential,
how many jobs the fake accepted per idempotency tag, and how to rotate its credential (the
scenario of a key that expired between two applies).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qrun.errors import StateError
from qrun.store import read

from .conftest import EXAMPLES, qrun, write

SECRET = "planted-" + secrets.token_hex(12)
RETRY = "retry: {max_attempts: 3, backoff: {initial: 200ms, max: 1s}}"


def angles(points: int) -> str:
    """Rotation angles, half near 0 and half near pi (so each outcome is clear), distinct."""
    return "[" + ", ".join(f"{(0.0 if i % 2 == 0 else 3.14159) + 0.001 * (i // 2):g}"
                           for i in range(points)) + "]"


@dataclass
class Cloud:
    name: str
    fake: object = None
    url: str = ""
    port: int = 0
    env: dict = field(default_factory=dict)

    # -- the fake

    def start(self, **faults) -> Cloud:
        """Start a fresh fake (on the same port as the last one, if there was one)."""
        self.fake = self._make(**faults)
        self.url = self._started(self.port)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    in_process = False  # the CLI runs as a user runs it, in a process of its own

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
            self.fake = None

    def run(self, command: str, manifest: Path, *args: str, timeout: float = 240):
        """`qrun COMMAND MANIFEST ARGS...` as a user runs it."""
        return qrun(command, manifest, *args, timeout=timeout)

    def set_fault(self, name: str, value) -> None:
        """Change one of the fake's faults while it runs (e.g. the cause of failures is gone)."""
        faults = getattr(self.fake, "faults", None)  # the fakes on qrun.fakes.server keep them there
        setattr(faults if hasattr(faults, name) else self.fake, name, value)

    def set_latency(self, seconds: float) -> None:
        self.set_fault("latency", seconds)

    def accepted(self) -> Counter:
        return self.fake.accepted

    def total_accepted(self) -> int:
        return sum(self.fake.accepted.values()) if self.fake is not None else 0

    def _started(self, port: int) -> str:
        return self.fake.start(port)

    # -- per provider

    failure_text = ""  # what the fake says of a job it failed on purpose (fail_jobs)
    fixed_experiments = 1  # experiments of a campaign besides its swept points

    def experiments(self, points: int = 2) -> int:
        return self.fixed_experiments + points

    def _make(self, **faults):
        raise NotImplementedError

    def campaign(self, folder: Path, name: str, points: int = 2, extra: str = "") -> Path:
        """A campaign of `experiments(points)` experiments, one per job; `extra` adds keys
        (e.g. `timeout: 1s`) to its backend."""
        raise NotImplementedError

    def cancelled(self) -> bool:
        """Whether every job the fake holds is cancelled there."""
        raise NotImplementedError

    def rotate_credential(self) -> None:
        """The credential the apply holds stops being accepted (it expired)."""
        raise NotImplementedError

    def looks_right(self, circuit: str, params: dict, counts: dict) -> bool:
        """Whether an experiment's counts show what its circuit does."""
        if circuit == "flip":
            expected = "100"  # x q[0] on three qubits: classical bit 0, leftmost, is 1
        else:
            expected = "0" if params["theta"] < 1 else "1"
        return max(counts, key=counts.get) == expected

    def restore_credential(self) -> None:
        raise NotImplementedError


class Braket(Cloud):
    def __init__(self):
        super().__init__("braket.aws", env={"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
                                            "AWS_SECRET_ACCESS_KEY": SECRET,
                                            "AWS_CONFIG_FILE": os.devnull,
                                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull})

    def _make(self, **faults):
        from qrun.providers.braket_aws.fake import FakeBraket

        return FakeBraket(access_key="AKIAFAKEFAKEFAKE", **faults)

    def campaign(self, folder, name, points=2, extra=""):
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 200
              circuits:
                - {{name: flip, source: circuits/flip.qasm}}
                - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: {angles(points)}}}}}
              backends:
                - name: sv1
                  provider: braket.aws
                  device: arn:aws:braket:::device/quantum-simulator/amazon/sv1
                  options: {{endpoint: "{self.url}", s3_bucket: results}}
                  {extra}
              {RETRY}
        """)

    failure_text = "injected: the device failed this task"

    def cancelled(self):
        return {t.status for t in self.fake.tasks.values()} == {"CANCELLED"}

    def rotate_credential(self):
        self.fake.access_key = "AKIAROTATEDROTATED"

    def restore_credential(self):
        self.fake.access_key = "AKIAFAKEFAKEFAKE"


class IBM(Cloud):
    def __init__(self):
        super().__init__("qiskit.ibm", env={"QRUN_TEST_IBM_KEY": SECRET})

    def _make(self, **faults):
        from qrun.providers.ibm_cloud.fake import FakeIBMQuantum

        return FakeIBMQuantum(api_key=SECRET, backends=("fake_manila",), **faults)

    def _started(self, port):
        self.fake.start(port)
        return self.fake.url

    def campaign(self, folder, name, points=2, extra=""):
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 200
              seed: 3
              circuits:
                - {{name: flip, source: circuits/flip.qasm}}
                - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: {angles(points)}}}}}
              backends:
                - name: manila
                  provider: qiskit.ibm
                  device: fake_manila
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_IBM_KEY}}
                  {extra}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)

    failure_text = "Error code 1517"

    def cancelled(self):
        return {j.status for j in self.fake.jobs.values()} == {"Cancelled"}

    def rotate_credential(self):
        self.fake.api_key = "rotated-" + secrets.token_hex(8)
        with self.fake._lock:
            self.fake._tokens.clear()  # the bearer tokens it gave out expire with the key

    def restore_credential(self):
        self.fake.api_key = SECRET


class Pasqal(Cloud):
    def __init__(self):
        super().__init__("pasqal.cloud", env={"QRUN_TEST_PASQAL_TOKEN": SECRET})

    def _make(self, **faults):
        from qrun.providers.pasqal_cloud.fake import FakePasqal

        return FakePasqal(token=SECRET, **faults)

    def experiments(self, points: int = 3) -> int:
        return points  # one swept pulse, no fixed experiment

    def campaign(self, folder, name, points=3, extra=""):
        shutil.copy(EXAMPLES / "circuits" / "rabi.json", folder / "circuits" / "rabi.json")
        durations = "[" + ", ".join(str(500 * (i + 1)) for i in range(points)) + "]"
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 100
              circuits:
                - {{name: rabi, source: circuits/rabi.json, sweep: {{duration: {durations}}}}}
              backends:
                - name: pasqal
                  provider: pasqal.cloud
                  device: EMU_FREE
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_PASQAL_TOKEN}}
                  {extra}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)

    failure_text = "injected fault"

    def cancelled(self):
        return {b["status"] for b in self.fake.batches.values()} == {"CANCELED"}

    def rotate_credential(self):
        self.fake.token = "rotated-" + secrets.token_hex(8)

    def restore_credential(self):
        self.fake.token = SECRET

    def looks_right(self, circuit, params, counts):
        # A resonant pulse of 500 ns is a pi pulse: odd multiples flip the atom.
        return max(counts, key=counts.get) == ("1" if params["duration"] // 500 % 2 else "0")


class Quandela(Cloud):
    def __init__(self):
        super().__init__("quandela.cloud", env={"QRUN_TEST_QUANDELA_TOKEN": SECRET})

    def _make(self, **faults):
        from qrun.providers.quandela_cloud.fake import FakeQuandela

        return FakeQuandela(token=SECRET, **faults)

    def campaign(self, folder, name, points=2, extra=""):
        for circuit in ("hom.pcvl", "mach-zehnder.pcvl"):
            shutil.copy(EXAMPLES / "circuits" / circuit, folder / "circuits" / circuit)
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 400
              seed: 5
              circuits:
                - {{name: hom, source: circuits/hom.pcvl, input: "|1,1>"}}
                - name: mzi
                  source: circuits/mach-zehnder.pcvl
                  input: "|1,0>"
                  sweep: {{phi: {angles(points)}}}
              backends:
                - name: cloud
                  provider: quandela.cloud
                  device: "sim:slos"
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_QUANDELA_TOKEN}}
                  {extra}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)

    failure_text = "lost its photon source"

    def cancelled(self):
        return {j.status for j in self.fake.jobs.values()} == {"canceled"}

    def rotate_credential(self):
        self.fake.token = "rotated-" + secrets.token_hex(8)

    def restore_credential(self):
        self.fake.token = SECRET

    def looks_right(self, circuit, params, counts):
        if circuit == "hom":  # two photons on a 50:50 beam splitter always leave together
            return "|1,1>" not in counts and set(counts) == {"|2,0>", "|0,2>"}
        return sum(counts.values()) > 0


class Memory(Braket):
    """tests/memory_cloud.py in place of a provider, and qrun's CLI run in this process:
    the same scenarios as on the fakes, in milliseconds. It stands in for braket.aws (the
    engine's `adapter_for` is patched), so its campaign is Braket's; there is no secret to
    keep (it takes no credential) and no process to kill."""

    in_process = True
    failure_text = "the memory device failed this job"

    def __init__(self):
        Cloud.__init__(self, "memory")

    def start(self, **faults):
        from unittest import mock

        from .memory_cloud import MemoryCloud

        self.stop()
        self.fake = MemoryCloud(**faults)
        self.url = "http://127.0.0.1:9"  # never called: the adapter is the memory cloud
        self._patches = [mock.patch(target, lambda *args, **kwargs: self.fake)
                         for target in ("qrun.providers.adapter_for",)]
        for patch in self._patches:
            patch.start()
        return self

    def stop(self):
        if self.fake is not None:
            self.fake.released.set()  # calls left hanging end with the test
            for patch in self._patches:
                patch.stop()
            self.fake = None

    def run(self, command: str, manifest: Path, *args: str, timeout: float = 240):
        from click.testing import CliRunner

        from qrun.cli import main

        result = CliRunner().invoke(main, [command, str(manifest), *map(str, args)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess([command], result.exit_code, result.stdout, result.stderr)

    def cancelled(self):
        return {job["state"] for job in self.fake.jobs.values()} == {"cancelled"}

    def looks_right(self, circuit, params, counts):
        (handle,) = counts  # the memory cloud's counts name the job they came from
        return self.fake.jobs[handle]["state"] == "done"


CLOUDS = {"braket": Braket, "ibm": IBM, "pasqal": Pasqal, "quandela": Quandela}


# -- reading a campaign's state (read-only, as `qrun status` does)

def job_states(db: Path) -> Counter:
    """Jobs by state; empty while the database is not there or not made yet."""
    if not db.exists():
        return Counter()
    try:
        with read(db) as state:
            return Counter(job.state for job in state.jobs())
    except StateError:  # being created by the apply
        return Counter()


def experiment_states(db: Path) -> Counter:
    with read(db) as state:
        return Counter(experiment.state for experiment in state.experiments())


def results(db: Path) -> dict:
    """Experiment key -> (circuit, params, counts) of every stored result."""
    with read(db) as state:
        experiments = {e.key: e for e in state.experiments()}
        return {r.experiment: (experiments[r.experiment].circuit, experiments[r.experiment].params,
                               r.counts) for r in state.results()}


def attempt_tags(db: Path) -> list:
    with read(db) as state:
        return [attempt.tag for attempt in state.attempts()]
