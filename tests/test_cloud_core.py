"""The cloud core (qrun/providers/cloud.py) on its own, without any SDK: credential
references, the creation rule, the call policy's bound, the lazy client."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from qrun.providers.base import NoRoomYet, QuotaSpent, TransientBackendError
from qrun.providers.cloud import POLICY, CloudAdapter, CredentialError, Credentials, retrying

SECRET = "planted-secret-7c1d"


class Answered(Exception):
    """An SDK error carrying the HTTP status the service answered with."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class NoAnswer(Exception):
    """An SDK error for a connection lost before any answer."""


class Toy(CloudAdapter):
    provider = "toy.cloud"
    service_name = "Toy"
    policy = replace(POLICY, wait_initial=0.001, wait_max=0.01)

    def __init__(self, credentials=None):
        super().__init__("device", {}, credentials or {})
        self.connections = 0

    def connect(self):
        self.connections += 1
        return ("client", self.connections)

    def is_transient(self, exc):
        return isinstance(exc, NoAnswer) or (isinstance(exc, Answered) and exc.status in (408, 429, 503))

    def answer_status(self, exc):
        return exc.status if isinstance(exc, Answered) else None


@pytest.mark.parametrize("references, words", [
    ({"token": "x"}, "{token: ...} is not a reference it takes"),
    ({"env": ""}, "env must name a variable"),
    ({"env": "A", "profile": "b"}, "give one reference, not env and profile"),
])
def test_bad_references_are_refused_by_name(references, words):
    with pytest.raises(CredentialError, match=words):
        Toy(references)


def test_an_env_reference_is_read_at_each_use_and_never_shown(monkeypatch):
    credentials = Credentials.of("toy.cloud", {"env": "QRUN_TOY_TOKEN"})
    monkeypatch.delenv("QRUN_TOY_TOKEN", raising=False)
    with pytest.raises(CredentialError, match="toy.cloud credentials: environment variable "
                                              "QRUN_TOY_TOKEN is not set or is empty"):
        credentials.secret()
    monkeypatch.setenv("QRUN_TOY_TOKEN", SECRET)
    assert credentials.secret() == SECRET and SECRET not in repr(credentials)
    assert credentials.scrub(f"bad key {SECRET}") == "bad key ***"
    monkeypatch.setenv("QRUN_TOY_TOKEN", "rotated")
    assert credentials.secret() == "rotated"


def test_the_client_is_made_once_and_again_for_a_rotated_token(monkeypatch):
    monkeypatch.setenv("QRUN_TOY_TOKEN", SECRET)
    toy = Toy({"env": "QRUN_TOY_TOKEN"})
    assert toy.connections == 0  # lazy
    assert toy.client is toy.client and toy.connections == 1
    monkeypatch.setenv("QRUN_TOY_TOKEN", "rotated")
    assert toy.client == ("client", 2)


@pytest.mark.parametrize("error, refused", [
    (Answered(400), True), (Answered(403), True), (Answered(404), True),
    (Answered(500), False), (Answered(503), False),
    (NoAnswer("connection closed"), False), (KeyError("id"), False),
])
def test_only_a_4xx_says_a_create_made_nothing(error, refused):
    sent = []

    def create():
        sent.append(1)
        raise error

    if refused:
        with pytest.raises(type(error)):
            Toy().create(create)
    else:
        with pytest.raises(TransientBackendError, match="may exist"):
            Toy().create(create)
    assert len(sent) == 1, "a create that may have landed is sent once"


@pytest.mark.parametrize("status", [408, 429])
def test_a_create_turned_away_before_any_work_is_sent_again(status):
    sent = []

    def create():
        sent.append(1)
        if len(sent) < 3:
            raise Answered(status)
        return "job-1"

    assert Toy().create(create) == "job-1" and len(sent) == 3


@pytest.mark.parametrize("status", [408, 429])
def test_a_create_throttled_at_every_try_waits_for_room_instead_of_a_lookup(status):
    """Turned away before any work at every try: nothing exists, so the engine is told to
    wait for room (NoRoomYet), not that a job may exist (which would cost a tag lookup and
    count as an attempt whose fate is unknown)."""
    sent = []

    def create():
        sent.append(1)
        raise Answered(status)

    with pytest.raises(NoRoomYet, match=f"Toy still turns creations away: Answered: HTTP {status}"):
        Toy().create(create)
    assert len(sent) == Toy.policy.tries


def test_a_create_whose_last_try_lost_its_answer_may_exist():
    answers = iter([Answered(429), NoAnswer("lost")])

    def create():
        raise next(answers)

    with pytest.raises(TransientBackendError, match="may exist"):
        Toy().create(create)


def test_calls_are_retried_within_the_bound():
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise NoAnswer("lost")
        return "answer"

    assert Toy().call(flaky) == "answer" and len(tries) == 3
    started = time.monotonic()
    with pytest.raises(TransientBackendError, match="Toy did not answer after 6 tries"):
        retrying(Toy.policy, lambda exc: True, "Toy", lambda: (_ for _ in ()).throw(NoAnswer("x")))
    assert time.monotonic() - started < 5
    with pytest.raises(Answered):  # what will not pass is raised at once
        Toy().call(lambda: (_ for _ in ()).throw(Answered(401)))


class Limited(Toy):
    """A service whose 429 names an account limit (as IBM's error codes do)."""

    def limit_reached(self, exc):
        if isinstance(exc, Answered) and "pending" in getattr(exc, "__notes__", []):
            return NoRoomYet
        if isinstance(exc, Answered) and exc.status == 402:
            return QuotaSpent
        return None


@pytest.mark.parametrize("status, note, kind", [(429, "pending", NoRoomYet), (402, "", QuotaSpent)])
def test_a_create_past_an_account_limit_is_not_tried_again_here(status, note, kind):
    sent = []

    def create():
        sent.append(1)
        error = Answered(status)
        if note:
            error.add_note(note)
        raise error

    with pytest.raises(kind, match=f"^Toy: .*HTTP {status}"):
        Limited(credentials={}).create(create)
    assert len(sent) == 1  # the engine waits (or stops); no in-place retry burns the policy
