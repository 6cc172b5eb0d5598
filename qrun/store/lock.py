"""The campaign lock: one writer per campaign, with a holder a user can see and break.

The lock is a row of the ``locks`` table, taken inside a write transaction, naming its
holder (host, pid and the pid's start time, so a reused pid is not taken for the holder).
A lock left by a dead process on this host is taken over; one held from another host
cannot be checked and must be broken with ``qrun unlock``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

from ..errors import LockedError
from .connection import Connection, now
from .events import record_event
from .rows import NamedRow


@dataclass(frozen=True)
class LockHolder(NamedRow):
    host: str
    pid: int
    since: float
    command: str | None
    alive: bool


def acquire(conn: Connection, name: str, command: str) -> str:
    """Take the campaign lock, or raise :class:`LockedError` naming its live holder.
    Returns the token that releases it."""
    token = uuid.uuid4().hex
    me = (socket.gethostname(), os.getpid(), _process_start(os.getpid()))
    with conn.transaction():
        row = conn.one("SELECT host, pid, pid_started, since, command FROM locks WHERE name=?",
                       (name,))
        if row:
            host, pid, started, since, holder_command = row
            if holder_alive(host, pid, started):
                raise LockedError(_lock_message(name, host, pid, since, holder_command))
            record_event(conn, None, "lock", name, "taken-over",
                         {"host": host, "pid": pid, "since": since, "reason": "holder is gone"})
        conn.execute(
            "INSERT INTO locks(name, host, pid, pid_started, since, token, command) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET host=excluded.host, "
            "pid=excluded.pid, pid_started=excluded.pid_started, since=excluded.since, "
            "token=excluded.token, command=excluded.command",
            (name, *me, now(), token, command))
    return token


def release(conn: Connection, name: str, token: str) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM locks WHERE name=? AND token=?", (name, token))


def holder(conn: Connection, name: str) -> LockHolder | None:
    row = conn.one("SELECT host, pid, pid_started, since, command FROM locks WHERE name=?", (name,))
    if not row:
        return None
    host, pid, started, since, command = row
    return LockHolder(host=host, pid=pid, since=since, command=command,
                      alive=holder_alive(host, pid, started))


def break_lock(conn: Connection, name: str, force: bool = False) -> LockHolder | None:
    """Remove the lock if its holder is gone (or ``force``); return who held it."""
    with conn.transaction():
        held = holder(conn, name)
        if held is None:
            return None
        if held.alive and not force:
            raise LockedError(lock_message(name, held))
        conn.execute("DELETE FROM locks WHERE name=?", (name,))
        record_event(conn, None, "lock", name, "broken", {**held.as_dict(), "forced": force})
        return held


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_alive(host: str, pid: int, started: float | None) -> bool:
    """Whether a lock holder still runs. One on another host is assumed alive."""
    if host != socket.gethostname():
        return True
    now_started = _process_start(pid)
    if now_started is None:
        return False
    # A reused pid belongs to a process started later than the holder.
    return started is None or abs(now_started - started) < 1.0


def lock_message(name: str, held: LockHolder | dict) -> str:
    return _lock_message(name, held["host"], held["pid"], held["since"], held["command"])


def _lock_message(name, host, pid, since, command) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return (f"campaign {name} is locked by {command or 'qrun'} (pid {pid} on host {host}, since "
            f"{when}); wait for it to finish, or run `qrun unlock` if that process is gone")
