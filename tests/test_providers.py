"""Every provider: known circuits give the distributions physics predicts, and validation
refuses what a backend cannot run, at the target's line."""

from __future__ import annotations

import json
import shutil

import pytest

from qrun import manifest as manifests
from qrun.errors import ManifestError

from .conftest import EXAMPLES, qrun, write


@pytest.fixture
def lab(project):
    """The project folder with the examples' Pulser, Perceval and factory sources."""
    for name in ("rabi.json", "hom.pcvl", "mach-zehnder.pcvl"):
        shutil.copy(EXAMPLES / "circuits" / name, project / "circuits" / name)
    shutil.copy(EXAMPLES / "factories.py", project / "factories.py")
    return project


def _rows(manifest) -> list[dict]:
    result = qrun("apply", manifest)
    assert result.returncode == 0, result.stderr
    exported = qrun("export", manifest, "-o", "-", "-f", "jsonl")
    return [json.loads(line) for line in exported.stdout.splitlines()]


def test_physics_on_every_provider(lab):
    manifest = write(lab, "physics.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: physics}
        spec:
          shots: 2000
          seed: 11
          circuits:
            - {name: ghz, source: circuits/ghz.qasm}
            - {name: rabi, source: circuits/rabi.json, sweep: {duration: [500, 1000]}}
            - {name: hom, source: circuits/hom.pcvl, input: "|1,1>"}
            - {name: mzi, source: circuits/mach-zehnder.pcvl, input: "|1,0>", sweep: {phi: [0.0, 3.14159]}}
          backends:
            - {name: aer, provider: qiskit.aer}
            - {name: sv, provider: braket.local}
            - {name: manila, provider: qiskit.ibm-local, device: fake_manila}
            - {name: atoms, provider: pulser.local}
            - {name: slos, provider: perceval.local}
            - {name: sampler, provider: perceval.local, device: CliffordClifford2017}
          targets:
            - {circuits: [ghz], backends: [aer, sv, manila]}
            - {circuits: [rabi], backends: [atoms]}
            - {circuits: [hom, mzi], backends: [slos, sampler]}
    """)
    rows = {(r["circuit"], r["backend"], json.dumps(r["params"])): r for r in _rows(manifest)}
    for backend in ("aer", "sv"):  # ideal GHZ: half 000, half 111, nothing else
        counts = rows[("ghz", backend, "{}")]["counts"]
        assert set(counts) == {"000", "111"} and 850 <= counts["000"] <= 1150
    noisy = rows[("ghz", "manila", "{}")]  # fake_manila's noise: mostly GHZ, some errors
    assert noisy["counts"]["000"] + noisy["counts"]["111"] >= 0.8 * 2000
    assert len(noisy["counts"]) > 2
    assert noisy["metadata"]["device"] == "fake_manila"
    # A resonant pi pulse (500 ns at 2 pi rad/us) flips the atom; 2 pi brings it back.
    assert rows[("rabi", "atoms", '{"duration": 500}')]["counts"].get("1", 0) >= 1980
    assert rows[("rabi", "atoms", '{"duration": 1000}')]["counts"].get("0", 0) >= 1980
    for backend in ("slos", "sampler"):
        hom = rows[("hom", backend, "{}")]["counts"]
        assert "|1,1>" not in hom and set(hom) == {"|2,0>", "|0,2>"}
        assert 850 <= hom["|2,0>"] <= 1150
        assert rows[("mzi", backend, '{"phi": 0.0}')]["counts"] == {"|0,1>": 2000}
        assert rows[("mzi", backend, '{"phi": 3.14159}')]["counts"] == {"|1,0>": 2000}


def test_factories_build_every_kind_and_keep_their_keys(lab):
    manifest = write(lab, "factories.yaml", (EXAMPLES / "factories.yaml").read_text())
    first = [e.key for e in __import__("qrun.planner").planner.experiments(manifests.load(manifest))]
    second = [e.key for e in __import__("qrun.planner").planner.experiments(manifests.load(manifest))]
    assert first == second, "a deterministic factory must give the same keys every time"
    rows = {(r["circuit"], r["backend"]): r for r in _rows(manifest)}
    assert set(rows[("ghz5", "aer")]["counts"]) == {"00000", "11111"}
    assert set(rows[("ghz5", "sv")]["counts"]) == {"00000", "11111"}
    assert set(rows[("bell", "sv")]["counts"]) == {"00", "11"}
    assert rows[("rabi", "atoms")]["counts"].get("1", 0) >= 990
    assert "|1,1>" not in rows[("hom", "photons")]["counts"]


def _problems(folder, body: str) -> list[str]:
    path = write(folder, "m.yaml", body)
    with pytest.raises(ManifestError) as caught:
        manifests.load(path)
    return [f"{p.line}: {p.path}: {p.message}" for p in caught.value.problems]


HEADER = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: misfits}
    spec:
"""


def test_validation_refuses_what_a_backend_cannot_run(lab):
    write(lab, "circuits/wide.qasm", "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[7];\n"
                                     "creg c[7];\nh q[0];\nmeasure q -> c;\n")
    problems = _problems(lab, HEADER + """
          circuits:
            - {name: ghz, source: circuits/ghz.qasm}
            - {name: wide, source: circuits/wide.qasm}
            - {name: rabi, source: circuits/rabi.json, sweep: {duration: [500]}}
            - {name: hom, source: circuits/hom.pcvl, input: "|1,1>"}
          backends:
            - {name: aer, provider: qiskit.aer}
            - {name: manila, provider: qiskit.ibm-local, device: fake_manila}
            - {name: atoms, provider: pulser.local}
            - {name: photons, provider: perceval.local, limits: {max_photons: 1}}
          targets:
            - {circuits: [rabi], backends: [aer]}
            - {circuits: [ghz], backends: [photons]}
            - {circuits: [wide], backends: [manila]}
            - {circuits: [hom], backends: [photons]}
            - {circuits: [hom], backends: [atoms]}
    """)
    assert problems == [
        "17: spec.targets[0]: circuit 'rabi' (a Pulser sequence) cannot run on backend 'aer' "
        "(qiskit.aer runs gate-model circuits)",
        "18: spec.targets[1]: circuit 'ghz' (a gate-model circuit) cannot run on backend "
        "'photons' (perceval.local runs photonic circuits)",
        "19: spec.targets[2]: circuit 'wide' has 7 qubits; backend 'manila' takes at most 5",
        "20: spec.targets[3]: circuit 'hom' sends 2 photons; backend 'photons' takes at most 1",
        "21: spec.targets[4]: circuit 'hom' (a photonic circuit) cannot run on backend 'atoms' "
        "(pulser.local runs Pulser sequences)",
    ]


def test_devices_and_sources_of_new_providers_are_checked(lab):
    problems = _problems(lab, HEADER + """
          circuits:
            - {name: hom, source: circuits/hom.pcvl}
            - {name: rabi, source: circuits/rabi.json, sweep: {duration: [500]}, input: "|1>"}
            - {name: bad, source: {python: "factories:nope"}}
            - {name: boom, source: {python: "factories:ghz", args: {qubits: -1}}}
          backends:
            - {name: manila, provider: qiskit.ibm-local, device: fake_manilla}
            - {name: nodevice, provider: qiskit.ibm-local}
            - {name: atoms, provider: pulser.local, device: emu-tn}
    """)
    assert problems[0].startswith("7: spec.circuits[0].source: circuits/hom.pcvl needs an input state")
    assert problems[1] == ("8: spec.circuits[1].source: input: applies to Perceval circuits only; "
                           "circuits/rabi.json is pulser")
    assert problems[2] == "9: spec.circuits[2].source: factories has no function nope"
    assert problems[3].startswith("10: spec.circuits[3].source: factories:ghz raised ")
    assert problems[4].startswith("12: spec.backends[0].device: qiskit.ibm-local has no device "
                                  "'fake_manilla' (did you mean 'fake_manila'?)")
    assert problems[5] == "13: spec.backends[1]: qiskit.ibm-local needs a device: name one with device:"
    assert problems[6].startswith("14: spec.backends[2].device: pulser.local has no device 'emu-tn'")


def test_mimic_qpu_refuses_a_virtual_device(lab):
    from qrun.sources.factory import load_factory  # build a sequence on a virtual device

    program = load_factory({"python": "factories:rabi", "args": {"device": "MockDevice"}}, lab)
    (lab / "circuits/mock.json").write_bytes(program.content)
    problems = _problems(lab, HEADER + """
          circuits: [{name: mock, source: circuits/mock.json, sweep: {duration: [500]}}]
          backends: [{name: qpu-like, provider: pulser.local, options: {mimic_qpu: true}}]
    """)
    assert len(problems) == 1
    assert problems[0].startswith("7: spec.backends[0]: circuits/mock.json cannot be emulated as on a QPU "
                                  "(mimic_qpu): To be sent to a QPU, the device of the sequence "
                                  "must be a real device")


def test_registry_limits_match_the_sdk_device_objects():
    from braket.devices import LocalSimulator

    from qrun.providers import PROVIDERS

    for device, limits in PROVIDERS["braket.local"].devices.items():
        assert LocalSimulator(device).properties.paradigm.qubitCount == limits.max_qubits
    manila = PROVIDERS["qiskit.ibm-local"].device_limits("fake_manila")
    assert (manila.max_qubits, manila.max_shots_per_job) == (5, 100000)


def test_ibm_shot_cap_slices_and_merges(lab):
    manifest = write(lab, "slices.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: slices}
        spec:
          shots: 250
          circuits: [{name: ghz, source: circuits/ghz.qasm}]
          backends:
            - {name: manila, provider: qiskit.ibm-local, device: fake_manila, limits: {max_shots_per_job: 100}}
    """)
    [row] = _rows(manifest)
    assert sum(row["counts"].values()) == 250
    assert row["metadata"]["slices"] == [84, 83, 83]
    assert row["attempts"] == 3
