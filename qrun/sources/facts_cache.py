"""What each circuit source declares, kept across commands: parse a file once per version.

Validation parses every circuit with its SDK's reference parser (sources/gate.py, pulser.py,
perceval.py) to learn its :class:`~qrun.sources.Facts`. The facts are a function of the
program's digest (sha256 of its format, QPY index and exact bytes; an include other than
the standard library is refused, and the standard one is built into the parsers) and of
whether an index was given at all, of the parsers' versions and of qrun's own checks. So they are kept in ``sources.json`` of
qrun's cache folder (qrun/caches.py), keyed by the versions of every parsing distribution
and a digest of qrun/sources' code: an edited circuit has another digest, an upgraded SDK
or an edited qrun another key, and is parsed again. Only programs that parsed are kept: a
refused one is parsed again each time, and says why in its own words, with its own path.

A warm cache spares validation Qiskit's, Pulser's and Perceval's imports and every parse.
New entries are written once, at the end of a manifest's validation (:func:`save`),
merged with what another process may have written meanwhile.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from qrun import caches

from . import Facts

FILE_NAME = "sources.json"
# Past this the least recently used are dropped: the file is read whole by every
# validation (50,000 entries: about 5 MB, 50 ms), and a 2,000-circuit campaign needs 2,000.
MAX_ENTRIES = 50_000
# Every distribution whose parser a source format goes through, and qrun itself.
PARSERS = ("qiskit", "qiskit-qasm3-import", "openqasm3", "antlr4-python3-runtime",
           "pulser-core", "perceval-quandela", "amazon-braket-sdk", "qrun")

_FIELDS = tuple(f.name for f in fields(Facts))
# "key", "entries" (digest -> encoded facts), "new" (digests added), "used" (digests looked
# up or added, in that order: a dict used as an ordered set)
_state: dict = {}


def lookup(digest: str) -> Facts | None:
    """The facts remembered under ``digest`` (make_program's: the digest, and the index
    when one was given)."""
    if not caches.enabled():  # QRUN_NO_CACHE: every program parsed, as without a cache
        return None
    entries = _entries()
    if digest not in entries:
        return None
    facts = decode(entries[digest])
    if facts is None:  # a damaged entry: parsed again, and replaced by remember()
        del entries[digest]
    else:
        _state["used"][digest] = None
    return facts


def remember(digest: str, facts: Facts) -> None:
    if not caches.enabled():
        return
    entries = _entries()
    if digest not in entries:
        entries[digest] = encode(facts)
        _state["new"].add(digest)
        _state["used"][digest] = None


def save() -> None:
    """Write the facts learned since the last save (nothing when none was)."""
    if not _state.get("new"):
        return
    key = _state["key"]
    on_disk = caches.read(FILE_NAME, key) or {}  # another process may have added some
    found = on_disk.get("entries")
    merged: dict = found if isinstance(found, dict) else {}
    for digest in _state["used"]:  # what this process used moves to the recent end
        if digest in _state["entries"]:
            merged.pop(digest, None)
            merged[digest] = _state["entries"][digest]
    if len(merged) > MAX_ENTRIES:
        merged = dict(list(merged.items())[-MAX_ENTRIES:])
    caches.write(FILE_NAME, key, {"entries": merged})
    _state["new"], _state["used"] = set(), {}


def forget() -> None:
    """Drop what this process read (tests: the next lookup reads the file again)."""
    _state.clear()


def cache_key() -> dict:
    code = sorted(Path(__file__).resolve().parent.glob("*.py"))
    return {"versions": caches.versions(PARSERS), "code": caches.code_digest(code)}


def _entries() -> dict:
    if "entries" not in _state:
        key = cache_key()
        payload = caches.read(FILE_NAME, key) or {}
        entries = payload.get("entries")
        _state.update(key=key, entries=entries if isinstance(entries, dict) else {}, new=set(),
                      used={})
    return _state["entries"]


def encode(facts: Facts) -> list:
    return [list(value) if isinstance(value, tuple) else value
            for value in (getattr(facts, name) for name in _FIELDS)]


def decode(encoded) -> Facts | None:
    """The facts an entry holds; None for an entry of another shape (a damaged file)."""
    if not isinstance(encoded, list) or len(encoded) != len(_FIELDS):
        return None
    values = dict(zip(_FIELDS, encoded))
    for name in ("parameters", "required"):
        if not _strings(values[name]):
            return None
        values[name] = tuple(values[name])
    if values["addressed_bases"] is not None:
        if not _strings(values["addressed_bases"]):
            return None
        values["addressed_bases"] = tuple(values["addressed_bases"])
    if not _count(values["width"]) or not all(
            values[name] is None or _count(values[name]) for name in ("clbits", "photons")):
        return None
    if values["device"] is not None and not isinstance(values["device"], dict):
        return None
    if values["measured"] is not None and not isinstance(values["measured"], bool):
        return None
    return Facts(**values)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
