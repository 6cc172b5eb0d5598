"""What every fake service shares: one HTTP server on 127.0.0.1, one fault model, one count
of what it received and accepted, one command line. A fake adds only its routes (the
provider's HTTP API) and its models (jobs, tasks, batches, as the provider shapes them).

The fault model, the same for every fake (constructor keyword / `--flag` / environment):

    latency            --latency            QRUN_FAKE_LATENCY            seconds added to every
                       answer, after the work (an accepted job exists before its answer arrives)
    error_rate         --error-rate         QRUN_FAKE_ERROR_RATE         share of requests
                       answered 429 or 503, before any work
    fail_jobs          --fail-jobs          QRUN_FAKE_FAIL_JOBS          share of accepted
                       jobs that end failed, with the provider's error text
    stall              --stall/--no-stall   QRUN_FAKE_STALL              accepted jobs stay
                       queued for ever
    lose_after_accept  --lose-after-accept  QRUN_FAKE_LOSE_AFTER_ACCEPT  share of successful
                       creations whose answer is lost: the job is created, then the connection
                       is dropped without an answer (never a 5xx: several providers promise
                       that a 5xx created nothing, and their SDKs retry on it)
    run_time           --run-time           QRUN_FAKE_RUN_TIME           seconds each
                       accepted job waits queued before it runs
    seed               --seed               QRUN_FAKE_SEED               seed of the fault
                       draws and of the simulations
    credential         --credential         QRUN_FAKE_CREDENTIAL         the one credential
                       accepted (an access key id, an API key, a bearer token: the provider's
                       own kind); None accepts any

Precedence, for every fake: an explicit constructor argument (a flag, on the command line)
beats the environment variable, which beats the default. Settings live in ``fake.faults``
(and ``fake.credential``) and may be changed while the fake serves.

Accounting: ``fake.requests`` counts requests per route ("METHOD /template", every request,
faulted ones too), ``fake.total_requests`` all of them, ``fake.accepted`` the jobs created
per idempotency tag (so a test proves nothing was accepted twice), ``fake.injected`` the
faults injected ("429", "503", "lost", "failed job"), ``fake.throttle_next[route]`` makes
that route's next N requests answer 429.

Life cycle: ``start(port)`` serves (and returns the base URL), ``stop()`` stops serving,
closes every open connection and stops running jobs. Started again, the same object is a
service restarted on its own storage: it remembers its jobs and runs those still waiting. A
new object is a service that lost everything; job ids are random, so no restart ever hands
out an id twice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, NamedTuple

# constructor keyword -> environment variable; the flag is the keyword with dashes
VARIABLES = {"latency": "QRUN_FAKE_LATENCY", "error_rate": "QRUN_FAKE_ERROR_RATE",
             "fail_jobs": "QRUN_FAKE_FAIL_JOBS", "stall": "QRUN_FAKE_STALL",
             "lose_after_accept": "QRUN_FAKE_LOSE_AFTER_ACCEPT", "run_time": "QRUN_FAKE_RUN_TIME",
             "seed": "QRUN_FAKE_SEED"}
CREDENTIAL_VARIABLE = "QRUN_FAKE_CREDENTIAL"
INJECTED_STATUSES = (429, 503)  # what a busy service answers; both say "nothing was done"


@dataclass
class Faults:
    """What a fake does wrong, on purpose. Shares are probabilities per request or job."""

    latency: float = 0.0
    error_rate: float = 0.0
    fail_jobs: float = 0.0
    stall: bool = False
    lose_after_accept: float = 0.0
    run_time: float = 0.0
    seed: int = 0

    @classmethod
    def resolve(cls, given: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Faults:
        """Each setting from ``given`` when not None, else from its variable, else the default."""
        values: dict[str, Any] = {}
        for setting in fields(cls):
            value = given.get(setting.name)
            if value is None:
                value = _from_environment(VARIABLES[setting.name], setting.default, environ)
            values[setting.name] = value
        return cls(**values)


def _from_environment(variable: str, default: Any, environ: Mapping[str, str]) -> Any:
    text = environ.get(variable, "").strip()
    if not text:
        return default
    if isinstance(default, bool):
        return text.lower() not in ("0", "false", "no", "off")
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a number") from None


class HTTPError(Exception):
    """Raised by a route or a check: answer with this status, in the provider's error shape."""

    def __init__(self, status: int, message: str, code: str | int | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Reply(NamedTuple):
    """An answer: a dict or list is sent as JSON, bytes as they are, str as text, None empty."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = {}


@dataclass
class Request:
    method: str
    path: str  # as sent (still percent-encoded)
    query: dict[str, list[str]]
    headers: Any  # an email.message.Message: case-insensitive .get
    body: bytes

    def json(self) -> Any:
        """The body as JSON ({} when empty); a 400 when it is not JSON."""
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise HTTPError(400, "the request body is not JSON") from None


@dataclass(frozen=True)
class Route:
    """One operation of the provider's API. ``{name}`` in the template matches one path
    segment, ``{name:path}`` the rest of the path; both reach the handler unquoted.
    ``creates``: a successful answer may be lost (``lose_after_accept``).
    ``faulty``: whether ``error_rate`` and ``throttle_next`` reach it. False for a service
    beside the provider's job API (IBM Cloud's token and resource services): the faults model
    a busy quantum service, and an SDK's token manager that waits on a failing token request
    would only make every test slow."""

    method: str
    template: str
    handler: str  # the name of the fake's method: handler(request, *segments) -> Reply
    creates: bool = False
    faulty: bool = True
    pattern: re.Pattern = field(init=False, compare=False)

    def __post_init__(self) -> None:
        pieces = re.split(r"(\{\w+(?::path)?\})", self.template)
        regex = "".join(("(.+)" if p.endswith(":path}") else "([^/]+)") if p.startswith("{")
                        else re.escape(p) for p in pieces)
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    def match(self, method: str, path: str) -> list[str] | None:
        found = self.pattern.fullmatch(path) if method == self.method else None
        return None if found is None else [urllib.parse.unquote(g) for g in found.groups()]


class FakeServer:
    """Base of the fakes. A subclass sets ``routes``, ``provider`` and ``title``, implements its
    route handlers and ``error_reply``, and may override ``authorize``."""

    provider: ClassVar[str] = "fake"  # the provider id, as `python -m qrun.fakes` takes it
    title: ClassVar[str] = "fake service"  # what the banner calls it
    routes: ClassVar[tuple[Route, ...]] = ()
    workers: ClassVar[int] = 1  # jobs run at once

    def __init__(self, *, latency: float | None = None, error_rate: float | None = None,
                 fail_jobs: float | None = None, stall: bool | None = None,
                 lose_after_accept: float | None = None, run_time: float | None = None,
                 seed: int | None = None, credential: str | None = None,
                 workers: int | None = None):
        self.faults = Faults.resolve(dict(latency=latency, error_rate=error_rate,
                                          fail_jobs=fail_jobs, stall=stall,
                                          lose_after_accept=lose_after_accept,
                                          run_time=run_time, seed=seed))
        self.credential = credential if credential is not None else \
            (os.environ.get(CREDENTIAL_VARIABLE) or None)
        self.requests: Counter[str] = Counter()  # "METHOD /template" -> requests received
        self.accepted: Counter[str] = Counter()  # idempotency tag -> jobs created with it
        self.injected: Counter[str] = Counter()  # "429", "503", "lost", "failed job" -> how many
        self.throttle_next: Counter[str] = Counter()  # route -> next requests answered 429
        self.url = ""
        self.lock = threading.RLock()
        self.random = random.Random(self.faults.seed)
        self._workers = workers or self.workers
        self._server: ThreadingHTTPServer | None = None
        self._runner: ThreadPoolExecutor | None = None
        self._connections: set[socket.socket] = set()
        self._waiting: dict[int, Callable[[], None]] = {}  # accepted work not started yet
        self._work_numbers = itertools.count()

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def waiting(self) -> int:
        """Accepted jobs whose work has not started (queued, stalled, or stopped meanwhile)."""
        with self.lock:
            return len(self._waiting)

    # -- life cycle

    def start(self, port: int = 0) -> str:
        """Serve in background threads on 127.0.0.1 (port 0: a free one); the base URL.
        Already serving, it stays where it is and says so (port 0 or the same port)."""
        if self._server is not None:
            if port in (0, self._server.server_address[1]):
                return self.url
            raise RuntimeError(f"{self.title} is already serving at {self.url}")
        self._runner = ThreadPoolExecutor(max_workers=self._workers,
                                          thread_name_prefix=f"fake-{self.provider}-run")
        self._server = _QuietServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"fake-{self.provider}", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        with self.lock:
            waiting = list(self._waiting)
        for number in waiting:  # a restart: what was accepted and not run yet runs now
            self._launch(number)
        return self.url

    def stop(self) -> None:
        """Stop serving: no new connection, the open ones closed, no more jobs run."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            connections = list(self._connections)
        for connection in connections:  # keep-alive connections would still be answered
            _close(connection)
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults

    def chance(self, share: float) -> bool:
        with self.lock:
            return share > 0 and self.random.random() < share

    def job_fails(self) -> bool:
        """Whether a job being created is doomed (``fail_jobs``); counted when it is."""
        doomed = self.chance(self.faults.fail_jobs)
        if doomed:
            with self.lock:
                self.injected["failed job"] += 1
        return doomed

    def run_later(self, work: Callable[[], None]) -> None:
        """Run an accepted job's work after ``run_time`` seconds, on the fake's runner, or
        never while it stalls. Work not started when the fake stops runs when it restarts."""
        with self.lock:
            number = next(self._work_numbers)
            self._waiting[number] = work
        self._launch(number)

    def _launch(self, number: int) -> None:
        if self.faults.stall:
            return
        if self.faults.run_time:
            timer = threading.Timer(self.faults.run_time, self._begin, (number,))
            timer.daemon = True
            timer.start()
        else:
            self._begin(number)

    def _begin(self, number: int) -> None:
        runner = self._runner
        if runner is None:
            return  # stopped meanwhile: it stays waiting for a restart
        try:
            runner.submit(self._work, number)
        except RuntimeError:  # the runner shut down between the check and the submit
            pass

    def _work(self, number: int) -> None:
        with self.lock:
            work = self._waiting.pop(number, None)
        if work is not None:
            work()

    # -- what a subclass provides

    def error_reply(self, status: int, message: str, code: str | int | None = None) -> Reply:
        """An error in the provider's shape (every refusal and injected fault goes through it)."""
        return Reply(status, {"message": message})

    def authorize(self, request: Request, route: Route) -> None:
        """Raise HTTPError when the request's credential is not accepted for this route."""

    def unrouted(self, request: Request) -> Reply:
        return self.error_reply(404, f"no route {request.method} {urllib.parse.urlsplit(request.path).path}")

    def banner(self) -> str:
        return f"{self.title} at {self.url}"

    def after_serving(self) -> None:
        """Called by the command line once the fake stopped: release what it holds."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """This fake's own flags, besides the common ones."""

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict:
        """Constructor keywords from this fake's own flags."""
        return {}

    # -- serving one request

    def answer(self, request: Request) -> Reply | None:
        """The reply to a request, or None to drop the connection without one."""
        route, segments = self.route_for(request.method, request.path)
        name = route.name if route else f"{request.method} (no route)"
        with self.lock:
            self.requests[name] += 1
        reply = self._injected(name) if route is None or route.faulty else None
        if reply is None:
            reply = self._handled(request, route, segments)
            if route and route.creates and 200 <= reply.status < 300 \
                    and self.chance(self.faults.lose_after_accept):
                with self.lock:
                    self.injected["lost"] += 1
                reply = None  # created, and the answer lost
        if self.faults.latency:  # after the work: a created job waits this long for its answer
            time.sleep(self.faults.latency)
        return reply

    def route_for(self, method: str, target: str) -> tuple[Route | None, list[str]]:
        """The route a request goes to (None: no route), and its path segments."""
        path = urllib.parse.urlsplit(target).path.rstrip("/") or "/"
        for route in self.routes:
            segments = route.match(method, path)
            if segments is not None:
                return route, segments
        return None, []

    def _injected(self, name: str) -> Reply | None:
        status = None
        with self.lock:
            if self.throttle_next[name] > 0:
                self.throttle_next[name] -= 1
                status = 429
        if status is None and self.chance(self.faults.error_rate):
            with self.lock:
                status = self.random.choice(INJECTED_STATUSES)
        if status is None:
            return None
        with self.lock:
            self.injected[str(status)] += 1
        busy = "Too many requests" if status == 429 else "Service unavailable"
        return self.error_reply(status, f"{busy} (injected by the qrun fake)")

    def _handled(self, request: Request, route: Route | None, segments: list[str]) -> Reply:
        try:
            if route is None:
                return self.unrouted(request)
            self.authorize(request, route)
            return getattr(self, route.handler)(request, *segments)
        except HTTPError as error:
            return self.error_reply(error.status, error.message, error.code)
        except Exception as exc:  # a bug of the fake: say so, as a server would
            return self.error_reply(500, f"qrun fake server error: {type(exc).__name__}: {exc}")

    # -- the command line

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """`python -m qrun.fakes PROVIDER [flags]`: serve until Ctrl-C or SIGTERM."""
        fake, port = cls.from_command_line(argv)
        fake.start(port)
        serve_until_stopped(fake)

    @classmethod
    def from_command_line(cls, argv: list[str] | None = None) -> tuple[FakeServer, int]:
        """The fake the flags describe (flags left out: their variables), and its port."""
        parser = argparse.ArgumentParser(prog=f"python -m qrun.fakes {cls.provider}",
                                         description=f"A local {cls.title} for rehearsing qrun "
                                                     "campaigns; each flag left out is read from "
                                                     "its QRUN_FAKE_* variable.")
        common_arguments(parser)
        cls.add_arguments(parser)
        args = parser.parse_args(argv)
        common = {name: getattr(args, name) for name in (*VARIABLES, "credential")}
        return cls(**common, **cls.options_from(args)), args.port


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every fake takes; each defaults to None so that its variable can decide."""
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, help="seconds added to each answer")
    parser.add_argument("--error-rate", type=float, help="share of requests answered 429 or 503")
    parser.add_argument("--fail-jobs", type=float, help="share of jobs that fail")
    parser.add_argument("--stall", action=argparse.BooleanOptionalAction,
                        help="jobs stay queued for ever")
    parser.add_argument("--lose-after-accept", type=float,
                        help="share of creations whose connection is dropped after the job was created")
    parser.add_argument("--run-time", type=float, help="seconds each job waits queued")
    parser.add_argument("--seed", type=int, help="seed of the fault draws and simulations")
    parser.add_argument("--credential", help=f"the only credential accepted (default: any); "
                                             f"prefer {CREDENTIAL_VARIABLE}, which no process list shows")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve_until_stopped(fake: FakeServer) -> None:
    """Say where the fake listens, serve until Ctrl-C or `kill`, then stop it cleanly."""
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
    try:  # a signal may come while the banner is being written: the reader has its line
        print(f"{fake.banner()}; Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        fake.after_serving()
        print(f"accepted jobs per tag: {dict(fake.accepted)}", file=sys.stderr, flush=True)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the client


class _QuietServer(ThreadingHTTPServer):
    """A client that drops its connection (a killed apply, a timed-out SDK call) is part of
    the service's life, not an error to print a traceback for; anything else still is."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def _handler_for(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the services (and SDK pools) do

        def log_message(self, format, *args):  # quiet: tests and users read their own output
            pass

        def setup(self) -> None:
            super().setup()
            with fake.lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake.lock:
                fake._connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass  # the connection was dropped on purpose, or by the client

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urllib.parse.urlsplit(self.path)
            request = Request(self.command, self.path, urllib.parse.parse_qs(split.query),
                              self.headers, body)
            reply = fake.answer(request)
            if reply is None:  # the answer is lost: close the connection without one
                self.close_connection = True
                _close(self.connection)
                return
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (killed mid-request)

        def _send(self, reply: Reply) -> None:
            headers = dict(reply.headers)
            if isinstance(reply.body, bytes):
                data = reply.body
            elif isinstance(reply.body, str):
                data = reply.body.encode()
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            elif reply.body is None:
                data = b""
            else:
                data = json.dumps(reply.body).encode()
            headers.setdefault("Content-Type", "application/json")
            self.send_response(reply.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    return Handler
