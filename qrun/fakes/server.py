"""What every fake service shares: a threaded HTTP server on 127.0.0.1, fault injection,
and a count of what it accepted (so a test can prove nothing was submitted twice)."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Faults:
    """What a fake does wrong, on purpose. Shares are probabilities per request or job."""

    def __init__(self, latency: float = 0.0, error_rate: float = 0.0, fail_jobs: float = 0.0,
                 stall: bool = False, lose_after_accept: float = 0.0, run_time: float = 0.0,
                 seed: int = 0):
        self.latency = latency  # seconds added to every answer, after the work (an accepted
        # job may exist before its answer arrives, as the other fakes do it)
        self.error_rate = error_rate  # share of requests answered 429 or 503 before any work
        self.fail_jobs = fail_jobs  # share of accepted jobs that end failed
        self.stall = stall  # accepted jobs stay queued forever
        self.lose_after_accept = lose_after_accept  # share of accepted jobs answered with a 500
        self.run_time = run_time  # seconds a job stays queued/running before it finishes
        self.random = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, **overrides) -> Faults:
        def number(name, default):
            return float(os.environ.get(name, default))
        values = dict(latency=number("QRUN_FAKE_LATENCY", 0), error_rate=number("QRUN_FAKE_ERROR_RATE", 0),
                      fail_jobs=number("QRUN_FAKE_FAIL_JOBS", 0),
                      stall=os.environ.get("QRUN_FAKE_STALL", "") not in ("", "0"),
                      lose_after_accept=number("QRUN_FAKE_LOSE_AFTER_ACCEPT", 0),
                      run_time=number("QRUN_FAKE_RUN_TIME", 0))
        values.update(overrides)
        return cls(**values)

    def chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self.random.random() < share


class FakeServer:
    """Base of the fakes: subclasses implement ``handle(request) -> (status, body, headers)``."""

    name = "fake"

    def __init__(self, faults: Faults | None = None, **fault_options):
        self.faults = faults or Faults(**fault_options)
        self.accepted: Counter = Counter()  # idempotency tag -> jobs accepted with it
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: tests read their own output
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests += 1
                if fake.faults.chance(fake.faults.error_rate):
                    status = 429 if fake.faults.chance(0.5) else 503
                    self._reply(status, fake.error_body(status), {})
                    return
                status, payload, headers = fake.handle(self.command, self.path, self.headers, body)
                if fake.faults.latency:
                    time.sleep(fake.faults.latency)
                self._reply(status, payload, headers)

            def _reply(self, status, payload, headers):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    if "Content-Type" not in headers:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (killed mid-request): nothing to answer

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def error_body(self, status: int):
        return {"message": "injected fault"}

    def handle(self, method: str, path: str, headers, body: bytes):
        raise NotImplementedError


def fault_arguments(parser: argparse.ArgumentParser, default=0.0) -> None:
    """The flags every fake takes: where it listens, and what it does wrong on purpose.

    ``default`` None lets a fake tell a flag left out from one set (then its environment
    variables decide)."""
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, default=default, help="seconds added to each answer")
    parser.add_argument("--error-rate", type=float, default=default,
                        help="share of requests answered 429 or 5xx")
    parser.add_argument("--fail-jobs", type=float, default=default, help="share of jobs that fail")
    parser.add_argument("--stall", action="store_true", default=None if default is None else False,
                        help="jobs stay queued for ever")
    parser.add_argument("--lose-after-accept", type=float, default=default,
                        help="share of accepted jobs whose answer is lost")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve_until_stopped(fake, banner: str, on_stop=None) -> None:
    """Say where the fake listens, serve until Ctrl-C or `kill`, then stop it cleanly."""
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
    try:  # a signal may come while the banner is being written: the reader has its line
        print(f"{banner}; Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        if on_stop:
            on_stop()


def serve(fake_class, argv=None) -> None:
    """`python -m qrun.fakes <provider> --port N`: serve until Ctrl-C, faults from flags."""
    parser = argparse.ArgumentParser(description=f"local fake {fake_class.name} service")
    fault_arguments(parser, default=None)
    parser.add_argument("--run-time", type=float, default=None, help="seconds each job waits queued")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"latency": args.latency, "error_rate": args.error_rate,
                                   "fail_jobs": args.fail_jobs, "run_time": args.run_time,
                                   "lose_after_accept": args.lose_after_accept}.items()
                 if v is not None}
    if args.stall:
        overrides["stall"] = True
    fake = fake_class(faults=Faults.from_env(**overrides))
    url = fake.start(args.port)
    serve_until_stopped(fake, f"fake {fake_class.name} service at {url}")
