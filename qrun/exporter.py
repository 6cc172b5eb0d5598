"""Export stage: stored results, joined with their provenance, streamed to JSON Lines or CSV.

Rows come one at a time from the store and go straight to the file, so exporting a large
campaign needs no more memory than a small one. Files are written beside their target and
renamed into place, so a crash never leaves half an export where a full one was.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from .errors import QrunError

FORMATS = ("jsonl", "csv")

# CSV columns, in order; mappings and lists are written as JSON text inside a cell.
COLUMNS = ("key", "circuit", "backend", "provider", "params", "shots", "state", "counts",
           "attempts", "remote_ids", "manifest_sha256", "git_commit", "git_dirty", "completed_at",
           "error", "metadata")


class Row(Protocol):
    """An export row (the store's reports.ExportRow): its fields by name."""

    def as_dict(self) -> dict[str, Any]: ...


def format_for(path: str | None, requested: str | None) -> str:
    if requested:
        return requested
    suffix = Path(path).suffix.lstrip(".").lower() if path and path != "-" else ""
    if suffix in FORMATS:
        return suffix
    raise QrunError("cannot tell the export format; pass --format jsonl or --format csv")


def write(rows: Iterable[Row], fmt: str, path: str | Path) -> int:
    """Write rows to ``path`` ('-' for standard output); return how many were written."""
    with _output(path) as stream:
        return _write_jsonl(rows, stream) if fmt == "jsonl" else _write_csv(rows, stream)


def _write_jsonl(rows: Iterable[Row], stream) -> int:
    count = 0
    for row in rows:
        fields = row.as_dict()
        stream.write(json.dumps({column: fields.get(column) for column in COLUMNS},
                                separators=(",", ":"), ensure_ascii=False))
        stream.write("\n")
        count += 1
    return count


def _write_csv(rows: Iterable[Row], stream) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        fields = row.as_dict()
        writer.writerow([_cell(fields.get(column)) for column in COLUMNS])
        count += 1
    return count


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if value is None:
        return ""
    return value


@contextmanager
def _output(path: str | Path):
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", delete=False,
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
