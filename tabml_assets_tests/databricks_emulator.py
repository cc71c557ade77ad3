"""A Databricks workspace emulator on 127.0.0.1: the REST calls the step launcher makes, and a
"cluster" that really runs the submitted `spark_python_task`.

No Databricks workspace is reachable from the test machine, so the staging deployment is pointed
at this server instead (`DATABRICKS_HOST=http://127.0.0.1:<port>`). It is not a mock that
answers "success": `jobs/runs/submit` starts the submitted Python file in a subprocess, as a
cluster driver would, with `dbutils` (secrets served from the emulator's scopes) and `sc` (a
local SparkContext, created only when the step touches it) as globals; DBFS (`dbfs:/...` in the
API, `/dbfs/...` on the driver) is a temporary folder; the run's state follows the process.

Implemented: DBFS create/add-block/close/read, jobs runs submit/get/get-output/cancel,
permissions PATCH, clusters get, and the OIDC endpoints of OAuth machine-to-machine auth.
Faults can be injected: HTTP error answers (429/5xx, for a number of calls), runs the cluster
fails before the task starts, and slow runs (the task starts only after a delay).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import posixpath
import secrets as token_generator
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_DBFS_BLOCK_BYTES = 1024 * 1024
DEFAULT_DBFS_READ_BYTES = 512 * 1024

# Runs on the emulated driver: gives the submitted file the globals a Databricks driver gives
# a spark_python_task, then writes what it observed (names only, never secret values).
DRIVER_BOOTSTRAP = r'''
import json
import os
import runpy
import sys

request = json.loads(sys.stdin.read())
scopes = request["secrets"]
served = {}


class SecretsUtility:
    def get(self, scope, key):
        if key not in scopes.get(scope, {}):
            raise ValueError(f"Secret does not exist with scope: {scope} and key: {key}")
        served[f"{scope}/{key}"] = scopes[scope][key]
        return scopes[scope][key]

    def list(self, scope):
        return sorted(scopes.get(scope, {}))


class DBUtils:
    secrets = SecretsUtility()


class LazySparkContext:
    """`sc` as on a driver; the JVM starts only if a step uses it."""

    def __getattr__(self, name):
        from pyspark import SparkContext

        return getattr(SparkContext.getOrCreate(), name)


python_file, *parameters = sys.argv[1:]
sys.argv = [python_file, *parameters]
try:
    runpy.run_path(
        python_file,
        init_globals={"dbutils": DBUtils(), "sc": LazySparkContext()},
        run_name="__main__",
    )
finally:
    secret_values = {v for v in served.values() if v}
    report = {
        "pid": os.getpid(),
        "secrets_served": sorted(served),
        "env_from_secrets": sorted(k for k, v in os.environ.items() if v in secret_values),
        "tabml_env": {k: v for k, v in os.environ.items() if k.startswith("TABML_")},
    }
    with open(request["report_path"], "w") as handle:
        json.dump(report, handle)
'''

# What a driver inherits from the machine; everything else must come from the submitted run
# (env_variables, secrets), as on a real cluster. The thread pool sizes are the machine's too:
# a driver shares the test machine's cores (see tabml_assets_tests/__init__.py).
INHERITED_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR", "TZ",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
)


class EmulatorApiError(Exception):
    """An error answer in Databricks' shape: HTTP status, error_code and message."""

    def __init__(self, status: int, error_code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.retry_after = retry_after


@dataclasses.dataclass
class HttpFault:
    """Answer the next `times` calls of `method path` with `status` instead of serving them."""

    method: str
    path: str
    status: int
    times: int
    retry_after: int | None = 0
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    injected: bool


@dataclasses.dataclass
class EmulatedRun:
    run_id: int
    job_id: int
    task_run_id: int  # the run of its one task, whose output `get-output` serves
    run_name: str
    task: dict[str, Any]
    cluster_id: str
    timeout_seconds: int
    submitted_at: float
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = "Waiting for cluster"
    error: str | None = None
    driver_pid: int | None = None
    ended_at: float | None = None
    report: dict[str, Any] | None = None
    cancel_requested: threading.Event = dataclasses.field(default_factory=threading.Event)
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle_state,
            "state_message": self.state_message,
            "user_cancelled_or_timedout": self.result_state in ("CANCELED", "TIMEDOUT"),
        }
        if self.result_state:
            state["result_state"] = self.result_state
        return state


class DatabricksWorkspaceEmulator:
    """A loopback Databricks workspace whose "cluster" runs submitted Python tasks for real.

    root: a temporary folder; DBFS lives in root/dbfs, driver logs in root/runs/<run_id>.
    token: the personal access token requests must carry (None: PAT auth disabled).
    oauth_clients: service principal client id -> secret for OAuth M2M.
    secret_scopes: scope -> key -> value, served to drivers by `dbutils.secrets.get`.
    library_paths: the Python path of the driver, standing in for installed cluster libraries.
    """

    def __init__(
        self,
        root: Path,
        *,
        token: str | None = "dapi-emulator-token",
        oauth_clients: dict[str, str] | None = None,
        secret_scopes: dict[str, dict[str, str]] | None = None,
        library_paths: list[str] | None = None,
        spark_master: str = "local[1]",
    ) -> None:
        self.root = Path(root)
        self.dbfs_root = self.root / "dbfs"
        self.runs_root = self.root / "runs"
        self.dbfs_root.mkdir(parents=True, exist_ok=True)
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.oauth_clients = dict(oauth_clients or {})
        self.secret_scopes = {scope: dict(keys) for scope, keys in (secret_scopes or {}).items()}
        self.library_paths = list(library_paths or [])
        self.spark_master = spark_master
        self.requests: list[RecordedRequest] = []
        self.runs: dict[int, EmulatedRun] = {}
        self.submissions: list[dict[str, Any]] = []
        self.cancel_calls: list[int] = []
        self.permission_updates: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.task_start_delay_seconds = 0.0
        self._faults: list[HttpFault] = []
        self._failing_runs: list[str] = []
        self._issued_oauth_tokens: set[str] = set()
        self._handles: dict[int, tuple[Path, Path]] = {}
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self._bootstrap = self.root / "driver_bootstrap.py"
        self._bootstrap.write_text(DRIVER_BOOTSTRAP)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DatabricksWorkspaceEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="databricks-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for run in list(self.runs.values()):
            run.cancel_requested.set()
        for run in list(self.runs.values()):
            run.finished.wait(timeout=30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DatabricksWorkspaceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault injection -----------------------------------------------------------------------

    def inject_http_fault(
        self, method: str, path: str, status: int, times: int = 1,
        retry_after: int | None = 0, message: str | None = None,
    ) -> HttpFault:
        """Answer the next `times` calls of `method path` with HTTP `status`.

        429 and 503 carry a Retry-After header (seconds; None leaves it out), as Databricks sends.
        """
        fault = HttpFault(method.upper(), path, status, times, retry_after, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next_run(self, message: str = "Cluster terminated. Reason: Driver unreachable") -> None:
        """The next submitted run ends in INTERNAL_ERROR before its task starts."""
        with self._lock:
            self._failing_runs.append(message)

    # -- observations --------------------------------------------------------------------------

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"emulator: waited {timeout:g}s for {what}")

    def local_path(self, path: str) -> Path:
        """The emulator's file for a DBFS path: `dbfs:/x`, `dbfs:///x`, `/dbfs/x` or `/x`."""
        if path.startswith("dbfs:"):
            path = path[len("dbfs:"):]
        elif path == "/dbfs" or path.startswith("/dbfs/"):
            path = path[len("/dbfs"):]
        if not path.startswith("/"):
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Path must be absolute: {path}")
        if ".." in path.split("/"):
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Path escapes DBFS: {path}")
        return self.dbfs_root / posixpath.normpath(path).lstrip("/")

    # -- request handling ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str], bool]:
        """Serve one request: (status, JSON answer, extra headers, injected fault?)."""
        fault = self._take_fault(method, path)
        if fault is not None:
            return (*self._fault_answer(fault), True)
        return (*self._serve_api(method, path, query, body, headers), False)

    def _serve_api(self, method: str, path: str, query: dict[str, str], body: dict[str, Any],
                   headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path == "/oidc/.well-known/oauth-authorization-server" and method == "GET":
            return 200, {
                "authorization_endpoint": f"{self.host}/oidc/v1/authorize",
                "token_endpoint": f"{self.host}/oidc/v1/token",
            }, {}
        if path == "/oidc/v1/token" and method == "POST":
            return self._oauth_token(headers, body)
        self._authenticate(headers)
        route = ROUTES.get((method, path))
        if route is None and method == "PATCH" and path.startswith("/api/2.0/permissions/"):
            route = DatabricksWorkspaceEmulator._permissions_update
        if route is None:
            raise EmulatorApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        return 200, route(self, path=path, query=query, body=body), {}

    def _take_fault(self, method: str, path: str) -> HttpFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.path == path and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    @staticmethod
    def _fault_answer(fault: HttpFault) -> tuple[int, dict[str, Any], dict[str, str]]:
        codes = {429: "REQUEST_LIMIT_EXCEEDED", 503: "TEMPORARILY_UNAVAILABLE"}
        default_messages = {
            429: "Too many requests. Please wait a moment and try again.",
            503: "The service is temporarily unavailable. Please try again.",
        }
        headers = {}
        if fault.status in (429, 503) and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        body = {
            "error_code": codes.get(fault.status, "INTERNAL_ERROR"),
            "message": fault.message or default_messages.get(fault.status, "Internal server error"),
        }
        return fault.status, body, headers

    def _authenticate(self, headers: dict[str, str]) -> None:
        value = headers.get("authorization", "")
        scheme, _, credential = value.partition(" ")
        if scheme.lower() == "bearer" and (
            (self.token is not None and credential == self.token)
            or credential in self._issued_oauth_tokens
        ):
            return
        raise EmulatorApiError(401, "UNAUTHENTICATED", "Invalid access token.")

    def _oauth_token(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        client_id = client_secret = ""
        if scheme.lower() == "basic":
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        if body.get("grant_type") != "client_credentials" or self.oauth_clients.get(client_id) != client_secret or not client_id:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}, {}
        access_token = f"emu-oauth-{token_generator.token_hex(12)}"
        with self._lock:
            self._issued_oauth_tokens.add(access_token)
        return 200, {"access_token": access_token, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"}, {}

    # -- DBFS ----------------------------------------------------------------------------------

    def _dbfs_create(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        target = self.local_path(_required(body, "path"))
        if target.exists() and not body.get("overwrite", False):
            raise EmulatorApiError(400, "RESOURCE_ALREADY_EXISTS", f"A file or directory already exists at the input path {body['path']}.")
        handle = next(self._ids)
        staging = self.dbfs_root.parent / "dbfs_handles" / str(handle)
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.write_bytes(b"")
        with self._lock:
            self._handles[handle] = (staging, target)
        return {"handle": handle}

    def _open_handle(self, body: dict[str, Any]) -> tuple[Path, Path]:
        handle = int(_required(body, "handle"))
        with self._lock:
            if handle not in self._handles:
                raise EmulatorApiError(400, "INVALID_STATE", f"There is no open stream with handle {handle}.")
            return self._handles[handle]

    def _dbfs_add_block(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        staging, _target = self._open_handle(body)
        data = base64.b64decode(_required(body, "data"))
        if len(data) > MAX_DBFS_BLOCK_BYTES:
            raise EmulatorApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", f"The block of {len(data)} bytes exceeds 1 MB.")
        with staging.open("ab") as handle:
            handle.write(data)
        return {}

    def _dbfs_close(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        staging, target = self._open_handle(body)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Readers see the whole file or nothing, as on DBFS.
        os.replace(staging, target)
        with self._lock:
            del self._handles[int(body["handle"])]
        return {}

    def _dbfs_read(self, *, query: dict[str, str], **_: Any) -> dict[str, Any]:
        path = _required(query, "path")
        local = self.local_path(path)
        if not local.is_file():
            raise EmulatorApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}.")
        offset = int(query.get("offset", 0))
        length = int(query.get("length", DEFAULT_DBFS_READ_BYTES))
        if length > MAX_DBFS_BLOCK_BYTES:
            raise EmulatorApiError(400, "MAX_READ_SIZE_EXCEEDED", f"Cannot read more than 1 MB, asked for {length} bytes.")
        with local.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        return {"bytes_read": len(data), "data": base64.b64encode(data).decode()}

    # -- jobs ----------------------------------------------------------------------------------

    def _runs_submit(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        tasks = body.get("tasks") or []
        if len(tasks) != 1 or "spark_python_task" not in tasks[0]:
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", "The emulator runs exactly one task, a spark_python_task.")
        task = tasks[0]
        if not (task.get("new_cluster") or task.get("existing_cluster_id")):
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", "One of new_cluster or existing_cluster_id must be given.")
        python_task = task["spark_python_task"]
        self.local_path(_required(python_task, "python_file"))
        run_id, job_id, task_run_id = next(self._ids), next(self._ids), next(self._ids)
        run = EmulatedRun(
            run_id=run_id,
            job_id=job_id,
            task_run_id=task_run_id,
            run_name=body.get("run_name", "Untitled"),
            task=task,
            cluster_id=task.get("existing_cluster_id") or f"0101-000000-emu{run_id}",
            timeout_seconds=int(body.get("timeout_seconds") or 0),
            submitted_at=time.time(),
        )
        with self._lock:
            self.submissions.append(body)
            self.runs[run_id] = run
            failure = self._failing_runs.pop(0) if self._failing_runs else None
        threading.Thread(target=self._execute, args=(run, failure), name=f"run-{run_id}", daemon=True).start()
        return {"run_id": run_id}

    def _run_or_error(self, run_id: Any) -> EmulatedRun:
        run = self.runs.get(int(run_id)) if str(run_id).isdigit() else None
        if run is None:
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        return run

    def _runs_get(self, *, query: dict[str, str], **_: Any) -> dict[str, Any]:
        run = self._run_or_error(_required(query, "run_id"))
        cluster_instance = {"cluster_id": run.cluster_id, "spark_context_id": str(run.run_id)}
        answer: dict[str, Any] = {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "run_name": run.run_name,
            "state": run.state(),
            "start_time": int(run.submitted_at * 1000),
            "run_page_url": f"{self.host}/#job/{run.job_id}/run/{run.run_id}",
            "run_type": "SUBMIT_RUN",
            "cluster_instance": cluster_instance,
            "tasks": [{
                "run_id": run.task_run_id,
                "task_key": run.task.get("task_key", "task"),
                "state": run.state(),
                "cluster_instance": cluster_instance,
                "spark_python_task": run.task["spark_python_task"],
                "libraries": run.task.get("libraries", []),
            }],
        }
        if run.ended_at is not None:
            answer["end_time"] = int(run.ended_at * 1000)
        return answer

    def _runs_get_output(self, *, query: dict[str, str], **_: Any) -> dict[str, Any]:
        # Databricks serves a task's output under the task's run id; the parent run's id is
        # accepted too (a legacy single-task run), which older callers use.
        asked = str(_required(query, "run_id"))
        by_task = {str(r.task_run_id): r for r in self.runs.values()}
        run = by_task[asked] if asked in by_task else self._run_or_error(asked)
        answer: dict[str, Any] = {"metadata": self._runs_get(query={"run_id": str(run.run_id)})}
        if run.error:
            answer["error"] = run.error
        log = self.runs_root / str(run.run_id) / "driver.log"
        if log.exists():
            answer["logs"] = log.read_text(errors="replace")[-5000:]
        return answer

    def _runs_cancel(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        run = self._run_or_error(_required(body, "run_id"))
        with self._lock:
            self.cancel_calls.append(run.run_id)
        run.cancel_requested.set()
        return {}

    def _permissions_update(self, *, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        parts = path.removeprefix("/api/2.0/permissions/").split("/")
        if len(parts) != 2:
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Expected /permissions/<type>/<id>, found {path}")
        object_type, object_id = parts
        if object_type == "jobs" and int(object_id) not in {r.job_id for r in self.runs.values()}:
            raise EmulatorApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Job {object_id} does not exist.")
        acl = body.get("access_control_list", [])
        with self._lock:
            self.permission_updates.append((object_type, object_id, acl))
        return {"object_id": f"/{object_type}/{object_id}", "object_type": object_type.rstrip("s"), "access_control_list": acl}

    def _clusters_get(self, *, query: dict[str, str], **_: Any) -> dict[str, Any]:
        cluster_id = _required(query, "cluster_id")
        runs = [r for r in self.runs.values() if r.cluster_id == cluster_id]
        if not runs:
            raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
        new_cluster = runs[-1].task.get("new_cluster") or {}
        running = any(r.life_cycle_state in ("PENDING", "RUNNING") for r in runs)
        return {
            "cluster_id": cluster_id,
            "cluster_name": f"job-{runs[-1].job_id}-run-{runs[-1].run_id}",
            "spark_version": new_cluster.get("spark_version", "15.4.x-scala2.12"),
            "state": "RUNNING" if running else "TERMINATED",
            "cluster_source": "JOB" if new_cluster else "UI",
        }

    # -- the cluster ---------------------------------------------------------------------------

    def _execute(self, run: EmulatedRun, failure: str | None) -> None:
        try:
            self._drive(run, failure)
        except Exception as exc:  # the emulator must never leave a run PENDING forever
            self._finish(run, "INTERNAL_ERROR", "FAILED", f"emulator error: {exc!r}")

    def _finish(self, run: EmulatedRun, life_cycle_state: str, result_state: str, message: str) -> None:
        run.life_cycle_state = life_cycle_state
        run.result_state = result_state
        run.state_message = message
        run.ended_at = time.time()
        run.finished.set()

    def _drive(self, run: EmulatedRun, failure: str | None) -> None:
        if failure is not None:
            self._finish(run, "INTERNAL_ERROR", "FAILED", failure)
            return
        run.life_cycle_state, run.state_message = "RUNNING", "In run"
        # A slow run: the task is busy (or the cluster slow to start) before the code runs.
        if run.cancel_requested.wait(self.task_start_delay_seconds):
            self._finish(run, "TERMINATED", "CANCELED", "Run cancelled.")
            return
        run_dir = self.runs_root / str(run.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        python_task = run.task["spark_python_task"]
        python_file = self.local_path(python_task["python_file"])
        parameters = [
            str(self.local_path(p)) if p.startswith(("/dbfs/", "dbfs:")) else p
            for p in python_task.get("parameters", [])
        ]
        report_path = run_dir / "driver_report.json"
        request = json.dumps({"secrets": self.secret_scopes, "report_path": str(report_path)})
        with (run_dir / "driver.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(self._bootstrap), str(python_file), *parameters],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
                env=self._driver_env(run),
                start_new_session=True,
            )
            run.driver_pid = process.pid
            assert process.stdin is not None
            process.stdin.write(request.encode())
            process.stdin.close()
            outcome = self._wait_for_driver(run, process)
        if report_path.exists():
            run.report = json.loads(report_path.read_text())
        if outcome == "canceled":
            self._finish(run, "TERMINATED", "CANCELED", "Run cancelled.")
        elif outcome == "timedout":
            self._finish(run, "TERMINATED", "TIMEDOUT", f"Run timed out after {run.timeout_seconds} seconds.")
        elif process.returncode == 0:
            self._finish(run, "TERMINATED", "SUCCESS", "")
        else:
            run.error = _last_error_line((run_dir / "driver.log").read_text(errors="replace"))
            self._finish(run, "TERMINATED", "FAILED", "Workload failed, see run output for details")

    def _wait_for_driver(self, run: EmulatedRun, process: subprocess.Popen[bytes]) -> str:
        started = time.monotonic()
        while process.poll() is None:
            timed_out = run.timeout_seconds and time.monotonic() - started > run.timeout_seconds
            if run.cancel_requested.wait(0.1) or timed_out:
                # The driver and anything it started (a Spark JVM) form one process group.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
                return "timedout" if timed_out and not run.cancel_requested.is_set() else "canceled"
        return "exited"

    def _driver_env(self, run: EmulatedRun) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        spark_version = (run.task.get("new_cluster") or {}).get("spark_version", "15.4.x-scala2.12")
        env.update({
            "PYTHONPATH": os.pathsep.join(self.library_paths),
            "PYTHONUNBUFFERED": "1",
            "DATABRICKS_RUNTIME_VERSION": ".".join(spark_version.split(".")[:2]),
            # Spark on the emulated driver: local mode, loopback only, no UI.
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            # A short-lived driver JVM spends most of its start in the JIT; C1 only halves it.
            "PYSPARK_SUBMIT_ARGS": (
                f"--master {self.spark_master} --conf spark.ui.enabled=false "
                "--conf spark.ui.showConsoleProgress=false "
                "--conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 "
                "--conf spark.sql.shuffle.partitions=2 "
                '--driver-java-options "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" pyspark-shell'
            ),
        })
        return env


ROUTES: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
    ("POST", "/api/2.0/dbfs/create"): DatabricksWorkspaceEmulator._dbfs_create,
    ("POST", "/api/2.0/dbfs/add-block"): DatabricksWorkspaceEmulator._dbfs_add_block,
    ("POST", "/api/2.0/dbfs/close"): DatabricksWorkspaceEmulator._dbfs_close,
    ("GET", "/api/2.0/dbfs/read"): DatabricksWorkspaceEmulator._dbfs_read,
    ("POST", "/api/2.2/jobs/runs/submit"): DatabricksWorkspaceEmulator._runs_submit,
    ("GET", "/api/2.2/jobs/runs/get"): DatabricksWorkspaceEmulator._runs_get,
    ("GET", "/api/2.2/jobs/runs/get-output"): DatabricksWorkspaceEmulator._runs_get_output,
    ("POST", "/api/2.2/jobs/runs/cancel"): DatabricksWorkspaceEmulator._runs_cancel,
    ("GET", "/api/2.1/clusters/get"): DatabricksWorkspaceEmulator._clusters_get,
}


def _required(mapping: dict[str, Any], key: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise EmulatorApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {key}")
    return mapping[key]


def _last_error_line(log: str) -> str:
    """The exception line of a Python traceback, as Databricks shows a failed task's error."""
    lines = [line for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith((" ", "\t")) and ("Error" in line or "Exception" in line):
            return line
    return lines[-1] if lines else "the driver exited without output"


class _Handler(BaseHTTPRequestHandler):
    emulator: DatabricksWorkspaceEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are recorded in emulator.requests; stderr would only clutter test output.
        return

    def _serve(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        injected = False
        try:
            body = _parse_body(raw, headers.get("content-type", ""))
            status, answer, extra_headers, injected = self.emulator.handle(self.command, path, query, body, headers)
        except EmulatorApiError as exc:
            status, answer, extra_headers = exc.status, {"error_code": exc.error_code, "message": exc.message}, {}
        except Exception as exc:
            status, answer, extra_headers = 500, {"error_code": "INTERNAL_ERROR", "message": f"emulator: {exc!r}"}, {}
        with self.emulator._lock:
            self.emulator.requests.append(RecordedRequest(self.command, path, status, injected))
        payload = json.dumps(answer).encode()
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
    do_PATCH = _serve


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    return json.loads(raw)


@contextmanager
def running_emulator(root: Path, **kwargs: Any) -> Iterator[DatabricksWorkspaceEmulator]:
    """Start an emulator for the duration of a `with` block; runs still going are cancelled."""
    emulator = DatabricksWorkspaceEmulator(root, **kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
