"""Validation without SDK imports (issue 12): the caches that make it fast must not change
a single verdict or experiment key.

The fast path is a cache hit: a circuit's facts (sources/facts_cache.py), a provider's
devices and limits (providers/device_cache.py), a check a program passed
(providers/check_cache.py), and the SDK-free checks (providers/*/check.py). Each is compared
with the slow path it replaces (the full parse, the adapter, the SDK's check) over every
circuit file in tests/data and examples/, bench/_circuits.py's random circuits, and the
oddities of test_sources.py and test_source_fuzz.py; and with independent references
(Qiskit's own parsers, qiskit-ibm-runtime's fake backends, Pulser's Pasqal connection).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given

from qrun import caches, manifest, planner
from qrun.errors import ManifestError
from qrun.providers import PROVIDERS, check_cache, device_cache
from qrun.sources import SourceError, _module, facts_cache, gate, load_file, make_program

from .conftest import EXAMPLES, REPO
from .test_source_fuzz import (
    PULSER,
    QASM2,
    QASM3,
    TOKENS,
    fuzz_settings,
    perceval_serializations,
    qpy_programs,
    text_edits,
)
from .test_sources import (
    CALIBRATION_GRAMMAR,
    LICENCE,
    NEGATED_CONDITION,
    QELIB_IN_QASM3,
    SUBROUTINE,
    xor_condition_as_qiskit_writes_it,
)

sys.path.insert(0, str(REPO / "bench"))
import _circuits  # noqa: E402  (bench/_circuits.py)

DATA = REPO / "tests" / "data"
REAL_QASM2_FACTS = gate._qasm2_facts
NOT_CIRCUITS = {".yaml", ".md", ".py"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache folder and nothing remembered in process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(caches.DISABLE_VARIABLE, raising=False)
    _forget_all()
    yield tmp_path / "cache" / "qrun"
    _forget_all()


def _forget_all():
    facts_cache.forget()
    check_cache.forget()
    device_cache.forget()


def _outcome(call):
    try:
        return ("ok", call())
    except SourceError as exc:
        return ("refused", str(exc))


# ---------------------------------------------------------------- circuit facts

def _circuit_files() -> list[Path]:
    files = [p for p in sorted(DATA.rglob("*")) + sorted((EXAMPLES / "circuits").glob("*"))
             if p.is_file() and p.suffix not in NOT_CIRCUITS
             and p.name not in ("LICENSE", "NOTICE", "README")]
    assert len(files) > 90  # the qasmbench corpus, the bad circuits, the examples
    return files


def _programs() -> list[tuple[str, str, bytes, int | None]]:
    """(origin, format, content, index) of every program text the differential reads."""
    programs = []
    for i, ops in enumerate(_circuits.circuits(60, 5, 10, 7)):
        programs.append((f"rand{i}.qasm", "qasm2", _circuits.qasm2(ops, 5).encode(), None))
        programs.append((f"rand{i}-3.qasm", "qasm3", _circuits.qasm3(ops, 5).encode(), None))
        programs.append((f"rand{i}-b.qasm", "qasm3", _circuits.qasm3(ops, 5, "braket").encode(), None))
    oddities = [SUBROUTINE, CALIBRATION_GRAMMAR, QELIB_IN_QASM3, NEGATED_CONDITION,
                xor_condition_as_qiskit_writes_it(), *QASM3]
    programs += [(f"odd{i}.qasm", "qasm3", text.encode(), None) for i, text in enumerate(oddities)]
    programs += [(f"fuzz{i}.qasm", "qasm2", text.encode(), None) for i, text in enumerate(QASM2)]
    programs.append(("licence.qasm", "qasm2", (LICENCE + QASM2[1]).encode(), None))
    programs.append(("huge.qasm", "qasm2", QASM2[1].replace("x a[0]", "x a[99999999999999999999]").encode(), None))
    for i, content in enumerate(qpy_programs()):
        for index in (None, 0, 1):
            programs.append((f"p{i}.qpy", "qpy", content, index))
    programs.append(("rabi.json", "pulser", PULSER.encode(), None))
    from qrun.sources import wrap_photonic

    for i, (text, state) in enumerate(perceval_serializations()):
        programs.append((f"c{i}.pcvl", "perceval", wrap_photonic(text.encode(), state), None))
    return programs


def _full_qasm2(text, origin, include_dir):
    """OpenQASM 2 facts from the QuantumCircuit Qiskit builds (what the counting pass,
    gate._qasm2_facts, replaces)."""
    return gate._facts(gate._parse_qasm2(text, origin, include_dir))


def _slow(fmt, content, origin, index, include_dir=None):
    """The full parse, as validation made it before the cache and the counting pass."""
    if fmt == "qasm2":
        gate._check_text(fmt, content, origin)
        return _full_qasm2(gate._text(content, origin), origin, include_dir)
    return _module(fmt).inspect(fmt, content, origin, index, include_dir)


@pytest.fixture
def full_parse(monkeypatch):
    """Within it, make_program and load_file parse fully and cache nothing: the slow path."""
    class Switch:
        def __enter__(self):
            monkeypatch.setattr(gate, "_qasm2_facts", _full_qasm2)
            monkeypatch.setenv(caches.DISABLE_VARIABLE, "1")

        def __exit__(self, *exc):
            monkeypatch.setattr(gate, "_qasm2_facts", REAL_QASM2_FACTS)
            monkeypatch.delenv(caches.DISABLE_VARIABLE)
            _forget_all()
    return Switch()


def test_cached_facts_equal_the_full_parse_on_every_program(private_cache):
    programs = _programs()
    slow = [_outcome(lambda p=p: _slow(p[1], p[2], p[0], p[3])) for p in programs]
    cold = [_outcome(lambda p=p: make_program(p[1], p[2], p[0], p[3]).facts) for p in programs]
    facts_cache.save()
    facts_cache.forget()  # the next reads come from the file, as in the next command
    warm = [_outcome(lambda p=p: make_program(p[1], p[2], p[0], p[3]).facts) for p in programs]
    assert slow == cold == warm
    kept = json.loads((private_cache / facts_cache.FILE_NAME).read_text())["payload"]["entries"]
    accepted = sum(1 for kind, _ in slow if kind == "ok")
    assert 0 < accepted < len(programs)  # both verdicts are exercised
    accepted_keys = {(make_program(p[1], p[2], p[0], p[3]).digest, p[3])
                     for p, o in zip(programs, slow) if o[0] == "ok"}
    assert len(kept) == len(accepted_keys)  # refusals are not kept


def test_cached_facts_equal_the_full_parse_on_every_file(full_parse):
    files = _circuit_files()

    def loaded(file):
        return _outcome(lambda: (lambda p: (p.digest, p.facts))(load_file(file, file.name)))

    with full_parse:
        slow = [loaded(f) for f in files]
    cold = [loaded(f) for f in files]  # counted, not built; cache empty
    facts_cache.save()
    facts_cache.forget()
    warm = [loaded(f) for f in files]
    assert slow == cold == warm
    assert sum(1 for kind, _ in slow if kind == "ok") > 60


QASM2_BASES = QASM2 + [_circuits.qasm2(ops, 4) for ops in _circuits.circuits(3, 4, 4, 11)] + [
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nu0(2) q[0];\n'
    'opaque delay(t) a;\ndelay(30) q[1];\ngate k(a) x { u0(a) x; }\nk(1) q[0];\nopaque o q;\no q[1];\n'
    'barrier q;\nmeasure q -> c;\n']


def counted_equals_built(text):
    """The counting pass against the full build, on edited programs: same facts, or the same
    refusal (the Rust pass is shared; what only the Python build can raise must match).
    Programs the checks before any parser refuse (huge registers) reach neither."""
    content = text.encode("utf-8", "surrogatepass")
    if _outcome(lambda: gate._check_text("qasm2", content, "f.qasm"))[0] == "refused":
        return
    text = content.decode("utf-8", "replace")

    def counted():
        return gate._qasm2_facts(text, "f.qasm", None)

    def built():
        return _full_qasm2(text, "f.qasm", None)

    assert _outcome(counted) == _outcome(built)


QASM2_TOKENS = TOKENS + ["u0", "delay", "1.5", "qreg", "creg", "gate", "opaque", "0.5"]
test_fuzz_counted_qasm2 = fuzz_settings(200)(given(text_edits(QASM2_BASES, QASM2_TOKENS))(
    counted_equals_built))


def test_counting_pass_bases_reach_both_outcomes():
    outcomes = [_outcome(lambda t=t: gate._qasm2_facts(t, "f.qasm", None)) for t in QASM2_BASES]
    assert all(kind == "ok" for kind, _ in outcomes)
    base = QASM2_BASES[-1]
    for text in (base.replace("u0(2) q", "u0(1.5) q"), base.replace("delay(30)", "delay(1.5)")):
        # refused only by from_bytecode's constructors, after the Rust pass accepted them
        kind, message = _outcome(lambda t=text: gate._qasm2_facts(t, "f.qasm", None))
        assert kind == "refused" and "integer" in message, text
        assert (kind, message) == _outcome(lambda t=text: _full_qasm2(t, "f.qasm", None))


def test_facts_agree_with_qiskit_itself():
    """Widths, bit counts and parameters of the corpus as Qiskit's parsers read them."""
    import qiskit.qasm2
    import qiskit.qasm3

    checked = 0
    for file in _circuit_files():
        try:
            facts = load_file(file, file.name).facts
        except SourceError:
            continue
        text = file.read_text()
        try:
            if "OPENQASM 2" in text:
                circuit = qiskit.qasm2.loads(
                    text, custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
            elif file.suffix == ".qasm":
                circuit = qiskit.qasm3.loads(text)
            else:
                continue
        except Exception:  # what qrun reads with its fallback importer only
            continue
        assert (facts.width, facts.clbits, facts.parameters) == (
            circuit.num_qubits, circuit.num_clbits,
            tuple(sorted(p.name for p in circuit.parameters))), file
        checked += 1
    assert checked > 60


def test_a_damaged_or_foreign_cache_file_is_rebuilt(private_cache):
    text = QASM2[1].encode()
    reference = _slow("qasm2", text, "a.qasm", None)
    make_program("qasm2", text, "a.qasm")
    facts_cache.save()
    path = private_cache / facts_cache.FILE_NAME
    document = json.loads(path.read_text())
    (digest, entry), = document["payload"]["entries"].items()
    damaged = [
        b"{not json",
        b"\xff\xfe",
        json.dumps({**document, "format": 99}).encode(),
        json.dumps({**document, "key": {**document["key"], "code": "other"}}).encode(),
        json.dumps({**document, "payload": {"entries": {digest: ["x"] * len(entry)}}}).encode(),
        json.dumps({**document, "payload": {"entries": {digest: [[], [], -1, 0, None, None,
                                                                 None, None]}}}).encode(),
        json.dumps({**document, "payload": []}).encode(),
    ]
    for content in damaged:
        path.write_bytes(content)
        facts_cache.forget()
        assert make_program("qasm2", text, "a.qasm").facts == reference
        facts_cache.save()
        assert json.loads(path.read_text())["payload"]["entries"][digest] == entry
    assert [p.name for p in private_cache.iterdir()] == [facts_cache.FILE_NAME]  # no temp left


def test_other_parser_versions_mean_another_cache(monkeypatch):
    text = QASM2[1].encode()
    make_program("qasm2", text, "a.qasm")
    facts_cache.save()
    first = facts_cache.cache_key()
    real = caches.versions
    monkeypatch.setattr(caches, "versions",
                        lambda names: {**real(names), "qiskit": "99.0"})
    facts_cache.forget()
    assert facts_cache.cache_key() != first
    parsed = []
    module = _module("qasm2")
    real_inspect = module.inspect
    monkeypatch.setattr(module, "inspect", lambda *a: parsed.append(a) or real_inspect(*a))
    make_program("qasm2", text, "a.qasm")
    assert len(parsed) == 1  # parsed again under the new versions


def test_no_cache_variable_parses_every_time(monkeypatch, private_cache):
    monkeypatch.setenv(caches.DISABLE_VARIABLE, "1")
    module = _module("qasm2")
    parsed = []
    real_inspect = module.inspect
    monkeypatch.setattr(module, "inspect", lambda *a: parsed.append(a) or real_inspect(*a))
    for _ in range(2):
        make_program("qasm2", QASM2[1].encode(), "a.qasm")
    facts_cache.save()
    assert len(parsed) == 2 and not private_cache.exists()


def test_an_unwritable_cache_folder_changes_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file: no folder can be made in it
    facts_cache.forget()
    program = make_program("qasm2", QASM2[1].encode(), "a.qasm")
    facts_cache.save()
    assert program.facts == _slow("qasm2", QASM2[1].encode(), "a.qasm", None)


# ---------------------------------------------------------------- manifests: verdicts and keys

def _manifests() -> list[Path]:
    found = sorted(EXAMPLES.glob("*.yaml")) + sorted(DATA.rglob("*.yaml"))
    assert len(found) > 70
    return found


def _verdict(path: Path):
    """(ok, experiment keys with their circuit, backend and limits) or the problems."""
    try:
        loaded = manifest.load(path, root=REPO)
    except ManifestError as exc:
        return ("problems", [str(p) for p in exc.problems])
    keys = [(e.key, e.circuit, e.backend) for e in planner.experiments(loaded)]
    limits = {name: asdict(b.limits) for name, b in loaded.backends.items()}
    return ("ok", keys, limits)


def test_manifest_verdicts_and_keys_are_those_of_the_full_parse(full_parse):
    paths = _manifests()
    with full_parse:
        slow = [_verdict(p) for p in paths]
    cold = [_verdict(p) for p in paths]
    _forget_all()  # read back from the files written by the cold pass
    warm = [_verdict(p) for p in paths]
    assert slow == cold == warm
    assert sum(1 for v in slow if v[0] == "ok") >= 8 and any(v[0] == "problems" for v in slow)


# ---------------------------------------------------------------- devices of ibm-local

def test_ibm_local_devices_and_limits_are_the_fake_backends_and_cached(private_cache):
    from qiskit_ibm_runtime import fake_provider

    spec = PROVIDERS["qiskit.ibm-local"]
    devices = spec.known_devices()
    assert "fake_manila" in devices and devices == sorted(devices)
    manila = fake_provider.FakeManilaV2()
    limits = spec.device_limits("fake_manila")
    assert (limits.max_qubits, limits.max_shots_per_job, limits.max_experiments_per_job) == (
        manila.num_qubits, manila.configuration().max_shots,
        manila.configuration().max_experiments)
    document = json.loads((private_cache / "devices-qiskit.ibm-local.json").read_text())
    assert document["key"]["versions"]["qiskit-ibm-runtime"] is not None
    assert document["payload"]["devices"] == devices
    device_cache.forget()
    assert spec.known_devices() == devices and spec.device_limits("fake_manila") == limits
    # damaged: rebuilt from the adapter
    (private_cache / "devices-qiskit.ibm-local.json").write_text('{"format": 1, "key": {}')
    device_cache.forget()
    assert spec.known_devices() == devices and spec.device_limits("fake_manila") == limits


PROBE = """
import sys
from qrun import api
api.validate(sys.argv[1])
heavy = ('qiskit', 'qiskit_aer', 'qiskit_ibm_runtime', 'braket', 'pulser', 'pulser_simulation',
         'perceval', 'qutip', 'pasqal_cloud', 'boto3', 'pandas')
print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))
"""


def test_a_warm_validation_imports_no_sdk(tmp_path):
    """The quickstart names all four families (and ibm-local's device list): the first
    validation builds the caches by importing, the next imports no SDK, nor pandas."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop(caches.DISABLE_VARIABLE, None)
    runs = [subprocess.run([sys.executable, "-c", PROBE, str(EXAMPLES / "quickstart.yaml")],
                           capture_output=True, text=True, env=env, timeout=300, check=True)
            for _ in range(2)]
    first, second = (json.loads(r.stdout.strip().replace("'", '"')) for r in runs)
    assert {"qiskit", "pulser", "perceval", "qiskit_ibm_runtime"} <= set(first)
    assert second == []
    names = sorted(p.name for p in (tmp_path / "cache" / "qrun").iterdir())
    assert names == ["checks-braket.local.json", "checks-pulser.local.json",
                     "devices-qiskit.ibm-local.json", "sources.json"]


# ---------------------------------------------------------------- checks without the SDK

def _pulser_sequences() -> dict[str, bytes]:
    """Sequences measured or not, addressing one basis or two, as abstract JSON."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import DigitalAnalogDevice, MockDevice

    register = Register.square(2, spacing=6, prefix="q")
    pulse = Pulse.ConstantPulse(200, 2.0, 0.0, 0.0)
    sequences = {}
    for name, channels, measure in [
            ("one-basis", ["rydberg_global"], None),
            ("measured", ["rydberg_global"], "ground-rydberg"),
            ("two-bases", ["rydberg_global", "raman_local"], None),
            ("two-measured", ["rydberg_global", "raman_local"], "digital"),
            ("raman-only", ["raman_local"], None)]:
        device = MockDevice if name == "raman-only" else DigitalAnalogDevice
        sequence = Sequence(register, device)
        for i, channel in enumerate(channels):
            sequence.declare_channel(f"ch{i}", channel,
                                     **({"initial_target": "q0"} if "local" in channel else {}))
            sequence.add(pulse, f"ch{i}")
        if measure:
            sequence.measure(measure)
        sequences[name] = sequence.to_abstract_repr().encode()
    sequences["rabi"] = PULSER.encode()
    return sequences


def test_pasqal_check_from_facts_equals_pulser_s_own():
    from qrun.providers.pasqal_cloud import adapter, check

    verdicts = {}
    for name, content in _pulser_sequences().items():
        program = make_program("pulser", content, f"{name}.json")
        verdict = check.check_program(program, "FRESNEL", {})
        assert verdict == adapter.check_program(program, "FRESNEL", {}), name
        verdicts[name] = verdict
    assert verdicts["two-bases"] is not None and verdicts["one-basis"] is None
    assert verdicts["two-measured"] is None and verdicts["measured"] is None


def test_braket_check_passes_straight_line_programs_without_qiskit_and_equals_the_full_one():
    from qrun.providers.braket_local import check
    from qrun.providers.braket_local import program as translation

    assert set(check.LOCAL_DEVICES) == set(translation.LOCAL_DEVICES)
    programs = []
    for origin, fmt, content, index in _programs():
        if fmt in ("qasm2", "qasm3", "qpy"):
            try:
                programs.append(make_program(fmt, content, origin, index))
            except SourceError:
                pass
    for file in _circuit_files():
        try:
            loaded = load_file(file, file.name)
        except SourceError:
            continue
        if loaded.family == "gate":
            programs.append(loaded)
    assert len(programs) > 150
    devices = ("braket_sv", "braket_dm", "arn:aws:braket:::device/quantum-simulator/amazon/sv1")
    refused = 0
    for program in programs:
        for device in devices:
            full = translation.check_program(program, device, {})
            fast = check.check_program(program, device, {})
            # Qiskit's translator names the gates it has as a set, in no fixed order: the
            # verdicts are compared, and the messages up to that list
            assert (fast is None) == (full is None), (program.origin, device, full)
            assert fast is None or fast.split("{")[0] == full.split("{")[0]
            refused += full is not None
    assert refused > 0


def test_a_passed_check_is_remembered_a_refusal_is_not(monkeypatch, private_cache):
    from qrun.providers.braket_local import program as translation

    spec = PROVIDERS["braket.local"]
    passing = make_program("qasm3", NEGATED_CONDITION.encode(), "cond.qasm")
    refused = make_program("qasm3", (NEGATED_CONDITION.replace(
        "if (!c[0]) { x q[1]; }", "if (!c[0]) { c[1] = measure q[1]; }")).encode(), "m.qasm")
    expected = [translation.check_program(p, "braket_sv", {}) for p in (passing, refused)]
    assert expected[0] is None and expected[1] is not None
    assert [spec.check_program(p, "braket_sv", {}) for p in (passing, refused)] == expected
    check_cache.save()
    check_cache.forget()
    asked = []
    real = translation.check_program
    monkeypatch.setattr(translation, "check_program", lambda *a: asked.append(a[0]) or real(*a))
    assert [spec.check_program(p, "braket_sv", {}) for p in (passing, refused)] == expected
    assert asked == [refused]  # the pass was remembered; the refusal asked again
    assert spec.check_program(passing, "braket_dm", {}) is None and len(asked) == 2  # per device


def test_pulser_local_check_imports_pulser_only_for_mimic_qpu():
    probe = ("import sys; from qrun.providers.pulser_local import check; "
             "print(check.check_program(None, 'qutip', {}), "
             "sorted(m for m in sys.modules if m.split('.')[0] in ('pulser', 'pulser_simulation')))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert ran.stdout.split() == ["None", "[]"]


def test_cache_folder_follows_xdg_and_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert caches.folder() == tmp_path / "xdg" / "qrun"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert caches.folder() == tmp_path / "home" / ".cache" / "qrun"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert caches.folder() == tmp_path / "home" / ".cache" / "qrun"


def test_past_its_size_the_cache_drops_the_least_recently_used(monkeypatch, private_cache):
    monkeypatch.setattr(facts_cache, "MAX_ENTRIES", 3)
    texts = [QASM2[1].replace("x a[0];", f"x a[0];\n// {i}") for i in range(5)]
    digests = [make_program("qasm2", t.encode(), "a.qasm").digest for t in texts[:3]]
    facts_cache.save()
    facts_cache.forget()
    make_program("qasm2", texts[0].encode(), "a.qasm")  # used again: now the most recent
    digests += [make_program("qasm2", t.encode(), "a.qasm").digest for t in texts[3:]]
    facts_cache.save()
    kept = json.loads((private_cache / facts_cache.FILE_NAME).read_text())["payload"]["entries"]
    assert list(kept) == [digests[0], digests[3], digests[4]]


def test_ibm_local_devices_are_asked_again_when_a_version_changes(monkeypatch, private_cache):
    spec = PROVIDERS["qiskit.ibm-local"]
    adapter = spec.adapter_module()
    asked = []
    real = adapter.known_devices
    monkeypatch.setattr(adapter, "known_devices", lambda: asked.append(1) or real())
    devices = spec.known_devices()
    device_cache.forget()
    assert spec.known_devices() == devices and len(asked) == 1  # read from the file
    versions = caches.versions
    monkeypatch.setattr(caches, "versions", lambda names: {
        **versions(names), "qiskit-ibm-runtime": "0.0.1"})
    device_cache.forget()
    assert spec.known_devices() == devices and len(asked) == 2  # another key: rebuilt
    document = json.loads((private_cache / "devices-qiskit.ibm-local.json").read_text())
    assert document["key"]["versions"]["qiskit-ibm-runtime"] == "0.0.1"


def test_counting_pass_leaves_what_it_cannot_read_to_the_full_build(monkeypatch):
    """Another Qiskit's insides (an opcode or a bytecode shape the pass does not know): the
    verdict is the full build's, not an error of the pass's."""
    expected = _full_qasm2(QASM2[1], "f.qasm", None)

    def unreadable(text, include_dir):
        raise ValueError("invalid operation: <an opcode of a newer Qiskit>")

    monkeypatch.setattr(gate, "_counted_qasm2", unreadable)
    assert gate._qasm2_facts(QASM2[1], "f.qasm", None) == expected
