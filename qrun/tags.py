"""Idempotency tags: the name each submission carries at its provider, for ever.

``qrun-<job key, 16 hex>-<creation second, 8 hex><random, 8 hex>``. Not only the attempt's
number, which starts again after `qrun retry`, and not only the job's content key, which
another campaign with the same job shares: a lookup by tag must never find a job some other
attempt submitted. The creation time lets a lookup ask the provider only for jobs created
since then (Braket's search pages through every task of a device otherwise). Tags written
before the time was part of them (``qrun-<16 hex>-<12 hex>``) carry no time.
"""

from __future__ import annotations

import re
import time
import uuid

_TIMED = re.compile(r"qrun-[0-9a-f]{16}-([0-9a-f]{8})[0-9a-f]{8}")


def new_tag(job_key: str, created: float | None = None) -> str:
    second = int(time.time() if created is None else created)
    return f"qrun-{job_key[:16]}-{second:08x}{uuid.uuid4().hex[:8]}"


def created_at(tag: str) -> float | None:
    """When the attempt that carries ``tag`` was recorded (before it was sent), if it says."""
    found = _TIMED.fullmatch(tag)
    return float(int(found.group(1), 16)) if found else None
