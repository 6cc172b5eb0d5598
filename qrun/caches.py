"""Cache files: what qrun learned by importing an SDK, kept so the next command need not.

Validation would otherwise import provider SDKs (seconds each) to learn things that change
only with the installed software: a provider's devices and limits
(qrun/providers/device_cache.py), what a circuit file declares (qrun/sources/facts_cache.py).
Each cache file records the key it was built under (the installed distributions' versions,
a digest of qrun's own code that computed it); a file under another key, or unreadable, or
damaged, is simply built again. A cache is never needed: a folder that cannot be written
leaves every command working, only slower.

Files live in ``$XDG_CACHE_HOME/qrun`` (else ``~/.cache/qrun``), written atomically (a
temporary file in the same folder, renamed over the old one), so a reader sees the old file
or the new one, never half of one, whatever runs at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

FORMAT = 1  # of the files' envelope; a file of another format is rebuilt
DISABLE_VARIABLE = "QRUN_NO_CACHE"  # set (to anything but "" or 0): no cache is read or written


def enabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "") in ("", "0")


def folder() -> Path | None:
    """$XDG_CACHE_HOME/qrun, else ~/.cache/qrun (an XDG_CACHE_HOME that is not absolute is
    ignored, as the XDG specification says); None when there is no home folder either."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return Path(base) / "qrun"
    try:
        return Path.home() / ".cache" / "qrun"
    except (RuntimeError, KeyError):  # no HOME and no password entry: no cache
        return None


def versions(distributions) -> dict[str, str | None]:
    """Installed version of each distribution (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def code_digest(files) -> str:
    """sha256 over the contents of ``files``: qrun installed in development mode changes its
    code without changing its version, and a cache built by other code must not be read."""
    digest = hashlib.sha256()
    for file in files:
        try:
            digest.update(Path(file).read_bytes())
        except OSError:
            digest.update(b"\0missing\0")
        digest.update(b"\0")
    return digest.hexdigest()


def read(name: str, key: dict) -> dict | None:
    """The payload of cache file ``name`` if it was built under ``key``, else None."""
    where = folder()
    if not enabled() or where is None:
        return None
    try:
        document = json.loads((where / name).read_bytes())
    except (OSError, ValueError):  # missing, unreadable, not JSON (UnicodeDecodeError too)
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT \
            or document.get("key") != key or not isinstance(document.get("payload"), dict):
        return None
    return document["payload"]


def write(name: str, key: dict, payload: dict) -> bool:
    """Write cache file ``name`` atomically; False (and nothing changed) when it cannot be."""
    where = folder()
    if not enabled() or where is None:
        return False
    target = where / name
    text = json.dumps({"format": FORMAT, "key": key, "payload": payload}, separators=(",", ":"))
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, target)
        return True
    except OSError:  # a read-only or full disk: the cache is a convenience, never needed
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        return False
