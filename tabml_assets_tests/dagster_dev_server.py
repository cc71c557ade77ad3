"""Start a real `dagster dev` (webserver + daemon) for tests, and stop its whole process group.

`dagster dev` started from a non-interactive shell ignores SIGINT/SIGTERM on its own, so it is
started in a new session and the group is signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_INSTANCE_YAML = REPO_ROOT / "infra" / "dagster" / "dagster.dev.yaml"


# The queue daemon looks for queued runs every 5 s by default: in a test that waits on runs,
# that is idle time. Every other setting stays the dev instance's.
TEST_INSTANCE_OVERRIDES: dict = {"run_coordinator": {"config": {"dequeue_interval_seconds": 1}}}


def _merged(base: dict, updates: dict) -> dict:
    merged = dict(base)
    for key, value in updates.items():
        merged[key] = _merged(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def write_instance_yaml(dagster_home: Path, **overrides: dict) -> Path:
    """$DAGSTER_HOME/dagster.yaml: the dev instance with TEST_INSTANCE_OVERRIDES, its sections
    updated by `overrides` (e.g. `run_monitoring={"poll_interval_seconds": 2}` keeps a test's
    timeouts short)."""
    import yaml

    config = _merged(yaml.safe_load(DEV_INSTANCE_YAML.read_text()), TEST_INSTANCE_OVERRIDES)
    config = _merged(config, overrides)
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# `mlflow server` starts a job runner (GenAI scorers, trace rollups) with one huey consumer
# process per job kind, each importing mlflow: ~10 s of CPU per server, for jobs tabml never
# submits. The tracking and registry API the tests talk to is the same without it.
MLFLOW_SERVER_TEST_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class DagsterDev:
    url: str
    graphql_url: str
    dagster_home: Path
    log_path: Path
    process: subprocess.Popen

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        import json

        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.graphql_url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def dagster_dev(
    tabml_home: Path,
    dagster_home: Path,
    deployment: str = "test",
    extra_env: dict[str, str] | None = None,
    startup_timeout: float = 180,
) -> Iterator[DagsterDev]:
    """Run `dagster dev -h 127.0.0.1 -p <free port>` on the repo's workspace.yaml."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        write_instance_yaml(dagster_home)
    port = free_port()
    env = {
        **os.environ,
        "TABML_HOME": str(tabml_home),
        "DAGSTER_HOME": str(dagster_home),
        "TABML_DEPLOYMENT": deployment,
        **(extra_env or {}),
    }
    log_path = dagster_home / "dagster_dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO_ROOT / "workspace.yaml")],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = DagsterDev(url, f"{url}/graphql", dagster_home, log_path, process)
    try:
        wait_until_serving(f"{url}/server_info", process, log_path, startup_timeout, "dagster dev")
        yield server
    finally:
        stop_process_group(process)


def wait_until_serving(
    url: str, process: subprocess.Popen, log_path: Path, timeout: float, what: str
) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer on {url} in {timeout}s:\n{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """`kill -9` of the whole group, as a crash or the OOM killer would: nothing gets to clean up."""
    pgid = process.pid
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=timeout)
    # The children are reaped by whoever inherits them; wait until they are (zombies count).
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the group (webserver, daemon, code servers), then SIGKILL whatever lingers."""
    pgid = process.pid
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # Code servers outlive their parent until a heartbeat times out; do not leave them behind.
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)
