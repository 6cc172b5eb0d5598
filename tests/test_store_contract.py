"""The store's contract: the job state machine's transition table, SQLite errors surfacing
as StateError, and named rows from reports and the read-only API."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrun import store as qstore
from qrun.errors import StateError
from qrun.store import JOB_STATES, TRANSITIONS, IllegalTransition, Store
from qrun.store.jobs import check_transition, is_legal, move_job

PAIRS = [(a, b) for a in JOB_STATES for b in JOB_STATES]
LEGAL = [(a, b) for a, b in PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in PAIRS if b not in TRANSITIONS[a]]


def _store_with_job(tmp_path, state: str = "pending") -> tuple[Store, int]:
    store = Store.open(tmp_path / "s.sqlite")
    with store.transaction() as conn:
        cur = conn.execute("INSERT INTO jobs(key, backend, provider, backend_config, state, attempts,"
                           " not_before, created_at, updated_at) VALUES ('k','b','p','{}',?,0,0,0,0)",
                           (state,))
    return store, int(cur.lastrowid)


def test_table_covers_every_state_and_only_known_states():
    assert set(TRANSITIONS) == set(JOB_STATES)
    assert all(set(targets) <= set(JOB_STATES) for targets in TRANSITIONS.values())
    assert TRANSITIONS["done"] == {}  # done is final: a result is never taken back


@pytest.mark.parametrize(("current", "new"), LEGAL)
def test_every_legal_transition_is_allowed(tmp_path, current, new):
    store, job = _store_with_job(tmp_path, current)
    with store:
        with store._conn.transaction():
            assert move_job(store._conn, None, job, new, "test", error="why") == current
        assert store.conn.execute("SELECT state, error FROM jobs WHERE id=?", (job,)).fetchone() \
            == (new, "why")
        assert store.conn.execute("SELECT state FROM events WHERE entity='job'").fetchall() == [(new,)]


@pytest.mark.parametrize(("current", "new"), ILLEGAL)
def test_every_illegal_transition_raises_and_changes_nothing(tmp_path, current, new):
    store, job = _store_with_job(tmp_path, current)
    with store:
        with pytest.raises(IllegalTransition, match=f"from {current} to {new}"):
            with store._conn.transaction():
                move_job(store._conn, None, job, new, "test")
        assert store.conn.execute("SELECT state FROM jobs WHERE id=?", (job,)).fetchone()[0] == current
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_move_job_refuses_unknown_columns(tmp_path):
    store, job = _store_with_job(tmp_path)
    with store, pytest.raises(ValueError):
        move_job(store._conn, None, job, "running", state="done")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(JOB_STATES), max_size=30))
def test_random_sequences_keep_the_invariants(moves):
    """Applying any sequence through the table: an illegal move raises and leaves the state
    as it was; a legal one lands; done is never left."""
    state = "pending"
    for new in moves:
        if is_legal(state, new):
            check_transition(1, state, new)
            assert state != "done"
            state = new
        else:
            with pytest.raises(IllegalTransition):
                check_transition(1, state, new)
        assert state in JOB_STATES


def test_a_locked_database_is_a_state_error(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.open(path).close()
    with closing(sqlite3.connect(path, timeout=0)) as other:
        other.execute("BEGIN EXCLUSIVE")
        with Store.open(path) as store:
            store.conn.execute("PRAGMA busy_timeout = 50")
            with pytest.raises(StateError, match="cannot write"):
                store.set_meta("k", "v")
        other.execute("ROLLBACK")


def test_a_read_only_file_is_a_state_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = tmp_path / "s.sqlite"
    Store.open(path).close()
    path.chmod(0o444)
    with pytest.raises(StateError, match="not writable"):
        with Store.open(path) as store:
            store.set_meta("k", "v")


def test_a_read_only_open_never_writes(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.open(path).close()
    with Store.open(path, readonly=True) as store, pytest.raises(StateError, match="not writable"):
        store.set_meta("k", "v")


def test_damage_met_in_a_query_is_a_state_error(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        store.conn.execute("DROP TABLE meta")  # a query on a missing table: an sqlite3 error
        with pytest.raises(StateError, match="a read failed"):
            store.meta("campaign")


def test_reports_and_reader_return_named_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    store, job = _store_with_job(tmp_path)
    with store:
        apply_id = store.begin_apply("apply", "m.yaml", "abc", None, None, "0")
        store.conn.execute("INSERT INTO experiments(key, circuit, backend, provider, program, params,"
                           " shots, state, error, plan_apply, created_at, updated_at) VALUES "
                           "('e','c','b','p','d','{\"t\": 1}',10,'failed','boom',?,0,0)", (apply_id,))
        (failure,) = store.failures(apply_id)
        assert (failure.circuit, failure.params, failure.error) == ("c", {"t": 1}, "boom")
        assert failure["backend"] == "b" and failure.get("missing") is None  # mapping-compatible
        (cause,) = store.failure_causes(apply_id)
        assert (cause.backend, cause.error, cause.experiments) == ("b", "boom", 1)
        (summary,) = store.backend_summary(apply_id)
        assert summary.as_dict() == {"backend": "b", "provider": "p", "circuit": "c",
                                     "pending": 0, "done": 0, "failed": 1}
        (row,) = store.export_rows(apply_id)
        assert row.key == "e" and row.state == "failed" and row.remote_ids == []
    with qstore.read(path) as state:
        assert [e.key for e in state.experiments()] == ["e"]
        assert [j.state for j in state.jobs()] == ["pending"] and state.jobs(state="done") == []
        assert state.results() == [] and state.attempts() == []
        assert [e.entity for e in state.events()] == ["apply"]
        assert [a.command for a in state.applies()] == ["apply"]


def test_reading_a_missing_file_is_a_state_error(tmp_path):
    with pytest.raises(StateError, match="no state database"):
        qstore.read(tmp_path / "none.sqlite")
