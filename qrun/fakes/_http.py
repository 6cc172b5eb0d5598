"""What every fake service shares: a threaded HTTP server on 127.0.0.1, fault injection,
and a count of what it accepted (so a test can prove nothing was submitted twice)."""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Faults:
    """What a fake does wrong, on purpose. Shares are probabilities per request or job."""

    def __init__(self, latency: float = 0.0, error_rate: float = 0.0, fail_jobs: float = 0.0,
                 stall: bool = False, lose_after_accept: float = 0.0, run_time: float = 0.0,
                 seed: int = 0):
        self.latency = latency  # seconds added to every request
        self.error_rate = error_rate  # share of requests answered 429 or 503 before any work
        self.fail_jobs = fail_jobs  # share of accepted jobs that end failed
        self.stall = stall  # accepted jobs stay queued forever
        self.lose_after_accept = lose_after_accept  # share of accepted jobs answered with a 500
        self.run_time = run_time  # seconds a job stays queued/running before it finishes
        self.random = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, **overrides) -> "Faults":
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
                if fake.faults.latency:
                    time.sleep(fake.faults.latency)
                if fake.faults.chance(fake.faults.error_rate):
                    status = 429 if fake.faults.chance(0.5) else 503
                    self._reply(status, fake.error_body(status), {})
                    return
                status, payload, headers = fake.handle(self.command, self.path, self.headers, body)
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


def serve(fake_class, argv=None) -> None:
    """`python -m qrun.fakes.<provider> --port N`: serve until Ctrl-C, faults from flags."""
    parser = argparse.ArgumentParser(description=f"local fake {fake_class.name} service")
    parser.add_argument("--port", type=int, default=8080)
    for flag in ("latency", "error-rate", "fail-jobs", "lose-after-accept", "run-time"):
        parser.add_argument(f"--{flag}", type=float, default=None)
    parser.add_argument("--stall", action="store_true")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"latency": args.latency, "error_rate": args.error_rate,
                                   "fail_jobs": args.fail_jobs, "run_time": args.run_time,
                                   "lose_after_accept": args.lose_after_accept}.items()
                 if v is not None}
    if args.stall:
        overrides["stall"] = True
    fake = fake_class(faults=Faults.from_env(**overrides))
    url = fake.start(args.port)
    print(f"fake {fake_class.name} service at {url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
