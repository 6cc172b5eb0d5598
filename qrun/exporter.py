"""Export stage: stored results, joined with their provenance, streamed to JSON Lines, CSV
or Parquet, one row per experiment (wide layout) or one row per outcome (long layout).

Rows come one at a time from the store and go straight to the file (Parquet: a record
batch at a time), so exporting a large campaign needs no more memory than a small one.
Files are written beside their target and renamed into place, so a crash never leaves half
an export where a full one was. Timestamps are ISO 8601 in UTC (Parquet: UTC timestamps).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .errors import QrunError

FORMATS = ("jsonl", "csv", "parquet")
LAYOUTS = ("wide", "long", "spend")
ROW_LAYOUTS = ("wide", "long")  # the layouts of results (spend is per backend)

# Spend layout: one row per backend the campaign sent work to: what qrun estimates it cost
# at the manifest's prices, beside what the provider itself reported of the finished jobs.
SPEND_COLUMNS = ("backend", "provider", "device", "currency", "tasks_sent", "shots_sent",
                 "estimated_cost", "reported_jobs", "reported_tasks", "reported_shots",
                 "reported_seconds", "reported_cost", "unsettled_jobs", "unknown_for",
                 "calibrations", "latest_calibration")

# Wide layout (CSV, JSON Lines) columns, in order; in CSV, mappings and lists are written as
# JSON text inside a cell.
COLUMNS = ("key", "circuit", "backend", "provider", "params", "shots", "state", "counts",
           "attempts", "remote_ids", "manifest_sha256", "git_commit", "git_dirty", "completed_at",
           "error", "metadata")

# Long layout: one row per outcome of each completed experiment; the parameter columns go
# between the head and the tail.
LONG_HEAD = ("key", "circuit", "backend", "provider")
LONG_TAIL = ("shots", "outcome", "count", "probability", "completed_at")

# A parameter whose name is already a column's gets this prefix (a sweep over `shots`).
PARAM_PREFIX = "param."
_RESERVED = frozenset(COLUMNS) | frozenset(LONG_TAIL)

# Rows per Parquet record batch (and row group) and per DataFrame chunk: what an export
# holds at once. A wide row carries its counts and metadata, a long one a few numbers.
BATCH_ROWS = {"wide": 5_000, "long": 50_000}


class Row(Protocol):
    """An export row (the store's reports.ExportRow): its fields by name."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ParamColumn:
    """One swept parameter as a column: its name in the params, the column's name, and the
    kind of its values ("int", "float", "str"; see store.reports.param_types)."""

    param: str
    column: str
    kind: str


def param_columns(types: Mapping[str, str]) -> list[ParamColumn]:
    return [ParamColumn(name, PARAM_PREFIX + name if name in _RESERVED else name, kind)
            for name, kind in sorted(types.items())]


def format_for(path: str | None, requested: str | None) -> str:
    if requested:
        if requested not in FORMATS:
            raise QrunError(f"unknown export format {requested!r}; use jsonl, csv or parquet")
        return requested
    suffix = Path(path).suffix.lstrip(".").lower() if path and path != "-" else ""
    if suffix in FORMATS:
        return suffix
    raise QrunError("cannot tell the export format; pass --format jsonl, csv or parquet")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise QrunError(f"unknown export layout {layout!r}; use wide, long or spend")
    return layout


def write(rows: Iterable[Row], fmt: str, path: str | Path, layout: str = "wide",
          params: Mapping[str, str] | None = None) -> int:
    """Write rows to ``path`` ('-' for standard output); return how many were written.

    ``params`` (name -> kind) names the parameter columns of the long layout and of Parquet;
    the wide JSON Lines and CSV keep the params as one mapping."""
    check_layout(layout)
    columns = param_columns(params or {})
    if fmt == "parquet":
        pyarrow = _import("pyarrow", "parquet")
        with _output(path, binary=True) as stream:
            return _write_parquet(pyarrow, rows, stream, layout, columns)
    with _output(path) as stream:
        if layout == "long":
            groups = experiment_outcomes(rows, columns)
            return _write_long_jsonl(groups, stream) if fmt == "jsonl" \
                else _write_long_csv(groups, long_names(columns), stream)
        wide = (row.as_dict() for row in rows)
        return _write_jsonl(wide, COLUMNS, stream) if fmt == "jsonl" \
            else _write_csv(wide, COLUMNS, stream)


def write_spend(records: list[dict], fmt: str, path: str | Path) -> int:
    """Write the spend layout's rows (a few, one per backend: built in memory)."""
    if fmt == "parquet":
        pyarrow = _import("pyarrow", "parquet")
        import pyarrow.parquet as pq

        text_cells = [{k: _cell(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
                      for r in records]
        types = {name: pyarrow.string() for name in SPEND_COLUMNS}
        types.update({name: pyarrow.int64() for name in SPEND_COLUMNS
                      if name.endswith(("_sent", "_jobs", "_tasks", "_shots")) or name == "calibrations"})
        types.update(estimated_cost=pyarrow.float64(), reported_cost=pyarrow.float64(),
                     reported_seconds=pyarrow.float64())
        schema = pyarrow.schema([(name, types[name]) for name in SPEND_COLUMNS])
        with _output(path, binary=True) as stream:
            pq.write_table(pyarrow.Table.from_pylist(text_cells, schema=schema), stream)
        return len(records)
    with _output(path) as stream:
        if fmt == "jsonl":
            stream.writelines(json.dumps({name: r.get(name) for name in SPEND_COLUMNS},
                                         separators=(",", ":"), ensure_ascii=False) + "\n"
                              for r in records)
        else:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(SPEND_COLUMNS)
            writer.writerows([_cell(r.get(name)) for name in SPEND_COLUMNS] for r in records)
        return len(records)


# ---------------------------------------------------------------- records

def long_names(columns: list[ParamColumn]) -> tuple[str, ...]:
    return (*LONG_HEAD, *(c.column for c in columns), *LONG_TAIL)


def wide_names(columns: list[ParamColumn]) -> tuple[str, ...]:
    """The wide columns with `params` spread into one column per parameter (Parquet, pandas)."""
    at = COLUMNS.index("params")
    return (*COLUMNS[:at], *(c.column for c in columns), *COLUMNS[at + 1:])


def experiment_outcomes(rows: Iterable[Row], columns: list[ParamColumn]) -> Iterator[tuple[dict, list, float]]:
    """Per experiment that has counts (a completed one: failed and pending experiments have
    none and give no long row): the columns before the outcome (key ... shots), its
    (outcome, count, probability) in outcome string order, with probability = count / the
    experiment's total count, and its completed_at."""
    for row in rows:
        fields = row.as_dict()
        counts = fields["counts"]
        if not counts:
            continue
        total = sum(counts.values())
        head = {name: fields[name] for name in LONG_HEAD}
        params = fields["params"]
        head.update({c.column: _param_value(params.get(c.param), c.kind) for c in columns})
        head["shots"] = fields["shots"]
        outcomes = [(outcome, counts[outcome], counts[outcome] / total) for outcome in sorted(counts)]
        yield head, outcomes, fields["completed_at"]


def long_records(rows: Iterable[Row], columns: list[ParamColumn]) -> Iterator[dict]:
    """One record per outcome of each completed experiment (see experiment_outcomes)."""
    for head, outcomes, completed_at in experiment_outcomes(rows, columns):
        for outcome, count, probability in outcomes:
            yield {**head, "outcome": outcome, "count": count, "probability": probability,
                   "completed_at": completed_at}


def wide_records(rows: Iterable[Row], columns: list[ParamColumn]) -> Iterator[dict]:
    for row in rows:
        fields = row.as_dict()
        params = fields.pop("params")
        fields.update({c.column: _param_value(params.get(c.param), c.kind) for c in columns})
        yield fields


_CONVERT = {"int": int, "float": float, "str": str}


def _param_value(value, kind: str):
    """One kind per column: a sweep over [0, 1.5] binds the integer 0 and the float 1.5,
    and both are floats in the export."""
    return None if value is None else _CONVERT[kind](value)


def iso_utc(seconds: float | None) -> str | None:
    """A stored time (seconds since the epoch) as ISO 8601 in UTC, to the microsecond."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- text formats

def _write_jsonl(records: Iterable[dict], names: tuple[str, ...], stream) -> int:
    count = 0
    for fields in records:
        line = {name: fields.get(name) for name in names}
        line["completed_at"] = iso_utc(line["completed_at"])
        stream.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False))
        stream.write("\n")
        count += 1
    return count


def _write_csv(records: Iterable[dict], names: tuple[str, ...], stream) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(names)
    count = 0
    for fields in records:
        fields["completed_at"] = iso_utc(fields.get("completed_at"))
        writer.writerow([_cell(fields.get(name)) for name in names])
        count += 1
    return count


# A long export has a row per outcome, several per experiment: what the rows of one
# experiment share is encoded once, and only the outcome's own values per row.

def _write_long_jsonl(groups: Iterable[tuple[dict, list, float]], stream) -> int:
    written = 0
    for head, outcomes, completed_at in groups:
        opening = json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1]
        closing = f',"completed_at":{json.dumps(iso_utc(completed_at))}}}\n'
        stream.writelines(f'{opening},"outcome":{json.dumps(outcome, ensure_ascii=False)},'
                          f'"count":{count},"probability":{probability!r}{closing}'
                          for outcome, count, probability in outcomes)
        written += len(outcomes)
    return written


def _write_long_csv(groups: Iterable[tuple[dict, list, float]], names: tuple[str, ...], stream) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(names)
    written = 0
    for head, outcomes, completed_at in groups:
        cells = [_cell(value) for value in head.values()]
        stamp = iso_utc(completed_at)
        writer.writerows([*cells, outcome, count, probability, stamp]
                         for outcome, count, probability in outcomes)
        written += len(outcomes)
    return written


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if value is None:
        return ""
    return value


# ---------------------------------------------------------------- Parquet

def _write_parquet(pa, rows: Iterable[Row], stream, layout: str, columns: list[ParamColumn]) -> int:
    import pyarrow.parquet as pq

    schema = parquet_schema(pa, layout, columns)
    records = long_records(rows, columns) if layout == "long" else wide_records(rows, columns)
    count = 0
    writer = pq.ParquetWriter(stream, schema)
    try:
        for batch in batches(records, schema.names, BATCH_ROWS[layout]):
            writer.write_batch(pa.RecordBatch.from_pydict(_for_arrow(batch), schema=schema))
            count += len(batch["key"])
    finally:
        writer.close()  # an empty export is still a valid file, with its columns
    return count


def parquet_schema(pa, layout: str, columns: list[ParamColumn]):
    kinds = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    types = {name: pa.string() for name in (*COLUMNS, *LONG_TAIL)}
    types.update(shots=pa.int64(), count=pa.int64(), attempts=pa.int64(),
                 probability=pa.float64(), git_dirty=pa.bool_(),
                 completed_at=pa.timestamp("us", tz="UTC"),
                 counts=pa.map_(pa.string(), pa.int64()), remote_ids=pa.list_(pa.string()),
                 metadata=pa.string())  # free-form provider metadata: JSON text
    types.update({c.column: kinds[c.kind] for c in columns})
    names = long_names(columns) if layout == "long" else wide_names(columns)
    return pa.schema([(name, types[name]) for name in names])


def _microseconds(stamps: list) -> list:
    """Stored times (seconds since the epoch) as whole microseconds, as iso_utc rounds them."""
    return [None if t is None else round(t * 1_000_000) for t in stamps]


def _for_arrow(batch: dict[str, list]) -> dict[str, list]:
    batch["completed_at"] = _microseconds(batch["completed_at"])
    if "metadata" in batch:
        batch["metadata"] = [None if m is None else json.dumps(m, separators=(",", ":"),
                                                               ensure_ascii=False)
                             for m in batch["metadata"]]
    return batch


def batches(records: Iterable[dict], names: Iterable[str], size: int) -> Iterator[dict[str, list]]:
    """Records gathered by column, ``size`` at a time."""
    names = tuple(names)
    batch: dict[str, list] = {name: [] for name in names}
    filled = 0
    for record in records:
        for name in names:
            batch[name].append(record.get(name))
        filled += 1
        if filled == size:
            yield batch
            batch, filled = {name: [] for name in names}, 0
    if filled:
        yield batch


# ---------------------------------------------------------------- pandas

def frame(rows: Iterable[Row], layout: str, params: Mapping[str, str]):
    """The rows as a pandas DataFrame: counts and shots int64, probability float64,
    completed_at datetime64 in UTC, one column per parameter (float64, or nullable Int64
    for integer parameters; empty where a circuit has no such parameter)."""
    pd = _import("pandas", "pandas")
    columns = param_columns(params)
    check_layout(layout)
    if layout == "long":
        records, names = long_records(rows, columns), long_names(columns)
    else:
        records, names = wide_records(rows, columns), wide_names(columns)
    dtypes = _pandas_dtypes(layout, columns)
    chunks = [_typed(pd, batch, dtypes) for batch in batches(records, names, BATCH_ROWS[layout])]
    if not chunks:
        return _typed(pd, {name: [] for name in names}, dtypes)
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def _pandas_dtypes(layout: str, columns: list[ParamColumn]) -> dict[str, str]:
    kinds = {"int": "Int64", "float": "float64", "str": "str"}
    dtypes = {c.column: kinds[c.kind] for c in columns}
    if layout == "long":
        dtypes.update(shots="int64", count="int64", probability="float64")
    else:
        dtypes.update(shots="int64", attempts="int64", git_dirty="boolean")
    return dtypes


def _typed(pd, batch: dict[str, list], dtypes: dict[str, str]):
    table = pd.DataFrame(batch).astype(dtypes)
    # Stored as seconds since the epoch; whole microseconds, as in the text formats, and
    # NaT where an experiment has no result yet.
    stamps = pd.Series(_microseconds(batch["completed_at"]), dtype="Int64")
    table["completed_at"] = pd.to_datetime(stamps, unit="us", utc=True).astype("datetime64[us, UTC]")
    return table


# ---------------------------------------------------------------- output

def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise QrunError(f"{module} is not installed; install it with: pip install 'qrun[{extra}]'") from None


@contextmanager
def _output(path: str | Path, binary: bool = False):
    if str(path) == "-":
        if binary and sys.stdout.isatty():
            raise QrunError("Parquet is binary: write it to a file (-o FILE) or a pipe, not a terminal")
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile("wb" if binary else "w",
                                             encoding=None if binary else "utf-8",
                                             newline=None if binary else "", delete=False,
                                             dir=target.parent, prefix=f".{target.name}.",
                                             suffix=".tmp")
    except OSError as exc:
        raise QrunError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except OSError as exc:
        _remove_quietly(handle.name)
        raise QrunError(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:
        _remove_quietly(handle.name)
        raise


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass
