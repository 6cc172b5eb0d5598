"""The connection to a campaign's state database: opening, pragmas, transactions, errors.

The only module of qrun that calls sqlite3. Every SQLite error is turned into a
:class:`~qrun.errors.StateError` here, with what it likely means and what to do, so nothing
outside the store knows SQLite. Rules (see DESIGN.md, crash safety):
- WAL journal, ``synchronous=FULL``: a committed transaction survives a power cut.
- Every read-then-write runs in ``BEGIN IMMEDIATE``, so two processes never interleave.
- A read-only open never changes the file, and works in a read-only folder (an archived
  campaign) when the database was closed cleanly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import StateError


def _import_sqlite_utils():
    """sqlite_utils, imported without pandas. It imports pandas when it can, only to store
    pandas.Timestamp values as TEXT (qrun stores none): 0.3-0.6 s of every command that
    reads a state database, `qrun validate` and `qrun plan` included (issue 12). The import
    lock is held meanwhile, so no other thread sees pandas hidden."""
    import _imp

    if "pandas" in sys.modules:
        import sqlite_utils
        return sqlite_utils
    _imp.acquire_lock()
    try:
        sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` fails
        try:
            import sqlite_utils
        finally:
            del sys.modules["pandas"]
    finally:
        _imp.release_lock()
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

APPLICATION_ID = 0x7172756E  # "qrun": marks a file as ours, tells it from foreign SQLite files

DAMAGED_ADVICE = ("The file is damaged and qrun will not write to it. Restore it from a backup, "
                  "or move it aside and apply again to start afresh (finished experiments then "
                  "run again)")

Params = Sequence[Any]


def now() -> float:
    return time.time()


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Connection:
    """One open SQLite connection, with qrun's transactions and error messages.

    Queries go through :meth:`execute`, :meth:`one`, :meth:`all` and :meth:`stream`, which
    raise :class:`StateError` for any SQLite error (even one met while a streamed cursor is
    read, as damage deep in a file is).
    """

    def __init__(self, raw: sqlite3.Connection, path: Path):
        self.raw = raw
        self.path = path
        self.db = sqlite_utils.Database(raw)  # for the migrations' table definitions
        self._depth = 0  # nesting of transaction()

    # -- opening

    @classmethod
    def open(cls, path: Path, create: bool = True, readonly: bool = False) -> Connection:
        """Open a database file (creating its folder when ``create``); not yet checked."""
        path = Path(path)
        if not path.exists() and (readonly or not create):
            raise StateError(f"no state database at {path}")
        if readonly:
            return cls._open_readonly(path)
        if create:
            _make_folder(path.parent)
        try:
            raw = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(explain(path, exc, "cannot open")) from None
        return cls(raw, path)

    @classmethod
    def _open_readonly(cls, path: Path) -> Connection:
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            raw = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30,
                                  check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(explain(path, exc, "cannot open")) from None
        return cls(raw, path)

    def reopen_immutable(self) -> bool:
        """Reopen as immutable, when a read-only open cannot read (SQLite reads a WAL database
        through a shared-memory file it must create; in a read-only folder it cannot). A
        database closed cleanly has no log left to read, so it can then be read as immutable;
        one with a log cannot be read safely. Returns whether it reopened."""
        wal = Path(f"{self.path}-wal")
        if os.access(self.path.parent, os.W_OK) or (wal.exists() and wal.stat().st_size):
            return False
        self.raw.close()
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
        try:
            self.raw = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(explain(self.path, exc, "cannot open")) from None
        self.db = sqlite_utils.Database(self.raw)
        return True

    def prepare(self, writable: bool, then: Callable[[Connection], object]) -> None:
        """Refuse a file cut short or a foreign SQLite file; on a writable one, switch to WAL
        and ``synchronous=FULL``; then ``then`` (the schema check or migration). Raises
        StateError with the reason and the advice; the connection is then closed."""
        try:
            self._check_is_ours(writable)
            then(self)
        except StateError:
            self.raw.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.raw.close()
            if _is_access_problem(exc) or _is_disk_problem(exc) or _is_damage(exc):
                raise StateError(explain(self.path, exc, "cannot open")) from None
            raise StateError(f"{self.path} is not a usable qrun state database ({exc}); "
                             "move it aside to start afresh") from None

    def _check_is_ours(self, writable: bool) -> None:
        if _cut_short(self.path):
            raise StateError(f"{self.path} is shorter than its own header says: the file was cut "
                             f"short (a copy or a disk that failed). {DAMAGED_ADVICE}")
        self.raw.execute("PRAGMA busy_timeout = 30000")
        app_id = self.raw.execute("PRAGMA application_id").fetchone()[0]
        has_tables = self.raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if has_tables and app_id != APPLICATION_ID:
            raise StateError(f"{self.path} is an SQLite file, but not a qrun state database; "
                             "refusing to touch it")
        if not writable:
            return
        mode = self.raw.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StateError(f"{self.path}: cannot switch to WAL journaling (got {mode})")
        self.raw.execute("PRAGMA synchronous = FULL")
        self.raw.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self.raw.close()

    # -- queries

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            what = "a write failed and was rolled back" if self._depth else "a read failed"
            raise StateError(explain(self.path, exc, what)) from None

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        with self._translated():
            return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterator[Params] | list[Params]) -> sqlite3.Cursor:
        with self._translated():
            return self.raw.executemany(sql, rows)

    def one(self, sql: str, params: Params = ()) -> Any:
        """The first row, or None."""
        with self._translated():
            return self.raw.execute(sql, params).fetchone()

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (a count, a max), or None without rows."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def mapping(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        """The first row as a mapping of its column names, or None."""
        with self._translated():
            cursor = self.raw.execute(sql, params)
            values = cursor.fetchone()
            return dict(zip([d[0] for d in cursor.description], values)) if values else None

    def all(self, sql: str, params: Params = ()) -> list[Any]:
        with self._translated():
            return self.raw.execute(sql, params).fetchall()

    def stream(self, sql: str, params: Params = ()) -> Iterator[Any]:
        """Rows one at a time (an export of any size in constant memory)."""
        with self._translated():
            cursor = self.raw.execute(sql, params)
        while True:
            # Only the fetch is guarded, never the yield: a generator left unfinished is
            # closed later, maybe after its connection, and must not raise then.
            with self._translated():
                rows = cursor.fetchmany(500)
            if not rows:
                return
            yield from rows

    # -- transactions

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back whole on any error.

        Transactions nest: an inner one joins the outer, which commits everything at once.
        The engine groups the state changes of several jobs that way, since every commit
        waits for the disk (synchronous=FULL) and one per change would pace the whole run.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.raw
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield self.raw
        except BaseException as exc:
            self._depth = 0
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise StateError(explain(self.path, exc, "a write failed and was rolled back")) \
                    from None
            raise
        else:
            self._depth = 0
            self._commit()

    def _begin(self) -> None:
        try:
            if self.raw.in_transaction:
                # A Ctrl-C landed between BEGIN and the guard (or inside it, before its
                # ROLLBACK ran): that transaction never committed, so its changes are dropped.
                self.raw.execute("ROLLBACK")
            self.raw.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(explain(self.path, exc, "cannot write")) from None

    def _rollback(self) -> None:
        try:
            self.raw.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StateError(explain(self.path, exc, "a rollback failed")) from None

    def _commit(self) -> None:
        try:
            self.raw.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.raw.in_transaction:
                self._rollback()
            raise StateError(explain(self.path, exc, "a commit failed and was rolled back")) \
                from None


# ---------------------------------------------------------------- what an error means

def _primary_code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # SQLITE_IOERR_WRITE -> SQLITE_IOERR


def _is_disk_problem(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) \
        or "disk is full" in str(exc) or "disk I/O error" in str(exc)


def _is_damage(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc)


def _is_access_problem(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) \
        or "readonly" in str(exc) or "unable to open" in str(exc)


def explain(path: Path, exc: sqlite3.Error, what: str) -> str:
    """The error, what it likely means, and what to do; committed work is never lost."""
    message = f"{path}: {what} ({exc})"
    if _is_damage(exc):
        return f"{message}. {DAMAGED_ADVICE}"
    if _is_disk_problem(exc):
        return (f"{message}: the disk is full or failing. Everything committed before is kept; "
                "free some space and run the command again to carry on")
    if _is_access_problem(exc):
        return (f"{message}: its folder {path.parent} or the file is not writable. Make it "
                "writable, or choose another folder with --state-dir or QRUN_STATE_DIR "
                "(status and export can read a read-only campaign)")
    return message


def _cut_short(path: Path) -> bool:
    """Whether the database file is shorter than the size its header records.

    SQLite itself would only notice on reading a missing page, deep inside some later query.
    The header's size is trusted only when SQLite marked it valid (change counter equal to
    version-valid-for) and no write-ahead log holds newer pages.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(100)
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            return False
        size = path.stat().st_size
    except OSError:
        return False  # unreadable: opening it reports why
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0") or header[24:28] != header[92:96]:
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    return size < page_size * int.from_bytes(header[28:32], "big")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create state folder {folder}: {exc.strerror}") from None
