"""The cloud core: what the four cloud adapters share (braket.aws, qiskit.ibm, pasqal.cloud,
quandela.cloud). SDK-free: each adapter brings its SDK and a few rules, this module the rest.

  * One call policy (``CallPolicy``, ``POLICY``): how often and how long one call to a
    service is tried again when it fails in a way that may pass, with jittered backoff.
    ``retrying`` runs a call under it and raises TransientBackendError once it is spent,
    so every call's time is bounded (base.RemoteAdapter's contract).
  * One rule for job creations (``CloudAdapter.create``): only an HTTP 4xx answer says that
    nothing was created. 408 (request timeout) and 429 (too many requests) are answered
    before any work and may pass, so such a create is sent again here, under the call
    policy, and once its tries are spent it is NoRoomYet: the engine waits for room, the job
    never fails for it; any other 4xx is a refusal. A lost connection, a client-side timeout, 5xx or a
    failure nobody can read may have created the job: it is a TransientBackendError, and the
    engine looks the job's tag up before it sends anything again.
  * One reading of credential references (``Credentials``): ``{env: VAR}`` is read from the
    environment at each use, never kept; ``{profile: NAME}`` is handed to the SDK. Errors
    name the reference, never the secret.
  * One lazy SDK client (``CloudAdapter.client``): made at the first call that needs it
    (making one may contact the service), reused, and made again when ``{env: VAR}`` holds
    another value (a rotated token).

An adapter subclasses ``CloudAdapter`` and supplies ``connect`` (make its SDK client),
``is_transient`` (may this error pass if the call is made again?) and ``answer_status`` (the
HTTP status the service answered with, if the error carries one); ``refusal`` may turn an
SDK error into the exception qrun reports.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from qrun.providers.base import (
    JobNotFound,
    NoRoomYet,
    QuotaSpent,
    SubmissionUnknown,
    TransientBackendError,
)

T = TypeVar("T")

# Statuses that turn a request away before any work, for now only: a timeout of the request
# (408) and "too many requests" (429). Safe to send again, even a create. With 5xx, a create
# answered so may have landed.
NOT_A_REFUSAL = frozenset({408, 429})


@dataclass(frozen=True)
class CallPolicy:
    """How one call to a cloud service is tried again when it fails in a way that may pass.

    The values are the strictest the four adapters used before they shared them: six tries
    within 30 seconds (a try already started ends by its own request timeout), waiting a
    random time in a window that starts at 0.2 s and doubles up to 8 s ("full jitter", so
    many call threads do not come back at once). A service's Retry-After is honoured up to
    ``wait_max``.
    """

    tries: int = 6
    seconds: float = 30.0
    wait_initial: float = 0.2
    wait_max: float = 8.0

    def wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(multiplier=self.wait_initial, max=self.wait_max)(state)
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None) or 0.0  # a service's Retry-After, if kept
        return min(self.wait_max, max(backoff, asked))


POLICY = CallPolicy()


def retrying(policy: CallPolicy, is_transient: Callable[[BaseException], bool], service: str,
             function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``, tried again under ``policy`` while it fails with an
    error ``is_transient`` accepts; TransientBackendError once the tries or the time are
    spent. Any other error is raised as it came, on its first occurrence."""
    try:
        for attempt in Retrying(retry=retry_if_exception(is_transient),
                                stop=stop_after_attempt(policy.tries) | stop_after_delay(policy.seconds),
                                wait=policy.wait, reraise=False):
            with attempt:
                return function(*args, **kwargs)
    except RetryError as exc:
        last = exc.last_attempt
        spent = TransientBackendError(f"{service} did not answer after {last.attempt_number} tries: "
                                      f"{error_text(last.exception())}")
        spent.last_error = last.exception()  # what the last try failed with, for the caller
        raise spent from None
    raise AssertionError("unreachable: Retrying either returns or raises")  # for type checkers


def error_text(exc: BaseException | None) -> str:
    """An error on one line, with its type: what qrun shows and stores of an SDK's error."""
    if exc is None:
        return "no answer"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


class CredentialError(RuntimeError):
    """A credential reference that cannot be used: bad, or naming an empty variable."""


@dataclass(frozen=True)
class Credentials:
    """A backend's credential references: an environment variable's name or a profile name.

    ``kinds`` are the references the provider takes; ``why`` says what it takes instead of
    the others (shown when a manifest uses one it does not)."""

    provider: str
    env: str | None = None
    profile: str | None = None

    @classmethod
    def of(cls, provider: str, references: dict | None, kinds: tuple = ("env", "profile"),
           required: bool = False, why: str = "") -> Credentials:
        references = dict(references or {})
        for kind, value in references.items():
            if kind not in kinds:
                raise cls._bad(provider, f"{{{kind}: ...}} is not a reference it takes", kinds, why)
            if not isinstance(value, str) or not value.strip():
                raise cls._bad(provider, f"{kind} must name a {'variable' if kind == 'env' else 'profile'}",
                               kinds, why)
        if len(references) > 1:
            raise cls._bad(provider, "give one reference, not " + " and ".join(references), kinds, why)
        if required and not references:
            raise cls._bad(provider, "a reference is required", kinds, why)
        return cls(provider, env=references.get("env"), profile=references.get("profile"))

    @staticmethod
    def _bad(provider: str, problem: str, kinds: tuple, why: str) -> CredentialError:
        taken = " or ".join(f"{{{k}: {'VARIABLE' if k == 'env' else 'NAME'}}}" for k in kinds)
        return CredentialError(f"{provider} credentials: {problem}; it takes {taken}" +
                               (f" ({why})" if why else ""))

    def secret(self) -> str:
        """The value of ``{env: VAR}``, read now (never kept: a rotated value is picked up)."""
        if self.env is None:
            raise CredentialError(f"{self.provider} credentials: no environment variable is named")
        value = os.environ.get(self.env, "").strip()
        if not value:
            raise CredentialError(f"{self.provider} credentials: environment variable {self.env} "
                                  "is not set or is empty")
        return value

    def fingerprint(self) -> str | None:
        """Tells one value of ``{env: VAR}`` from another without keeping it (None: no env)."""
        if self.env is None:
            return None
        value = os.environ.get(self.env, "").strip()
        return hashlib.sha256(value.encode()).hexdigest() if value else None

    def scrub(self, text: str) -> str:
        """``text`` without the current value of ``{env: VAR}`` (an SDK may echo it)."""
        value = os.environ.get(self.env, "").strip() if self.env else ""
        return text.replace(value, "***") if value else text


class CloudAdapter:
    """The shared half of a cloud adapter (base.RemoteAdapter): calls under the one policy,
    creations under the one rule, credential references, the lazy SDK client.

    Subclasses set ``provider`` (the registry id), ``service_name`` (the service's name in
    messages) and the credential references they take, and implement ``connect``,
    ``is_transient`` and ``answer_status``; the engine's contract (submit, find, poll,
    fetch, cancel, metadata) is theirs to write.
    """

    provider: ClassVar[str] = ""
    service_name: ClassVar[str] = ""
    # One policy for all; a provider that needs another value overrides it here, with why.
    policy: ClassVar[CallPolicy] = POLICY
    credential_kinds: ClassVar[tuple] = ("env", "profile")
    credentials_required: ClassVar[bool] = False
    credentials_note: ClassVar[str] = ""  # why a provider takes only some kinds

    def __init__(self, device: str, options: dict, credentials: dict | None):
        self.device = device
        self.options = dict(options or {})
        # A bad reference is refused here; a variable is read only when it is used.
        self.credentials = Credentials.of(self.provider, credentials, self.credential_kinds,
                                          self.credentials_required, self.credentials_note)
        self._client: Any = None
        self._client_made_with: str | None = None  # the credential's fingerprint then
        self._client_lock = threading.Lock()

    # -- what each provider supplies

    def connect(self) -> Any:
        """Make the SDK client (it may contact the service: it is retried as any call)."""
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` may pass if the same call is made again (network, 408, 429, 5xx).

        A TransientBackendError is not, by default: it comes from a call whose own tries
        are spent, and trying it again would multiply the time bound."""
        return False

    def answer_status(self, exc: BaseException) -> int | None:
        """The HTTP status the service answered the failed call with; None if it did not
        answer, or if the error does not say."""
        return None

    def refusal(self, exc: Exception) -> Exception:
        """The exception qrun reports for an error that will not pass (by default, itself)."""
        return exc

    def never_sent(self, exc: BaseException) -> bool:
        """Whether a create call failed before its creating request left (a read the SDK
        makes first): then trying again sends the job for the first time. By default no
        error says so; a provider that knows its SDK's steps says which do, and why."""
        return False

    def client_key(self) -> str | None:
        """What the client was made with that may change under it: by default the value of
        ``{env: VAR}`` (fingerprinted, never kept), so a rotated token makes a new client."""
        return self.credentials.fingerprint()

    # -- what they share

    @property
    def client(self) -> Any:
        """The SDK client, made at first use and reused (made again for a rotated {env})."""
        with self._client_lock:
            made_with = self.client_key()
            if self._client is None or made_with != self._client_made_with:
                self._client = self.call(self.connect)
                self._client_made_with = made_with
            return self._client

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call to the service, retried under the policy while it fails in a way that may
        pass; what will not pass goes through ``refusal``."""
        try:
            return retrying(self.policy, self.is_transient, self.service_name, function, *args, **kwargs)
        except TransientBackendError as exc:
            text = self.credentials.scrub(str(exc))  # the SDK's error may quote the secret
            if text != str(exc):
                raise TransientBackendError(text) from None
            raise
        except (SubmissionUnknown, JobNotFound, CredentialError):
            raise
        except Exception as exc:
            raise self.refusal(exc) from None

    def create(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call that creates a job (what costs money), sent once.

        Only a 4xx answer says that nothing was created; anything else may have made the
        job, which the engine then looks up by its tag before sending it again. Tried again
        here only when nothing was made: a 408 or 429 answer, or where ``never_sent`` says
        the creating request never left."""
        def unsent_and_passing(exc: BaseException) -> bool:
            if self.limit_reached(exc) is not None:
                return False  # the engine waits for room: trying again now would not help
            return (self.turned_away(exc) or self.never_sent(exc)) and self.is_transient(exc)

        try:
            return retrying(self.policy, unsent_and_passing, self.service_name, function, *args, **kwargs)
        except (SubmissionUnknown, CredentialError):
            raise
        except Exception as exc:
            limit = self.limit_reached(exc)
            if limit is not None:
                raise limit(f"{self.service_name}: {self.credentials.scrub(error_text(exc))}") from None
            last = getattr(exc, "last_error", None)
            if isinstance(exc, TransientBackendError) and last is not None and self.turned_away(last):
                # Turned away before any work at every try (throttled): nothing was made,
                # and the engine waits for room rather than looking up a job that is not there.
                raise NoRoomYet(f"{self.service_name} still turns creations away: "
                                f"{self.credentials.scrub(error_text(last))}") from None
            if not isinstance(exc, TransientBackendError) and self.created_nothing(exc):
                raise self.refusal(exc) from None
            why = str(exc) if isinstance(exc, TransientBackendError) else error_text(exc)
            raise TransientBackendError(f"{self.service_name} did not confirm the job, which may exist: "
                                        f"{self.credentials.scrub(why)}") from None

    def turned_away(self, exc: BaseException) -> bool:
        """Whether the service turned a call away before any work (408, 429: throttled), so
        that a create answered so made nothing. A provider whose throttling answers carry
        another status says so here."""
        return self.answer_status(exc) in NOT_A_REFUSAL

    def limit_reached(self, exc: BaseException) -> type[NoRoomYet] | type[QuotaSpent] | None:
        """Hook: whether a create was turned away by an account limit, before any work:
        NoRoomYet (too many unfinished jobs: wait), QuotaSpent (the period's quota: stop)."""
        return None

    def created_nothing(self, exc: BaseException) -> bool:
        """The creation rule: a 4xx answer, but 408 and 429, is a refusal that made nothing."""
        status = self.answer_status(exc)
        return status is not None and 400 <= status < 500 and status not in NOT_A_REFUSAL
