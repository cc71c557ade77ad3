"""The production Dagster instance (infra/dagster/dagster.prod.yaml) against a real PostgreSQL 15:
a tabml job runs on it and its run, events and materializations land in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, Definitions
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec
from tabml_assets_tests.conftest import TODAY

# Starts a real server (mlflow server / PostgreSQL): left out of `make test-fast`.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PROD_INSTANCE_YAML = REPO_ROOT / "infra" / "dagster" / "dagster.prod.yaml"
PG_BIN = Path(os.environ.get("TABML_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "tabml"
PG_PASSWORD = "pg-test-password"  # a throwaway server in a temp folder, gone after the test
PG_DATABASE = "dagster"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.database
        )


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root: as root, run its binaries as `nobody`."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": pwd.getpwnam("nobody").pw_gid, "extra_groups": []}


def _run_pg(args: list[str], log: Path) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **_server_user())
    if result.returncode != 0:
        server_log = log.read_text() if log.exists() else "(no server log)"
        raise RuntimeError(
            f"{args[0]} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
            f"server log {log}:\n{server_log}"
        )


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists():
        reason = (
            f"PostgreSQL 15 binaries not found in {PG_BIN}: `make install` installs Debian's "
            "postgresql package (or point TABML_PG_BIN at a PostgreSQL bin folder)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    # Not under pytest's tmp_path: that is private to root, and the server runs as `nobody`.
    root = Path(tempfile.mkdtemp(prefix="tabml-pg-"))
    data_dir, log, password_file = root / "data", root / "server.log", root / "password"
    password_file.write_text(PG_PASSWORD)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        os.chown(password_file, nobody.pw_uid, nobody.pw_gid)
    port = _free_loopback_port()
    server = PostgresServer("127.0.0.1", port, PG_USER, PG_PASSWORD, PG_DATABASE)
    try:
        _run_pg(
            [str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", PG_USER, f"--pwfile={password_file}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"],
            log,
        )
        # TCP on loopback only and no Unix socket: nothing outside this machine can reach it,
        # and no system socket directory has to be writable.
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off"
        _run_pg([str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options, "-w", "-t", "60", "start"], log)
        admin = psycopg2.connect(host=server.host, port=port, user=PG_USER, password=PG_PASSWORD, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
        admin.close()
        yield server
    finally:
        if (data_dir / "postmaster.pid").exists():
            _run_pg([str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], log)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def prod_instance(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """dagster.prod.yaml installed as a DAGSTER_HOME, its connection filled from the environment."""
    monkeypatch.setenv("DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("DAGSTER_PG_DB", postgres_server.database)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROD_INSTANCE_YAML, home / "dagster.yaml")
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield instance


def test_prod_instance_keeps_runs_events_and_schedules_in_postgres(prod_instance: DagsterInstance) -> None:
    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(prod_instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(prod_instance.run_coordinator, QueuedRunCoordinator)
    # The password reaches the storage only through the environment, never the file.
    assert PG_PASSWORD not in PROD_INSTANCE_YAML.read_text()


def test_tabml_job_runs_against_the_prod_instance(
    prod_instance: DagsterInstance,
    postgres_server: PostgresServer,
    test_spec: LoadedSpec,
    test_defs: Definitions,
) -> None:
    partition = (TODAY - dt.timedelta(days=1)).isoformat()
    keys = test_spec.keys
    result = run_selection(test_defs, prod_instance, [keys.raw_data, keys.features], partition_key=partition)
    assert result.success, f"run {result.run_id} failed on the prod instance"

    # Straight from PostgreSQL, not through Dagster's API: the rows are really there.
    with closing(postgres_server.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [(DagsterRunStatus.SUCCESS.value,)]
        cursor.execute(
            "SELECT dagster_event_type, asset_key, partition FROM event_logs WHERE run_id = %s",
            (result.run_id,),
        )
        events = cursor.fetchall()
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        tables = {row[0] for row in cursor.fetchall()}
    event_types = {event_type for event_type, _, _ in events}
    expected_types = [
        DagsterEventType.RUN_START, DagsterEventType.STEP_SUCCESS,
        DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.RUN_SUCCESS,
    ]
    assert {t.value for t in expected_types} <= event_types
    materialized = {
        (key, part) for event_type, key, part in events
        if event_type == DagsterEventType.ASSET_MATERIALIZATION.value
    }
    # Asset keys are stored as their JSON path: the project, then the asset.
    assert materialized == {
        ('["nyc_taxi", "raw_data"]', partition), ('["nyc_taxi", "raw_data_quarantine"]', partition),
        ('["nyc_taxi", "features"]', partition),
    }
    # Schedule storage lives in the same database: the daemon's schedules and ticks land here.
    assert {"runs", "event_logs", "jobs", "job_ticks", "instigators"} <= tables

    # A second instance built from the same file (as the webserver or daemon would) sees the run.
    home = Path(prod_instance.root_directory)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as other_process_view:
        stored = other_process_view.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == DagsterRunStatus.SUCCESS
        latest = other_process_view.get_latest_materialization_event(keys.features)
        assert latest is not None and latest.run_id == result.run_id
