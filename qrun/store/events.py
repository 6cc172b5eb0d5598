"""The events table: every state change of a job, every experiment reaching done or failed,
every apply, plan and lock change is appended there, a campaign's history."""

from __future__ import annotations

from typing import Any

from .connection import Connection, now, to_json


def record_event(conn: Connection, apply_id: int | None, entity: str, entity_id: Any, state: str,
                 detail: Any = None) -> None:
    conn.execute(
        "INSERT INTO events(ts, apply_id, entity, entity_id, state, detail) VALUES (?,?,?,?,?,?)",
        (now(), apply_id, entity, str(entity_id), state,
         None if detail is None else (detail if isinstance(detail, str) else to_json(detail))))


def record_events(conn: Connection, apply_id: int | None, entity: str, entity_ids: list,
                  state: str) -> None:
    """``record_event`` for many entities reaching one state at once (a job's experiments)."""
    stamp = now()
    conn.executemany(
        "INSERT INTO events(ts, apply_id, entity, entity_id, state, detail) VALUES (?,?,?,?,?,NULL)",
        [(stamp, apply_id, entity, str(entity_id), state) for entity_id in entity_ids])
