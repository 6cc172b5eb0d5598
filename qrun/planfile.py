"""Saved plans: `qrun plan --out FILE` writes one, `qrun apply FILE` runs exactly it.

A plan file is JSON: what it is (``kind``, ``format_version``), the campaign, the manifest
it was made from (its path and sha256), the state it was made against (the database's path
and store.state_digest), and the experiments: a digest of every key, and the keys apply
would run with their digest. Apply refuses it, saying why, when the manifest, a circuit
source or the stored state changed since (Terraform's stale-plan rule): what ran would then
not be what was reviewed. A file is known as a plan by its content, not its name.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import PlanFileError, QrunError
from .store import keys_digest

KIND = "qrun/plan"
FORMAT_VERSION = 1
_SNIFF_BYTES = 4096
_KIND_PATTERN = re.compile(rb'^\s*\{\s*"kind"\s*:\s*"qrun/plan"')


@dataclass(frozen=True)
class SavedPlan:
    path: Path  # of the plan file
    campaign: str
    manifest_path: Path
    manifest_relative: str | None  # to the plan file's folder, for a checkout moved with it
    manifest_sha256: str
    state_path: Path
    state_sha256: str
    keys_sha256: str
    run_keys_sha256: str
    run_keys: list
    totals: dict

    def manifest_file(self) -> Path:
        """The manifest: where it was, else beside the plan file as it was then (the
        digests make sure it is the same manifest either way)."""
        if self.manifest_path.exists() or self.manifest_relative is None:
            return self.manifest_path
        moved = self.path.parent / self.manifest_relative
        return moved if moved.exists() else self.manifest_path


def is_plan_file(path: str | Path) -> bool:
    """Whether ``path`` holds a saved plan (it starts with the plan's ``kind``), whatever
    its name; a manifest (YAML, or JSON of kind Campaign) does not."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False  # the manifest loader reports a missing or unreadable file
    return bool(_KIND_PATTERN.match(head))


def write(report, path: str | Path) -> Path:
    """Save ``report`` (a PlanReport made with keep_run_keys) as a plan file, atomically."""
    path = Path(path)
    manifest = Path(report.manifest_path).resolve()
    try:
        relative: str | None = os.path.relpath(manifest, path.resolve().parent)
    except ValueError:  # another drive (Windows)
        relative = None
    document = {
        "kind": KIND, "format_version": FORMAT_VERSION, "campaign": report.campaign,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "qrun_version": __version__,
        "manifest": {"path": str(manifest), "relative_to_plan": relative,
                     "sha256": report.manifest_sha256},
        "state": {"path": str(Path(report.state_path).resolve()), "sha256": report.state_sha256},
        "totals": report.totals, "to_run": report.to_run,
        "experiments": {"keys_sha256": report.keys_sha256,
                        "run_keys_sha256": report.run_keys_sha256,
                        "run_keys": list(report.run_keys or [])},
    }
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(scratch, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")
        os.replace(scratch, path)
    except OSError as exc:
        scratch.unlink(missing_ok=True)
        raise QrunError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
    return path


def read(path: str | Path) -> SavedPlan:
    """A plan file, checked whole (PlanFileError says what is wrong with it)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path} is a damaged plan file ({exc}); make it again with "
                            "`qrun plan MANIFEST --out FILE`") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise PlanFileError(f"{path} is not a qrun plan file")
    version = document.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise PlanFileError(f"{path} was saved by a newer qrun (plan format {version}, this qrun "
                            f"reads up to {FORMAT_VERSION}); upgrade qrun or plan again")
    try:
        saved = _parsed(path, document)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(f"{path} is a damaged plan file (missing or wrong field: {exc}); "
                            "make it again with `qrun plan MANIFEST --out FILE`") from None
    if keys_digest(saved.run_keys) != saved.run_keys_sha256:
        raise PlanFileError(f"{path} is a damaged plan file: its experiment keys do not match "
                            "their digest; make it again with `qrun plan MANIFEST --out FILE`")
    return saved


def _parsed(path: Path, document: dict) -> SavedPlan:
    if document["format_version"] != FORMAT_VERSION:
        raise ValueError(f"format_version {document['format_version']!r}")
    manifest, state, experiments = document["manifest"], document["state"], document["experiments"]
    run_keys = experiments["run_keys"]
    if not isinstance(run_keys, list) or not all(isinstance(k, str) for k in run_keys):
        raise TypeError("experiments.run_keys")
    relative = manifest.get("relative_to_plan")
    return SavedPlan(
        path=path, campaign=_text(document, "campaign"),
        manifest_path=Path(_text(manifest, "path")),
        manifest_relative=relative if isinstance(relative, str) else None,
        manifest_sha256=_text(manifest, "sha256"), state_path=Path(_text(state, "path")),
        state_sha256=_text(state, "sha256"), keys_sha256=_text(experiments, "keys_sha256"),
        run_keys_sha256=_text(experiments, "run_keys_sha256"), run_keys=run_keys,
        totals=dict(document["totals"]))


def _text(mapping: dict, name: str) -> str:
    value = mapping[name]
    if not isinstance(value, str) or not value:
        raise TypeError(name)
    return value
