"""Export layouts and formats: the long layout (one row per outcome), Parquet, the pandas
DataFrame of qrun.results, ISO 8601 timestamps, and `qrun export -o - | head`.

References are independent of the exporter: the state database read through
qrun.store.read (counts, params, times as stored), the physics of a circuit with a known
outcome, and pyarrow reading the Parquet files back.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qrun import __version__, api, exporter
from qrun import manifest as manifests
from qrun import store as qstore
from qrun.errors import QrunError
from qrun.providers import faults
from qrun.store import Store

from .conftest import write

SHOTS = 64

# x on the last of three qubits: classical bit 2 set, so "001" in qrun's bit order (bit 0
# leftmost); a leading zero that a careless CSV or DataFrame reader would turn into 1.
FLIP_LAST = """\
OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
x q[2];
c = measure q;
"""

ROT2 = """\
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
h q[1];
c = measure q;
"""

PHI = """\
OPENQASM 3.0;
include "stdgates.inc";
input float phi;
qubit[1] q;
bit[1] c;
rx(phi) q[0];
c[0] = measure q[0];
"""

# theta binds the integer 0 beside floats (a float column); phi only integers (an int
# column); flip has no parameter: the long layout's columns are the union, empty where absent.
CAMPAIGN = f"""
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {{name: layouts}}
    spec:
      shots: {SHOTS}
      seed: 5
      circuits:
        - {{name: flip, source: circuits/flip.qasm}}
        - name: rot
          source: circuits/rot.qasm
          sweep: {{theta: [0, 0.7, 1.5, 3.14159]}}
        - name: ramp
          source: circuits/phi.qasm
          sweep: {{phi: [1, 2, 3]}}
      backends: [{{name: aer, provider: qiskit.aer}}]
"""

# Picked so that some experiments fail for good (rot at 0.7 and ramp at 3; by content,
# the same on every machine) and flip is done.
FAULTS = "permanent=0.3,seed=5"


class Campaign:
    def __init__(self, folder):
        self.folder = folder
        self.manifest = folder / "layouts.yaml"
        self.state_dir = folder / "state"

    def export(self, name: str, fmt: str, layout: str) -> object:
        out = self.folder / "out" / name
        api.export(self.manifest, out, fmt=fmt, layout=layout, state_dir=self.state_dir)
        return out

    def stored(self) -> dict:
        """key -> (experiment row, result row or None), straight from the state database."""
        with qstore.read(self.state_dir / "layouts.sqlite") as state:
            results = {r.experiment: r for r in state.results()}
            return {e.key: (e, results.get(e.key)) for e in state.experiments()}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layouts")
    write(folder, "circuits/flip.qasm", FLIP_LAST)
    write(folder, "circuits/rot.qasm", ROT2)
    write(folder, "circuits/phi.qasm", PHI)
    write(folder, "layouts.yaml", CAMPAIGN)
    made = Campaign(folder)
    applied = subprocess.run([sys.executable, "-m", "qrun", "apply", str(made.manifest), "--no-progress",
                              "--state-dir", str(made.state_dir)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, faults.ENV: FAULTS})
    assert applied.returncode == 1, applied.stdout + applied.stderr  # some failed, by design
    states = [experiment.state for experiment, _ in made.stored().values()]
    assert states.count("failed") == 2 and states.count("done") == 6, states
    return made


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _expected_long(campaign) -> list[dict]:
    """The long layout worked out from the stored results: per done experiment, its
    outcomes in string order; parameters as floats (theta) or integers (phi)."""
    rows = []
    for experiment, result in campaign.stored().values():
        if result is None:
            continue
        total = sum(result.counts.values())
        for outcome in sorted(result.counts):
            params = experiment.params
            rows.append({
                "key": experiment.key, "circuit": experiment.circuit, "backend": "aer",
                "provider": "qiskit.aer",
                "phi": params.get("phi"), "theta": None if "theta" not in params else float(params["theta"]),
                "shots": SHOTS, "outcome": outcome, "count": result.counts[outcome],
                "probability": result.counts[outcome] / total, "completed_at": _utc(result.completed_at)})
    return rows


def _by_key_and_outcome(rows) -> dict:
    return {(row["key"], row["outcome"]): row for row in rows}


def test_long_parquet_holds_every_outcome_of_the_done_experiments(campaign, tmp_path):
    out = tmp_path / "long.parquet"
    done = subprocess.run([sys.executable, "-m", "qrun", "export", str(campaign.manifest), "-f", "parquet",
                           "--layout", "long", "-o", str(out), "--state-dir", str(campaign.state_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.schema.names == ["key", "circuit", "backend", "provider", "phi", "theta", "shots",
                                  "outcome", "count", "probability", "completed_at"]
    types = dict(zip(table.schema.names, table.schema.types))
    assert types["count"] == pa.int64() and types["shots"] == pa.int64() and types["phi"] == pa.int64()
    assert types["probability"] == pa.float64() and types["theta"] == pa.float64()
    assert types["outcome"] == pa.string() and types["completed_at"] == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    assert f"wrote {len(rows)} rows" in done.stderr

    expected = _expected_long(campaign)
    assert len(rows) == len(expected)
    got = _by_key_and_outcome(rows)
    for want in expected:
        row = got[want["key"], want["outcome"]]
        assert abs((row["completed_at"] - want.pop("completed_at")).total_seconds()) <= 1e-6
        assert {name: row[name] for name in want} == want
    # Failed experiments have no counts, so no rows; every done one sums to its shots.
    failed = {e.key for e, r in campaign.stored().values() if r is None}
    assert failed and not failed & {row["key"] for row in rows}
    sums: dict = {}
    for row in rows:
        sums[row["key"]] = sums.get(row["key"], 0) + row["count"]
    assert set(sums.values()) == {SHOTS}
    # Bit order: x q[2] gives classical bit 2 set, the rightmost character.
    assert [(r["outcome"], r["count"], r["probability"]) for r in rows if r["circuit"] == "flip"] \
        == [("001", SHOTS, 1.0)]


def test_long_jsonl_and_csv_agree_with_parquet_row_by_row(campaign):
    parquet = pq.read_table(campaign.export("long.parquet", "parquet", "long")).to_pylist()
    lines = [json.loads(x) for x in campaign.export("long.jsonl", "jsonl", "long").read_text().splitlines()]
    with campaign.export("long.csv", "csv", "long").open(newline="") as handle:
        cells = list(csv.DictReader(handle))
    assert len(parquet) == len(lines) == len(cells) > 0
    for table_row, line, cell in zip(parquet, lines, cells):
        stamp = table_row.pop("completed_at")
        assert line.pop("completed_at") == cell.pop("completed_at") \
            == stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert line == table_row
        assert cell == {name: "" if value is None else str(value) for name, value in table_row.items()}
    assert {"001"} <= {cell["outcome"] for cell in cells}  # the leading zero is kept


def test_wide_parquet_agrees_with_the_wide_jsonl_row_by_row(campaign):
    table = pq.read_table(campaign.export("wide.parquet", "parquet", "wide"))
    names = table.schema.names
    assert names[:6] == ["key", "circuit", "backend", "provider", "phi", "theta"]
    assert "params" not in names and "counts" in names
    lines = [json.loads(x) for x in campaign.export("wide.jsonl", "jsonl", "wide").read_text().splitlines()]
    rows = table.to_pylist()
    assert len(rows) == len(lines) == 8
    for row, line in zip(rows, lines):
        params = line.pop("params")
        assert (row.pop("phi"), row.pop("theta")) == (params.get("phi"), params.get("theta"))
        counts = row.pop("counts")
        assert (dict(counts) if counts is not None else None) == line.pop("counts")
        metadata = row.pop("metadata")
        assert (json.loads(metadata) if metadata else None) == line.pop("metadata")
        stamp = row.pop("completed_at")
        assert (stamp and stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == line.pop("completed_at")
        assert row == line


def test_wide_text_exports_give_times_in_iso_8601_utc(campaign):
    stored = campaign.stored()
    lines = [json.loads(x) for x in campaign.export("wide.jsonl", "jsonl", "wide").read_text().splitlines()]
    with campaign.export("wide.csv", "csv", "wide").open(newline="") as handle:
        cells = {row["key"]: row for row in csv.DictReader(handle)}
    for line in lines:
        result = stored[line["key"]][1]
        if result is None:
            assert line["completed_at"] is None and cells[line["key"]]["completed_at"] == ""
            continue
        when = datetime.fromisoformat(line["completed_at"])
        assert when.utcoffset().total_seconds() == 0 and line["completed_at"].endswith("Z")
        assert abs(when.timestamp() - result.completed_at) < 1e-6
        assert cells[line["key"]]["completed_at"] == line["completed_at"]


def test_results_dataframe_has_proper_dtypes_long_and_wide(campaign):
    long = api.results(campaign.manifest, state_dir=campaign.state_dir)
    assert list(long.columns) == ["key", "circuit", "backend", "provider", "phi", "theta", "shots",
                                  "outcome", "count", "probability", "completed_at"]
    assert long["count"].dtype == "int64" and long["shots"].dtype == "int64"
    assert long["probability"].dtype == "float64" and long["theta"].dtype == "float64"
    assert str(long["phi"].dtype) == "Int64" and str(long["completed_at"].dtype) == "datetime64[us, UTC]"
    expected = _expected_long(campaign)
    assert len(long) == len(expected)
    records = _by_key_and_outcome(long.to_dict("records"))
    for want in expected:
        got = records[want["key"], want["outcome"]]
        assert got["count"] == want["count"] and got["probability"] == want["probability"]
        assert (got["phi"] is None or str(got["phi"]) == "<NA>") == (want["phi"] is None)
    assert long.groupby("key")["count"].sum().eq(SHOTS).all()
    assert long.groupby("key")["probability"].sum().round(12).eq(1.0).all()
    assert long.loc[long["circuit"] == "flip", "outcome"].tolist() == ["001"]

    wide = api.results(campaign.manifest, layout="wide", state_dir=campaign.state_dir)
    assert len(wide) == 8 and "params" not in wide.columns
    assert wide["shots"].dtype == "int64" and wide["attempts"].dtype == "int64"
    assert str(wide["completed_at"].dtype) == "datetime64[us, UTC]"
    failed = wide[wide["state"] == "failed"]
    assert len(failed) == 2 and failed["completed_at"].isna().all() and failed["counts"].isna().all()
    assert sorted(wide["theta"].dropna()) == [0.0, 0.7, 1.5, 3.14159]  # every experiment
    assert sorted(long["theta"].dropna().unique()) == [0.0, 1.5, 3.14159]  # 0.7 failed: no counts


def test_unknown_layout_and_missing_pyarrow_are_clear_errors(campaign, monkeypatch):
    with pytest.raises(QrunError, match="unknown export layout 'tall'"):
        campaign.export("x.jsonl", "jsonl", "tall")
    with pytest.raises(QrunError, match="unknown export format 'xlsx'"):
        campaign.export("x.xlsx", "xlsx", "wide")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(QrunError, match=r"pip install 'qrun\[parquet\]'"):
        campaign.export("x.parquet", "parquet", "long")


def test_a_failed_parquet_export_leaves_the_previous_file(campaign, monkeypatch):
    target = campaign.export("keep.parquet", "parquet", "long")
    before = target.read_bytes()

    def broken(self, batch, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", broken)
    with pytest.raises(QrunError, match="No space left on device"):
        campaign.export("keep.parquet", "parquet", "long")
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []


# -- many rows: `| head`, and memory

def _stored_plan(folder, count: int):
    """A campaign of ``count`` experiments, planned and stored (not run), as apply stores it."""
    write(folder, "circuits/rot.qasm", ROT2)
    path = write(folder, f"many{count}.yaml", f"""
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {{name: many{count}}}
        spec:
          shots: 10
          circuits: [{{name: rot, source: circuits/rot.qasm, sweep: {{theta: {{linspace: [0, 3, {count}]}}}}}}]
          backends: [{{name: aer, provider: qiskit.aer}}]
    """)
    manifest = manifests.load(path)
    with Store.open(api.state_path(manifest)) as store:
        apply_id = store.begin_apply("apply", str(path), manifest.sha256, None, None, __version__)
        api.store_plan(store, manifest, apply_id)
        store.finish_apply(apply_id, "interrupted")
    return path


@pytest.mark.parametrize("fmt, reader", [("jsonl", ["head", "-n", "1"]), ("parquet", ["head", "-c", "4"])])
def test_export_into_a_closed_pipe_ends_quietly(tmp_path, fmt, reader):
    path = _stored_plan(tmp_path, 3000)  # ~1 MB of JSON Lines: far more than a pipe holds
    export = subprocess.Popen([sys.executable, "-m", "qrun", "export", str(path), "-o", "-", "-f", fmt],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(reader, stdin=export.stdout, stdout=subprocess.PIPE)
    export.stdout.close()  # only head reads the pipe now: when it exits, the pipe is closed
    shown, _ = head.communicate(timeout=120)
    errors = export.stderr.read().decode()
    export.stderr.close()
    assert export.wait(timeout=120) == 141, errors  # as a Unix tool ended by SIGPIPE
    assert errors == ""  # no "internal error", no traceback, no "Exception ignored"
    if fmt == "jsonl":
        assert json.loads(shown)["circuit"] == "rot"
    else:
        assert shown == b"PAR1"  # Parquet's magic number


def _peak_mb(work) -> float:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_parquet_export_memory_does_not_grow_with_the_campaign(tmp_path, monkeypatch):
    # Batches of 500 rows, so that both sizes fill several: what grows then is what the
    # writer keeps between batches, which must be nothing.
    monkeypatch.setattr(exporter, "BATCH_ROWS", {"wide": 500, "long": 500})
    peaks = {}
    for count in (2000, 12000):
        path = _stored_plan(tmp_path, count)
        peaks[count] = _peak_mb(lambda path=path: api.export(path, tmp_path / "out.parquet"))
        assert pq.read_metadata(tmp_path / "out.parquet").num_rows == count
    assert peaks[12000] - peaks[2000] < 1.0, peaks


def test_spec_export_takes_parquet_and_a_layout(campaign):
    """The manifest's own exports (written at the end of each apply) in every format and
    layout: the same files `qrun export` writes."""
    text = (campaign.folder / "layouts.yaml").read_text() + (
        "  export:\n"
        "    - {path: out/spec-long.parquet, layout: long}\n"
        "    - {path: out/spec-wide.csv}\n"
        "    - {path: out/spec-spend.jsonl, layout: spend}\n")
    path = write(campaign.folder, "with-exports.yaml", text)
    manifest = api.validate(path)
    assert [(e.format, e.layout) for e in manifest.exports] == \
        [("parquet", "long"), ("csv", "wide"), ("jsonl", "spend")]
    with Store.open(campaign.state_dir / "layouts.sqlite", readonly=True) as store:
        written = api._write_exports(store, manifest, store.latest_plan_apply())
    assert [count for _, count in written][1] == 8  # every experiment, failed ones too
    out = campaign.folder / "out"
    assert pq.read_table(out / "spec-long.parquet").to_pylist() == \
        pq.read_table(campaign.export("cli-long.parquet", "parquet", "long")).to_pylist()
    assert (out / "spec-wide.csv").read_text() == campaign.export("cli-wide.csv", "csv", "wide").read_text()
    assert (out / "spec-spend.jsonl").read_text() == ""  # a local simulator: nothing sent to pay for

    bad = write(campaign.folder, "bad-layout.yaml", text.replace("layout: long", "layout: tall"))
    with pytest.raises(manifests.ManifestError) as refused:
        api.validate(bad)
    assert "spec.export[0].layout" in str(refused.value) and "tall" in str(refused.value)
