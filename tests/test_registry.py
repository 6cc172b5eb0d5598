"""The provider registry: built from the `qrun.providers` entry points, qrun's own included;
the checked-in schema is generated from it; specs import no SDK; a broken or clashing
plugin is left out with a reason, never taking the others down."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import import_module
from importlib.resources import files
from pathlib import Path

import pytest

from qrun import manifest as manifests
from qrun.providers import PROVIDERS, ProviderSpec, Registry

from .conftest import REPO, qrun

BUILTIN = ["qiskit.aer", "qiskit.ibm-local", "braket.local", "pulser.local", "perceval.local",
           "qiskit.ibm", "braket.aws", "pasqal.cloud", "quandela.cloud"]


def test_builtins_register_through_the_entry_point_group_in_order():
    assert [spec.id for spec in PROVIDERS.builtin()] == BUILTIN
    assert all(PROVIDERS[pid].distribution == "qrun" for pid in BUILTIN)
    assert PROVIDERS.problems == []


def test_checked_in_schema_is_generated_from_the_registry():
    checked_in = (REPO / "schemas" / "qrun-v1.schema.json").read_text(encoding="utf-8")
    generated = qrun("schema", "--builtin")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == checked_in, (
        "schemas/qrun-v1.schema.json differs from the registry: "
        "run `qrun schema --builtin > schemas/qrun-v1.schema.json`")
    enum = json.loads(checked_in)["$defs"]["backend"]["properties"]["provider"]["enum"]
    assert enum == BUILTIN


def test_schema_lists_installed_plugins_too():
    listed = json.loads(qrun("schema").stdout)["$defs"]["backend"]["properties"]["provider"]["enum"]
    assert listed[:len(BUILTIN)] == BUILTIN
    assert listed == list(PROVIDERS)


@pytest.mark.parametrize("provider_id", BUILTIN)
def test_a_provider_is_one_folder(provider_id):
    spec = PROVIDERS[provider_id]
    package = spec.adapter.rsplit(".", 1)[0]
    folder = Path(import_module(package).__file__).parent
    assert folder.parent == REPO / "qrun" / "providers"
    assert (folder / "adapter.py").is_file() and spec.adapter == f"{package}.adapter"
    if spec.local:
        assert spec.fake is None
    else:  # every cloud has its fake beside its adapter, for rehearsals and tests
        assert spec.fake.startswith(f"{package}.fake:")
    for module in filter(None, [spec.check_module]):
        assert module.startswith("qrun.providers.")


def test_specs_import_no_sdk():
    probe = ("import sys; from qrun.providers import PROVIDERS; "
             "[s.device_problem(s.default_device or 'x') for s in PROVIDERS.values() if s.devices]; "
             "sdks = ('qiskit_aer', 'qiskit_ibm_runtime', 'braket', 'pulser', 'perceval', "
             "'pasqal_cloud', 'boto3', 'qiskit'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in sdks))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


class _Entry:
    """An entry point as importlib.metadata hands it over."""

    def __init__(self, name, value, dist, loads):
        self.name, self.value, self._loads = name, value, loads
        self.dist = type("Dist", (), {"metadata": {"Name": dist}})()

    def load(self):
        if isinstance(self._loads, Exception):
            raise self._loads
        return self._loads


def _registry(monkeypatch, *entries) -> Registry:
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: list(entries))
    return Registry()


def _spec(pid: str) -> ProviderSpec:
    return ProviderSpec(id=pid, adapter="nowhere.adapter", formats=("qasm2",), local=True,
                        sdk_packages=())


def test_a_broken_or_clashing_plugin_is_left_out_with_its_reason(monkeypatch):
    registry = _registry(
        monkeypatch,
        _Entry("broken", "broken_plugin:SPEC", "qrun-broken", ImportError("No module named 'x'")),
        _Entry("thief", "thief:SPEC", "qrun-thief", _spec("qiskit.aer")),
        _Entry("odd", "odd:SPEC", "qrun-odd", {"id": "odd"}),
        _Entry("two", "two:SPECS", "qrun-two", [_spec("two.a"), _spec("two.b")]),
        _Entry("qiskit.aer", "qrun.providers.aer:SPEC", "qrun", _spec("qiskit.aer")),
    )
    assert list(registry) == ["qiskit.aer", "two.a", "two.b"]  # qrun's own first
    assert registry["qiskit.aer"].distribution == "qrun"
    assert registry["two.b"].distribution == "qrun-two"
    problems = "\n".join(registry.problems)
    assert "qrun-broken: entry point broken = broken_plugin:SPEC failed to load " \
           "(ImportError: No module named 'x')" in problems
    assert "qrun-thief: provider qiskit.aer is already registered by qrun; left out" in problems
    assert "qrun-odd: entry point odd gives dict, not a qrun.providers.ProviderSpec" in problems


def test_no_registered_provider_says_to_reinstall(monkeypatch):
    registry = _registry(monkeypatch)
    assert len(registry) == 0
    assert "reinstall it" in registry.problems[0]


def test_an_unknown_provider_names_the_plugins_left_out(monkeypatch, project):
    from .conftest import write

    monkeypatch.setattr(type(PROVIDERS), "problems",
                        property(lambda self: ["qrun-broken: entry point broken failed to load"]))
    manifest = write(project, "m.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: m}
        spec:
          circuits: [{name: ghz, source: circuits/ghz.qasm}]
          backends: [{name: b, provider: broken.sim}]
          targets: [{circuits: [ghz], backends: [b]}]
    """)
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.load(manifest)
    [problem] = caught.value.problems
    assert "'broken.sim' is not one of: qiskit.aer" in str(problem)
    assert str(problem).endswith("(providers left out: qrun-broken: entry point broken failed to load)")


def test_qrun_providers_lists_them():
    listing = qrun("providers", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["id"]: row for row in json.loads(listing.stdout)["providers"]}
    assert rows["braket.aws"] == {"id": "braket.aws", "kind": "cloud",
                                  "formats": ["qasm2", "qasm3", "qpy", "braket"],
                                  "devices": PROVIDERS["braket.aws"].device_hint,
                                  "package": "qrun", "fake": True}
    table = qrun("providers")
    assert table.returncode == 0 and "perceval.local" in table.stdout


def test_fakes_launcher_names_the_providers_with_fakes():
    listing = subprocess.run([sys.executable, "-m", "qrun.fakes", "nope"], capture_output=True, text=True)
    assert listing.returncode == 2
    assert listing.stderr.strip() == ("no fake service for 'nope'; choose one of: "
                                      "braket.aws, pasqal.cloud, qiskit.ibm, quandela.cloud")


def test_packaged_schema_is_the_checked_in_one():
    packaged = files("qrun") / "schemas" / "qrun-v1.schema.json"
    if packaged.is_file():  # a wheel install; an editable one reads the repository's file
        assert packaged.read_text() == (REPO / "schemas" / "qrun-v1.schema.json").read_text()
