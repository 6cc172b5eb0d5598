"""The four cloud providers behind one face, for tests that run the same scenario on each.

A `Cloud` knows how to start its provider's fake (on a chosen port, so a test can put a
fresh one, which has forgotten every job, where the old one was), how to write a small
campaign for it (three experiments, one per job), which environment holds its credential,
how many jobs the fake accepted per idempotency tag, and how to rotate its credential (the
scenario of a key that expired between two applies). Every fake shares one base
(qrun.fakes.server): the same fault keywords, `fake.faults`, `fake.credential`, `fake.url`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import EXAMPLES, write

SECRET = "planted-" + secrets.token_hex(12)
RETRY = "retry: {max_attempts: 3, backoff: {initial: 200ms, max: 1s}}"


@dataclass
class Cloud:
    name: str
    fake: object = None
    url: str = ""
    port: int = 0
    env: dict = field(default_factory=dict)
    credential: str = SECRET  # the one the fake accepts (what `env` holds, for its kind)

    # -- the fake

    def start(self, **faults) -> Cloud:
        """Start a fresh fake (on the same port as the last one, if there was one)."""
        self.fake = self._make(credential=self.credential, **faults)
        self.url = self.fake.start(self.port)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
            self.fake = None

    def set_latency(self, seconds: float) -> None:
        self.fake.faults.latency = seconds

    def accepted(self) -> Counter:
        return self.fake.accepted

    def total_accepted(self) -> int:
        return sum(self.fake.accepted.values()) if self.fake is not None else 0

    # -- per provider

    def _make(self, **faults):
        raise NotImplementedError

    def campaign(self, folder: Path, name: str) -> Path:
        raise NotImplementedError

    def rotate_credential(self) -> None:
        """The credential the apply holds stops being accepted (it expired)."""
        self.fake.credential = "rotated-" + secrets.token_hex(8)

    def looks_right(self, circuit: str, params: dict, counts: dict) -> bool:
        """Whether an experiment's counts show what its circuit does."""
        if circuit == "flip":
            expected = "100"  # x q[0] on three qubits: classical bit 0, leftmost, is 1
        else:
            expected = "0" if params["theta"] < 1 else "1"
        return max(counts, key=counts.get) == expected

    def restore_credential(self) -> None:
        self.fake.credential = self.credential


class Braket(Cloud):
    def __init__(self):
        # The fake checks the access key id (SigV4 names it); the secret key is the planted one.
        super().__init__("braket.aws", env={"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
                                            "AWS_SECRET_ACCESS_KEY": SECRET,
                                            "AWS_CONFIG_FILE": os.devnull,
                                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull},
                         credential="AKIAFAKEFAKEFAKE")

    def _make(self, **faults):
        from qrun.providers.braket_aws.fake import FakeBraket

        return FakeBraket(**faults)

    def campaign(self, folder, name):
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 200
              circuits:
                - {{name: flip, source: circuits/flip.qasm}}
                - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: [0.0, 3.14159]}}}}
              backends:
                - name: sv1
                  provider: braket.aws
                  device: arn:aws:braket:::device/quantum-simulator/amazon/sv1
                  options: {{endpoint: "{self.url}", s3_bucket: results}}
              {RETRY}
        """)


class IBM(Cloud):
    def __init__(self):
        super().__init__("qiskit.ibm", env={"QRUN_TEST_IBM_KEY": SECRET})

    def _make(self, **faults):
        from qrun.providers.ibm_cloud.fake import FakeIBMQuantum

        return FakeIBMQuantum(backends=("fake_manila",), **faults)

    def campaign(self, folder, name):
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 200
              seed: 3
              circuits:
                - {{name: flip, source: circuits/flip.qasm}}
                - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: [0.0, 3.14159]}}}}
              backends:
                - name: manila
                  provider: qiskit.ibm
                  device: fake_manila
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_IBM_KEY}}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)


class Pasqal(Cloud):
    def __init__(self):
        super().__init__("pasqal.cloud", env={"QRUN_TEST_PASQAL_TOKEN": SECRET})

    def _make(self, **faults):
        from qrun.providers.pasqal_cloud.fake import FakePasqal

        return FakePasqal(**faults)

    def campaign(self, folder, name):
        shutil.copy(EXAMPLES / "circuits" / "rabi.json", folder / "circuits" / "rabi.json")
        return write(folder, f"{name}.yaml", f"""
            apiVersion: qrun/v1
            kind: Campaign
            metadata: {{name: {name}}}
            spec:
              shots: 100
              circuits:
                - {{name: rabi, source: circuits/rabi.json, sweep: {{duration: [500, 1000, 1500]}}}}
              backends:
                - name: pasqal
                  provider: pasqal.cloud
                  device: EMU_FREE
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_PASQAL_TOKEN}}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)

    def looks_right(self, circuit, params, counts):
        # A resonant pulse of 500 ns is a pi pulse: odd multiples flip the atom.
        return max(counts, key=counts.get) == ("1" if params["duration"] // 500 % 2 else "0")


class Quandela(Cloud):
    def __init__(self):
        super().__init__("quandela.cloud", env={"QRUN_TEST_QUANDELA_TOKEN": SECRET})

    def _make(self, **faults):
        from qrun.providers.quandela_cloud.fake import FakeQuandela

        return FakeQuandela(**faults)

    def campaign(self, folder, name):
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
                  sweep: {{phi: [0.0, 3.14159]}}
              backends:
                - name: cloud
                  provider: quandela.cloud
                  device: "sim:slos"
                  options: {{endpoint: "{self.url}"}}
                  credentials: {{env: QRUN_TEST_QUANDELA_TOKEN}}
              split: {{max_experiments_per_job: 1}}
              {RETRY}
        """)

    def looks_right(self, circuit, params, counts):
        if circuit == "hom":  # two photons on a 50:50 beam splitter always leave together
            return "|1,1>" not in counts and set(counts) == {"|2,0>", "|0,2>"}
        return sum(counts.values()) > 0


CLOUDS = {"braket": Braket, "ibm": IBM, "pasqal": Pasqal, "quandela": Quandela}


# -- reading a campaign's state (read-only, as `qrun status` does)

def job_states(db: Path) -> Counter:
    """Jobs by state; empty while the database is not there or not made yet."""
    if not db.exists():
        return Counter()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return Counter(s for (s,) in conn.execute("SELECT state FROM jobs"))
    except sqlite3.OperationalError:  # being created by the apply
        return Counter()


def experiment_states(db: Path) -> Counter:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return Counter(s for (s,) in conn.execute("SELECT state FROM experiments"))


def results(db: Path) -> dict:
    """Experiment key -> (circuit, params, counts) of every stored result."""
    import json

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT e.key, e.circuit, e.params, r.counts FROM results r "
                            "JOIN experiments e ON e.key = r.experiment").fetchall()
    return {k: (c, json.loads(p), json.loads(n)) for k, c, p, n in rows}


def attempt_tags(db: Path) -> list:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [t for (t,) in conn.execute("SELECT tag FROM attempts")]
