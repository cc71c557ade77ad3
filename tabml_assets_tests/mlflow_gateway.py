"""Test helper: a real MLflow tracking server on 127.0.0.1 behind a gateway that checks a bearer
token and can inject failures (503, 429, closed connections), as a hosted MLflow would.

The gateway is what makes credentials and outages real in tests: MLflow's client sends
MLFLOW_TRACKING_TOKEN as `Authorization: Bearer ...`, the gateway refuses anything else with
401, and `fail_next(n)` answers the next n requests with an error before the server sees them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tabml_assets_tests.dagster_dev_server import MLFLOW_SERVER_TEST_ENV

HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 90
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class GatewayState:
    token: str
    upstream_port: int
    pending_failures: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self.pending_failures.extend([status] * count)

    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, _, status in self.requests]


ERROR_CODES = {401: "UNAUTHENTICATED", 429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}


def make_handler(state: GatewayState) -> type[BaseHTTPRequestHandler]:
    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read `requests`
            return

        def _reply(self, status: int, message: str) -> None:
            body = json.dumps({"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with state.lock:
                state.requests.append((self.command, self.path, status))

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with state.lock:
                injected = state.pending_failures.pop(0) if state.pending_failures else None
            if injected is not None:
                self._reply(injected, f"injected failure {injected}")
                return
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._reply(401, "missing or wrong bearer token")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "authorization"}}
            upstream = http.client.HTTPConnection(HOST, state.upstream_port, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
            finally:
                upstream.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with state.lock:
                state.requests.append((self.command, self.path, response.status))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Gateway


@dataclass
class MlflowGateway:
    url: str
    state: GatewayState
    server_log: Path


def wait_for_health(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"mlflow server on {HOST}:{port} not healthy after {STARTUP_TIMEOUT_SECONDS}s")


@contextmanager
def mlflow_gateway(folder: Path, token: str) -> Iterator[MlflowGateway]:
    """A real `mlflow server` (sqlite store under `folder`) behind a token-checking gateway."""
    folder.mkdir(parents=True, exist_ok=True)
    server_port = free_port()
    log = folder / "mlflow_server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(MLFLOW_SERVER_TEST_ENV)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                "--default-artifact-root", str(folder / "server_artifacts"),
                "--host", HOST, "--port", str(server_port), "--workers", "1",
            ],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    gateway = None
    try:
        wait_for_health(server_port, process, log)
        state = GatewayState(token=token, upstream_port=server_port)
        gateway = ThreadingHTTPServer((HOST, free_port()), make_handler(state))
        gateway.daemon_threads = True
        threading.Thread(target=gateway.serve_forever, daemon=True).start()
        yield MlflowGateway(f"http://{HOST}:{gateway.server_address[1]}", state, log)
    finally:
        if gateway is not None:
            gateway.shutdown()
            gateway.server_close()
        # The server runs uvicorn workers in its own session: stop the whole group. Its store
        # is a throwaway, so there is nothing to shut down gracefully.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
