"""Crash recovery: killed run workers, killed writers and MLflow runs nobody closed.

A worker killed with SIGKILL gets no chance to clean up. What must happen instead: its Dagster
run is marked failed by run monitoring (so the day's slot in the run queue frees up), its MLflow
run is ended by the next run of that asset and partition, and its temporary files are removed
by the next write beside them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    in_process_executor,
    job,
    op,
)
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.keys import FEATURES, RAW_DATA, PipelineKeys
from tabml_assets.processes import host_name, process_alive_since, process_start_time
from tabml_assets.resources.model_registry import ASSET_KEY_TAG, ENDED_BY_TAG, ModelRegistry
from tabml_assets.resources.storage import (
    STALE_TEMP_AGE_SECONDS,
    PartitionStore,
    remove_stale_temp_files,
    write_parquet_atomic,
)
from tabml_assets.run_launcher import MonitoredDefaultRunLauncher
from tabml_assets.seed import run_selection
from tabml_assets.spec import load_spec
from tabml_assets_tests.conftest import running_mlflow_runs
from tabml_assets_tests.dagster_dev_server import (
    REPO_ROOT,
    DagsterDev,
    dagster_dev,
    kill_process_group,
    write_instance_yaml,
)
from tabml_assets_tests.test_automation import NYC_TAXI_ONLY, edit_profile, edit_project_profile

INFRA = REPO_ROOT / "infra" / "dagster"
KEYS = PipelineKeys("nyc_taxi")
DAY = "2026-03-09"
WINDOW = ("2026-03-07", DAY)
# The test instance: the dev instance's run monitoring, with timeouts a test can wait out.
TEST_MONITORING = {"poll_interval_seconds": 2, "start_timeout_seconds": 60, "cancel_timeout_seconds": 10}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"waited {timeout:g}s for {what}")


def spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen]]:
    """Subprocesses a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# --- the instance configs --------------------------------------------------------------------


def test_dev_and_prod_instances_monitor_runs_with_a_launcher_that_checks_workers(tmp_path: Path) -> None:
    dev = yaml.safe_load((INFRA / "dagster.dev.yaml").read_text())
    prod = yaml.safe_load((INFRA / "dagster.prod.yaml").read_text())
    for name, config in (("dagster.dev.yaml", dev), ("dagster.prod.yaml", prod)):
        monitoring = config["run_monitoring"]
        assert monitoring["enabled"] is True, name
        assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0, name
        # The DefaultRunLauncher cannot resume a run: a resume attempt would raise in the daemon.
        assert monitoring["max_resume_run_attempts"] == 0, name
        assert config["run_launcher"] == {"module": "tabml_assets.run_launcher", "class": "MonitoredDefaultRunLauncher"}, name

    # The dev config loads as a real instance, and its launcher answers the monitor's question.
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert isinstance(instance.run_launcher, MonitoredDefaultRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
        assert not instance.run_launcher.supports_resume_run


# --- the run worker health check ---------------------------------------------------------------

GATE_ENV = "TABML_TEST_GATE"


@op
def wait_at_the_gate() -> None:
    """Blocks while the gate file exists: a run worker caught mid-run."""
    gate = Path(os.environ[GATE_ENV])
    while gate.exists():
        time.sleep(0.1)


@job(executor_def=in_process_executor)
def gated_job() -> None:
    wait_at_the_gate()


SCRIPT_RUN = """
    import sys
    from dagster import DagsterInstance, execute_job, reconstructable
    from tabml_assets_tests.test_crash_recovery import gated_job

    with DagsterInstance.from_config(sys.argv[1]) as instance:
        execute_job(reconstructable(gated_job), instance=instance)
"""


def started_run(instance: DagsterInstance) -> str | None:
    records = instance.get_run_records()
    if records and records[0].dagster_run.status == DagsterRunStatus.STARTED:
        return records[0].dagster_run.run_id
    return None


def test_health_check_leaves_alone_runs_no_code_location_launched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_processes: list[subprocess.Popen]
) -> None:
    # A run a script executes against the instance (`execute_job`, `dagster job execute`) may
    # run on any machine: its pid says nothing here, so the monitor must never fail it. (Runs
    # the launcher started are checked for real in the dagster dev test below.)
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv(GATE_ENV, str(gate))
    worker = spawn(SCRIPT_RUN, str(home))
    worker_processes.append(worker)
    with DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, MonitoredDefaultRunLauncher)
        run_id = wait_until(lambda: started_run(instance), 120, "the script to start the run")
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.remote_job_origin is None
        recorded = launcher.run_worker(run_id)
        assert recorded is not None and recorded.pid == worker.pid
        sigkill(worker)
        verdict = launcher.check_run_worker_health(run)
        assert verdict.status.value == "RUNNING" and verdict.msg == "run worker not on this machine"


def test_a_reused_pid_is_not_taken_for_the_process_that_died(worker_processes: list[subprocess.Popen]) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker_processes.append(sleeper)
    started = wait_until(lambda: process_start_time(sleeper.pid), 10, "the process's start time")
    assert abs(started - time.time()) < 30
    # The same pid, last seen working before this process existed: a different process.
    assert process_alive_since(sleeper.pid, seen_working_at=started + 1)
    assert not process_alive_since(sleeper.pid, seen_working_at=started - 3600)
    sigkill(sleeper)
    assert not process_alive_since(sleeper.pid, seen_working_at=started + 1)


# --- temporary files of killed writers ----------------------------------------------------------

KILLED_WRITER = """
    import sys, time
    from pathlib import Path
    from tabml_assets.resources.storage import atomic_write_bytes

    def write_forever(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"x" * 1000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(600)

    atomic_write_bytes(Path(sys.argv[1]), write_forever)
"""


def start_writer(target: Path, processes: list[subprocess.Popen]) -> tuple[subprocess.Popen, Path]:
    """A real writer of `target`, caught mid-write; returns it and its temporary file."""
    writer = spawn(KILLED_WRITER, str(target))
    processes.append(writer)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"writing"
    (temp,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return writer, temp


def test_the_next_write_removes_what_a_killed_writer_left(
    tmp_path: Path, worker_processes: list[subprocess.Popen]
) -> None:
    import pandas as pd

    store = PartitionStore(root=str(tmp_path / "data"))
    folder = store.asset_folder(KEYS.features)
    day = store.path(KEYS.features, DAY)
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), day)
    writer, temp = start_writer(day, worker_processes)
    assert temp.name.startswith(f".{day.name}.{host_name()}.{writer.pid}.") and temp.suffix == ".tmp"

    # While its writer lives, the temporary file is its business: another write leaves it.
    store.write_frame(KEYS.features, "2026-03-08", pd.DataFrame({"x": [3]}))
    assert temp.exists()

    sigkill(writer)
    assert temp.exists(), "nothing removes it by itself"
    # The next run writes any partition of the asset: the dead writer's temp file goes.
    store.write_frame(KEYS.features, "2026-03-10", pd.DataFrame({"x": [4]}))
    assert not temp.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["2026-03-08.parquet", f"{DAY}.parquet", "2026-03-10.parquet"]
    assert pd.read_parquet(day)["x"].tolist() == [1, 2]


def test_temp_files_of_other_machines_go_after_a_day_and_other_files_stay(tmp_path: Path) -> None:
    folder = tmp_path / "raw_data"
    folder.mkdir()
    now = time.time()
    day_old = now - STALE_TEMP_AGE_SECONDS - 60
    files = {
        # A Databricks driver's temp file and Spark output folder: their writer cannot be looked at.
        "recent_remote": folder / f".{DAY}.parquet.0123-456789-driver.4242.k2j3h4l5.tmp",
        "old_remote": folder / f".{DAY}.parquet.0123-456789-driver.4242.a1b2c3d4.tmp",
        "old_spark": folder / f".{DAY}.parquet.0123-456789-driver.4242.spark-{'0' * 32}.tmp",
        # Left by tabml before temp names carried a host and pid.
        "old_unnamed": folder / f".{DAY}.parquet.q8w7e6r5.tmp",
        # Not ours, however old.
        "users_own": folder / ".notes.tmp",
        "partition": folder / f"{DAY}.parquet",
    }
    for name, path in files.items():
        if name == "old_spark":
            path.mkdir()
            (path / "part-00000.parquet").write_bytes(b"part")
        else:
            path.write_bytes(b"data")
        if name != "recent_remote":
            os.utime(path, (day_old, day_old))

    removed = remove_stale_temp_files(folder)
    assert sorted(removed) == sorted([files["old_remote"], files["old_spark"], files["old_unnamed"]])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        files[k].name for k in ("recent_remote", "users_own", "partition")
    )


# --- MLflow runs a dead worker left RUNNING ---------------------------------------------------------

TRAINING_WORKER = """
    import sys, time
    from tabml_assets.resources.model_registry import ModelRegistry

    uri, run_id, partition = sys.argv[1:]
    registry = ModelRegistry(tracking_uri=uri, registry_uri=uri, experiment_name="tabml-test-nyc_taxi", model_name="m")
    tags = {"dagster.run_id": run_id, "dagster.asset_key": "nyc_taxi/trained_model", "dagster.partition_key": partition}
    with registry.run(f"train {partition}", tags) as active:
        print(active.info.run_id, flush=True)
        time.sleep(600)
"""


def tags_for(dagster_run_id: str, partition: str) -> dict[str, str]:
    return {
        "dagster.run_id": dagster_run_id,
        "dagster.asset_key": "nyc_taxi/trained_model",
        "dagster.partition_key": partition,
    }


def test_the_next_run_of_a_partition_ends_the_mlflow_run_a_killed_worker_left(
    tabml_home: Path, worker_processes: list[subprocess.Popen]
) -> None:
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    registry = ModelRegistry(tracking_uri=uri, registry_uri=uri, experiment_name="tabml-test-nyc_taxi", model_name="m")
    # A run of another partition, still going in a live worker: not this partition's business.
    other = client.create_run(registry.experiment_id(), tags=tags_for("live-run", "2026-03-08"))

    worker = spawn(TRAINING_WORKER, uri, "killed-run", DAY)
    worker_processes.append(worker)
    assert worker.stdout is not None
    orphan_id = worker.stdout.readline().decode().strip()
    sigkill(worker)
    assert client.get_run(orphan_id).info.status == "RUNNING"

    with registry.run(f"train {DAY}", tags_for("next-run", DAY)) as active:
        assert client.get_run(orphan_id).info.status == RunStatus.to_string(RunStatus.KILLED)
        new_id = active.info.run_id
    orphan = client.get_run(orphan_id)
    assert orphan.info.end_time is not None
    assert orphan.data.tags[ENDED_BY_TAG].startswith("dagster run next-run")
    assert client.get_run(new_id).info.status == "FINISHED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    client.set_terminated(other.info.run_id)  # the live worker finishing
    assert running_mlflow_runs(uri) == []


# --- the whole thing, for real: dagster dev killed mid-run ----------------------------------------

GATED_ESTIMATOR = '''

# Added by test_crash_recovery: training waits while the gate file exists, inside its MLflow run.
import os as _os
import time as _time
from pathlib import Path as _Path

from sklearn.ensemble import HistGradientBoostingRegressor as _Regressor

TRAINING_GATE = _Path(__file__).with_name("training_gate")
TRAINING_STARTED = _Path(__file__).with_name("training_started")


def gated_regressor(**params):
    TRAINING_STARTED.write_text(str(_os.getpid()))
    while TRAINING_GATE.exists():
        _time.sleep(0.2)
    return _Regressor(**params)
'''

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""
RUN_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { status } }
}
"""


def launch_training(server: DagsterDev) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "tabml_assets",
            "repositoryName": "__repository__",
            "jobName": KEYS.job("training_job"),
            "assetSelection": [{"path": list(KEYS.trained_model.path)}],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
        "runConfigData": {},
    }
    answer = server.graphql(LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def run_status(server: DagsterDev, run_id: str) -> str:
    return server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]


@pytest.mark.slow
def test_a_run_killed_with_dagster_dev_fails_and_its_day_runs_again(
    conf_dir: Path, project_dir: Path, tabml_home: Path, tmp_path: Path
) -> None:
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home, run_monitoring=TEST_MONITORING)
    edit_profile(conf_dir, projects=NYC_TAXI_ONLY)
    # The training window's features, ingested in the instance `dagster dev` will use.
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run_selection(build_definitions(spec), instance, spec.keys.assets(RAW_DATA, FEATURES), partition_range=WINDOW)
    # Then training that stops inside its MLflow run until the gate opens.
    steps = project_dir / "steps.py"
    steps.write_text(steps.read_text() + GATED_ESTIMATOR)
    edit_project_profile(project_dir, pipeline_overrides={"estimator": {"class": "steps:gated_regressor"}})
    gate, started = project_dir / "training_gate", project_dir / "training_started"
    gate.touch()
    env = {"TABML_CONF_DIR": str(conf_dir)}
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)

    with dagster_dev(tabml_home, dagster_home, extra_env=env) as server:
        killed_run = launch_training(server)
        wait_until(started.exists, 180, f"training to start\n{server.log()[-3000:]}")
        # The step's run and the Dagster run's parent run it is nested under.
        running = wait_until(lambda: len(found := running_mlflow_runs(uri)) == 2 and found, 30, "its MLflow runs")
        (orphan,) = [r for r in running if ASSET_KEY_TAG in client.get_run(r).data.tags]
        assert run_status(server, killed_run) == "STARTED"
        worker_pid = int(started.read_text())
        kill_process_group(server.process)
    assert process_start_time(worker_pid) is None, "the run worker outlived the kill"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        record = instance.get_run_by_id(killed_run)
        assert record is not None and record.status == DagsterRunStatus.STARTED  # what a crash leaves
    gate.unlink()

    with dagster_dev(tabml_home, dagster_home, extra_env=env) as server:
        restarted = time.monotonic()
        # Launched at once: it queues behind the dead run's slot for the day until that frees.
        next_run = launch_training(server)
        wait_until(lambda: run_status(server, killed_run) == "FAILURE", 90, f"the killed run to fail\n{server.log()[-3000:]}", 0.5)
        failed_after = time.monotonic() - restarted
        status = wait_until(
            lambda: (s := run_status(server, next_run)) in ("SUCCESS", "FAILURE", "CANCELED") and s,
            240, f"the next run to finish\n{server.log()[-3000:]}", 1,
        )
        assert status == "SUCCESS", server.log()[-4000:]

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        failure = instance.get_records_for_run(killed_run, of_type=DagsterEventType.RUN_FAILURE).records
        event = failure[0].event_log_entry.dagster_event
        assert event is not None and f"pid {worker_pid} on this machine) is gone" in (event.message or "")
        first = instance.get_run_record_by_id(killed_run)
        second = instance.get_run_record_by_id(next_run)
        assert first is not None and second is not None
        assert second.start_time is not None and first.end_time is not None
        assert second.start_time >= first.end_time, "the day's two runs overlapped"
    # The monitor polls every 2 s; the rest is the daemon starting up.
    assert failed_after < 60, failed_after
    print(f"killed run marked FAILURE {failed_after:.1f} s after the restart")  # noqa: T201

    # The dead worker's MLflow run was ended by the next run of its partition; nothing is RUNNING.
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags[ENDED_BY_TAG].startswith(f"dagster run {next_run}")
    assert running_mlflow_runs(uri) == []
    finished = client.search_runs(
        [client.get_experiment_by_name("tabml-test-nyc_taxi").experiment_id],  # type: ignore[union-attr]
        filter_string=f"tags.`dagster.run_id` = '{next_run}'",
    )
    assert [r.info.status for r in finished] == ["FINISHED"]
