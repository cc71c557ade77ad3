"""The staging deployment, pointed at the loopback Databricks workspace emulator.

The step launcher ships a step only from a reconstructable job, so these tests run real
`execute_job` runs: each heavy step is uploaded to the emulator's DBFS, submitted with
`jobs/runs/submit`, re-created in the emulator's driver subprocess (secrets from the scope,
`dbutils` and `sc` as globals) and its events come back into the Dagster run. The driver gets no
environment from the test: TABML_* arrive through the launcher's `env_variables`, the host and
token through `secrets_to_env_variables`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    Failure,
    JobDefinition,
    RetryPolicy,
    RetryRequested,
    build_init_resource_context,
    build_resources,
    define_asset_job,
    execute_job,
    in_process_executor,
    reconstructable,
    resource,
)
from dagster._core.definitions.dependency import NodeHandle
from dagster._core.errors import DagsterResourceFunctionError
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info
from databricks.sdk.errors import DatabricksError

from tabml_assets.definitions import build_definitions, load_definitions
from tabml_assets.keys import ASSET_NAMES, PipelineKeys
from tabml_assets.ml.schema import raw_columns, raw_schema, unvalidated_schema
from tabml_assets.resources.data_sources import READ_PROBLEMS_COLUMN, as_unvalidated_rows
from tabml_assets.resources.databricks import (
    AUTH_ENV_VARS,
    DatabricksConfigError,
    credential_problems,
    launcher_config,
    remote_start_failure,
    step_launcher_config,
)
from tabml_assets.resources.databricks_table import DatabricksTableSource, MissingColumnsError
from tabml_assets.resources.retries import is_transient_error_info
from tabml_assets.resources.storage import PartitionStore
from tabml_assets.spec import load_spec
from tabml_assets_tests.databricks_emulator import DatabricksWorkspaceEmulator, running_emulator

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "dapi-staging-emulator"
PARTITION = "2026-03-09"
PROJECT = "nyc_taxi"
KEYS = PipelineKeys(PROJECT)
PIPELINE_ASSETS = ASSET_NAMES
# Every pipeline asset reads or writes the workspace volume, so every one runs on the cluster.
HEAVY_ASSETS = PIPELINE_ASSETS
ROWS_PER_DAY = 1200
# The nyc_taxi example's dataset and demo trips (its steps module), as the staging profile runs it.
EXAMPLE = load_spec("test")
DATASET = EXAMPLE.pipeline.dataset
RAW_SCHEMA = raw_schema(DATASET)


def generate_demo_trips(day: dt.date, rows: int) -> pd.DataFrame:
    assert EXAMPLE.steps.demo_rows is not None
    return EXAMPLE.steps.demo_rows(day, rows)


def table_source(table: str) -> DatabricksTableSource:
    return DatabricksTableSource(dataset_spec=DATASET.model_dump_json(), table=table)


def staging_job() -> JobDefinition:
    """The staging end-to-end job, rebuilt from TABML_* wherever it is reconstructed."""
    return load_definitions().resolve_job_def(KEYS.job("end_to_end_job"))


def staging_asset_job(name: str, assets: tuple[str, ...]) -> JobDefinition:
    """A staging job over `assets` with the promotion gate, local steps in the run process.

    The heavy steps still go to the cluster; the data-quality and drift checks are left out
    (they are tested elsewhere) and local steps share one process, which keeps the test's
    Python starts down on a shared 2-core machine.
    """
    defs = load_definitions()
    # raw_data's quarantine comes from the same step, so it is selected with raw_data.
    selection = AssetSelection.assets(*KEYS.assets(*assets)).required_multi_asset_neighbors().without_checks()
    if "evaluation_report" in assets:
        selection = selection | AssetSelection.checks_for_assets(KEYS.evaluation_report)
    job = define_asset_job(name, selection=selection, executor_def=in_process_executor)
    return Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources
    ).resolve_job_def(name)


def staging_training_job() -> JobDefinition:
    return staging_asset_job("staging_training", PIPELINE_ASSETS[:-1])


def staging_scoring_job() -> JobDefinition:
    return staging_asset_job("staging_scoring", ("batch_predictions",))


def staging_ingestion_job() -> JobDefinition:
    return staging_asset_job("staging_ingestion", ("raw_data",))


@dataclass
class Staging:
    emulator: DatabricksWorkspaceEmulator
    conf_dir: Path
    project_dir: Path
    tabml_home: Path
    table_dir: Path

    @property
    def store(self) -> PartitionStore:
        """The volume storage both sides see (the emulated volume is a folder of the test)."""
        return PartitionStore(root=str(self.tabml_home / "data"))


def write_trips_table(folder: Path, day: dt.date) -> Path:
    """A parquet table of demo trips for `day` and its neighbours, read as parquet.`folder`."""
    folder.mkdir(parents=True)
    for offset in (-1, 0, 1):
        other = day + dt.timedelta(days=offset)
        generate_demo_trips(other, ROWS_PER_DAY).to_parquet(folder / f"trips-{other}.parquet", index=False)
    return folder


def write_staging_profile(conf_dir: Path, project_dir: Path, tabml_home: Path, table: str) -> None:
    """The packaged staging profile, with storage and MLflow local and a fast poll; the project's
    own profiles/staging.yaml names its table and shrinks its model."""
    path = conf_dir / "profiles" / "staging.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["data_source"] = {"kind": "databricks_table"}
    profile["storage"] = {"root": "data", "artifacts": "artifacts"}
    profile["mlflow"] = {
        "tracking_uri": "sqlite:///{tabml_home}/mlflow.db",
        "registry_uri": "sqlite:///{tabml_home}/mlflow.db",
        "artifact_location": "{tabml_home}/mlartifacts",
        "experiment_name": "tabml-staging-{project}",
        "model_name": "tabml_{project}",
    }
    profile["databricks"]["poll_interval_sec"] = 0.5
    profile["databricks"]["env_variables"] = {"TABML_CONF_DIR": str(conf_dir), "TABML_HOME": str(tabml_home)}
    path.write_text(yaml.safe_dump(profile))
    project_profile = {
        "data_source": {"table": table},
        "pipeline_overrides": {"training_window_days": 1, "estimator": {"params": {"max_iter": 40}}},
    }
    (project_dir / "profiles" / "staging.yaml").write_text(yaml.safe_dump(project_profile))


@pytest.fixture
def staging(
    tmp_path: Path, conf_dir: Path, project_dir: Path, tabml_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Staging]:
    table_dir = write_trips_table(tmp_path / "trips_table", dt.date.fromisoformat(PARTITION))
    write_staging_profile(conf_dir, project_dir, tabml_home, f"parquet.`{table_dir}`")
    with running_emulator(tmp_path / "workspace", token=TOKEN, library_paths=[str(REPO_ROOT)]) as emulator:
        emulator.secret_scopes["tabml-staging"] = {"databricks-host": emulator.host, "databricks-token": TOKEN}
        for name, value in {
            "TABML_DEPLOYMENT": "staging", "TABML_CONF_DIR": str(conf_dir), "TABML_HOME": str(tabml_home),
            "DATABRICKS_HOST": emulator.host, "DATABRICKS_TOKEN": TOKEN,
        }.items():
            monkeypatch.setenv(name, value)
        yield Staging(emulator, conf_dir, project_dir, tabml_home, table_dir)


def run_staging(instance: DagsterInstance, job_fn: Callable[[], JobDefinition]) -> Any:
    return execute_job(reconstructable(job_fn), instance=instance, tags={"dagster/partition": PARTITION})


def step_events(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> list:
    return [
        record.event_log_entry.dagster_event
        for record in instance.get_records_for_run(run_id, of_type=event_type).records
    ]


@pytest.mark.parametrize("deployment", ["staging", "prod"])
def test_definitions_validate_and_the_launcher_authenticates_from_the_environment(
    deployment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(deployment)
    auth_env = AUTH_ENV_VARS[spec.profile.databricks.auth]
    # Dummy values: definitions validate and resource config resolves without a workspace.
    for name in auth_env:
        monkeypatch.setenv(name, f"dummy-{name.lower()}")
    defs = build_definitions(spec)
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(spec.keys.job("end_to_end_job"))
    assert job.name == "nyc_taxi_end_to_end_job"
    # dagster-databricks' schema applies when the launcher starts (so the code location loads
    # without importing it): the same defaults and environment reads as Dagster's own config.
    configured = ResolvedRunConfig.build(job, {}).resources["step_launcher"].config
    assert launcher_config(configured)["databricks_host"] == "dummy-databricks_host"
    # No credential is ever a literal in config: only environment variable names.
    assert "dummy-" not in json.dumps(step_launcher_config(spec))
    heavy = {key.to_user_string() for assets_def in defs.resolve_asset_graph().assets_defs
             if "step_launcher" in assets_def.required_resource_keys for key in assets_def.keys}
    assert {key.to_user_string() for key in spec.keys.assets(*HEAVY_ASSETS)} <= heavy

    # Real values, on the loopback emulator: the launcher authenticates with them (a PAT for
    # staging, an OAuth service principal for prod) and no other way.
    with running_emulator(tmp_path / "workspace", token=None, oauth_clients={"sp-id": "sp-secret"}) as emulator:
        if spec.profile.databricks.auth == "pat":
            emulator.token = "dapi-real"
            values = {"DATABRICKS_TOKEN": "dapi-real"}
        else:
            values = {"DATABRICKS_CLIENT_ID": "sp-id", "DATABRICKS_CLIENT_SECRET": "sp-secret"}
        for name, value in {"DATABRICKS_HOST": emulator.host, **values}.items():
            monkeypatch.setenv(name, value)
        configured = ResolvedRunConfig.build(job, {}).resources["step_launcher"].config
        launcher = job.resource_defs["step_launcher"].resource_fn(build_init_resource_context(config=configured))
        with pytest.raises(DatabricksError) as absent:
            launcher.databricks_runner.client.read_file("dbfs:///dagster_staging/absent")
        assert absent.value.error_code == "RESOURCE_DOES_NOT_EXIST"  # authenticated, then served
        token_calls = emulator.calls("POST", "/oidc/v1/token")
        assert [c.status for c in token_calls] == ([200] if spec.profile.databricks.auth == "oauth_m2m" else [])


@pytest.mark.slow
def test_staging_pipeline_runs_its_heavy_steps_on_the_emulated_cluster(
    staging: Staging, instance: DagsterInstance
) -> None:
    emulator = staging.emulator
    # Transient control-plane answers on the way: databricks-sdk retries them by itself.
    emulator.inject_http_fault("POST", "/api/2.2/jobs/runs/submit", 429, times=1)
    emulator.inject_http_fault("GET", "/api/2.2/jobs/runs/get", 503, times=2)
    emulator.inject_http_fault("POST", "/api/2.0/dbfs/create", 503, times=1)

    # Scoring reads the champion alias, so it runs once training has promoted a model.
    trained = run_staging(instance, staging_training_job)
    assert trained.success
    scored = run_staging(instance, staging_scoring_job)
    assert scored.success

    # One Databricks run per heavy step, each on the profile's cluster with the tabml wheel.
    # Steps are named for the project's asset keys (nyc_taxi__raw_data, ...).
    submitted = {s["tasks"][0]["spark_python_task"]["parameters"][0].split("/")[-2]: s for s in emulator.submissions}
    assert sorted(submitted) == sorted(f"{PROJECT}__{asset}" for asset in HEAVY_ASSETS)
    task = emulator.submissions[0]["tasks"][0]
    assert task["new_cluster"]["autoscale"] == {"min_workers": 1, "max_workers": 4}
    libraries = [lib.get("whl") or lib["pypi"]["package"] for lib in task["libraries"]]
    assert libraries[0].endswith("tabml-0.1.0-py3-none-any.whl")
    assert any(lib.startswith("scikit-learn==") for lib in libraries)
    assert all(run.result_state == "SUCCESS" for run in emulator.runs.values())

    # The steps ran in the driver subprocesses: their events carry the driver's pid.
    driver_pids = {run.driver_pid for run in emulator.runs.values()}
    materializations = [
        event for result in (trained, scored)
        for event in step_events(instance, result.run_id, DagsterEventType.ASSET_MATERIALIZATION)
    ]
    by_asset = {e.asset_key: e for e in materializations}
    assert set(by_asset) == {*KEYS.assets(*PIPELINE_ASSETS), KEYS.quarantine}
    for asset in KEYS.assets(*HEAVY_ASSETS):
        assert by_asset[asset].pid in driver_pids, asset

    # Secrets arrived as environment variables; TABML_* through env_variables.
    for run in emulator.runs.values():
        assert run.report is not None
        assert run.report["env_from_secrets"] == ["DATABRICKS_HOST", "DATABRICKS_TOKEN"]
        assert run.report["tabml_env"]["TABML_DEPLOYMENT"] == "staging"
        assert run.report["tabml_env"]["TABML_HOME"] == str(staging.tabml_home)

    # Outputs are in the storage both sides see, under the project, for the partition's day only.
    raw_path = staging.store.path(KEYS.raw_data, PARTITION)
    assert raw_path == staging.tabml_home / "data" / PROJECT / "raw_data" / f"{PARTITION}.parquet"
    raw = staging.store.read_frame(KEYS.raw_data, PARTITION)
    assert len(raw) == ROWS_PER_DAY
    assert (raw["tpep_pickup_datetime"].dt.date.astype(str) == PARTITION).all()
    predictions = staging.store.read_frame(KEYS.batch_predictions, PARTITION)
    assert len(predictions) == ROWS_PER_DAY and predictions["prediction"].notna().all()
    report = staging.store.read_record(KEYS.evaluation_report, PARTITION)
    assert report["gate_passed"] is True

    # Permissions were set on each run's job; the injected faults were answered, then retried.
    assert {acl[0]["group_name"] for _, _, acl in emulator.permission_updates} == {"ml-engineers"}
    assert len(emulator.permission_updates) == len(HEAVY_ASSETS)
    for method, path in [("POST", "/api/2.2/jobs/runs/submit"), ("GET", "/api/2.2/jobs/runs/get"), ("POST", "/api/2.0/dbfs/create")]:
        statuses = [(c.status, c.injected) for c in emulator.calls(method, path)]
        last_injected = max(i for i, (_, injected) in enumerate(statuses) if injected)
        assert statuses[last_injected + 1] == (200, False), (method, path, statuses)


def failure_text(instance: DagsterInstance, run_id: str) -> str:
    failures = step_events(instance, run_id, DagsterEventType.STEP_FAILURE)
    assert failures, "no step failed"
    return " ".join(
        f"{e.message} {e.step_failure_data.error.to_string() if e.step_failure_data.error else ''}"
        for e in failures
    )


def test_failing_remote_step_fails_the_dagster_step_with_the_remote_error(
    staging: Staging, instance: DagsterInstance
) -> None:
    # The step itself fails on the cluster: Spark there cannot find the profile's table. The
    # Databricks task completes and the step's failure event carries Spark's error home.
    write_staging_profile(staging.conf_dir, staging.project_dir, staging.tabml_home, "parquet.`/nonexistent/trips`")
    result = run_staging(instance, staging_ingestion_job)
    assert not result.success
    assert "PATH_NOT_FOUND" in failure_text(instance, result.run_id)
    assert "/nonexistent/trips" in failure_text(instance, result.run_id)
    (remote,) = staging.emulator.runs.values()
    assert remote.driver_pid is not None

    # The Databricks run itself fails (the cluster dies before the task): the Dagster step fails
    # with Databricks' state message.
    staging.emulator.fail_next_run("Cluster terminated. Reason: Driver unreachable")
    result = run_staging(instance, staging_ingestion_job)
    assert not result.success
    text = failure_text(instance, result.run_id)
    assert "failed with result state" in text and "Driver unreachable" in text


TERMINATION_SCRIPT = textwrap.dedent("""
    import sys
    from dagster import AssetKey, DagsterInstance, execute_job, reconstructable
    from tabml_assets_tests.test_databricks_staging import PARTITION, staging_job

    with DagsterInstance.from_ref(DagsterInstance.local_temp(sys.argv[1]).get_ref()) as instance:
        execute_job(
            reconstructable(staging_job), instance=instance,
            tags={"dagster/partition": PARTITION}, asset_selection=[AssetKey(["nyc_taxi", "raw_data"]), AssetKey(["nyc_taxi", "raw_data_quarantine"])],
        )
""")


def test_terminating_the_dagster_run_cancels_the_databricks_run(staging: Staging, tmp_path: Path) -> None:
    emulator = staging.emulator
    emulator.task_start_delay_seconds = 300  # a slow run, still going when the run is terminated
    dagster_home = tmp_path / "terminated_home"
    dagster_home.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-c", TERMINATION_SCRIPT, str(dagster_home)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        emulator.wait_for(lambda: any(r.life_cycle_state == "RUNNING" for r in emulator.runs.values()), 120, "the Databricks run to start")
        # What `dagster run terminate` and the UI do to a run worker: interrupt it.
        worker.send_signal(signal.SIGINT)
        output = worker.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    (run,) = emulator.runs.values()
    assert emulator.cancel_calls == [run.run_id], output[-3000:]
    emulator.wait_for(run.finished.is_set, 10, "the cancelled run to end")
    assert run.result_state == "CANCELED" and run.driver_pid is None
    with DagsterInstance.local_temp(str(dagster_home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)


@pytest.fixture
def local_spark() -> Iterator[Any]:
    """pyspark local mode, started as the `spark` resource starts it off Databricks (and shared
    with other tests in this process: its session time zone is put back afterwards)."""
    from tabml_assets.resources.spark import SparkSessionResource

    session = SparkSessionResource(master="local[1]").get_session()
    zone = session.conf.get("spark.sql.session.timeZone")
    yield session
    session.conf.set("spark.sql.session.timeZone", zone)


def test_table_source_reads_one_utc_day_whatever_the_session_time_zone(local_spark: Any) -> None:
    day = dt.date(2026, 3, 9)
    days = [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)]
    trips = pd.concat([generate_demo_trips(d, 300) for d in days], ignore_index=True)
    local_spark.conf.set("spark.sql.session.timeZone", "UTC")
    # TIMESTAMP columns, as in samples.nyctaxi.trips: instants, rendered in the session zone.
    local_spark.createDataFrame(trips.sample(frac=1, random_state=3)).createOrReplaceTempView("nyctaxi_trips")
    local_spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    source = table_source("nyctaxi_trips")

    got = source.read_day_with(local_spark, day)
    assert list(got.columns) == raw_columns(DATASET)
    # Ingestion types the rows by the spec, as it does every source's: naive UTC timestamps.
    rows = as_unvalidated_rows(got, DATASET, source.describe())
    assert (rows[READ_PROBLEMS_COLUMN] == "").all()

    expected = generate_demo_trips(day, 300).sort_values(list(RAW_SCHEMA)).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows[raw_columns(DATASET)].astype(RAW_SCHEMA), expected)
    assert local_spark.conf.get("spark.sql.session.timeZone") == "America/New_York"
    quiet = source.read_day_with(local_spark, dt.date(2026, 4, 1))
    assert len(quiet) == 0 and list(quiet.columns) == raw_columns(DATASET)
    quiet_rows = as_unvalidated_rows(quiet, DATASET, source.describe())
    assert dict(quiet_rows[raw_columns(DATASET)].dtypes.astype(str)) == unvalidated_schema(DATASET)


def test_table_source_names_the_table_and_missing_columns(local_spark: Any) -> None:
    day = dt.date(2026, 3, 9)
    frame = generate_demo_trips(day, 5).drop(columns=["pickup_zip", "fare_amount"])
    local_spark.createDataFrame(frame).createOrReplaceTempView("trips_without_zips")
    with pytest.raises(MissingColumnsError) as error:
        table_source("trips_without_zips").read_day_with(local_spark, day)
    message = str(error.value)
    assert "table trips_without_zips" in message
    # The label column (fare_amount) may be absent: only the zip is missing.
    assert "missing column(s) ['pickup_zip']" in message

    # Without its label, a table is scoring data: read, with the fare left null by ingestion.
    unlabelled = generate_demo_trips(day, 5).drop(columns=["fare_amount"])
    local_spark.createDataFrame(unlabelled).createOrReplaceTempView("trips_without_fares")
    source = table_source("trips_without_fares")
    got = source.read_day_with(local_spark, day)
    assert len(got) == 5 and "fare_amount" not in got.columns
    rows = as_unvalidated_rows(got, DATASET, source.describe())
    assert rows["fare_amount"].isna().all() and (rows[READ_PROBLEMS_COLUMN] == "").all()
    assert sorted(rows["trip_distance"].tolist()) == sorted(unlabelled["trip_distance"].tolist())


# --- remote steps that cannot start -------------------------------------------------------------

# What the cluster gets wrong, and what the step's failure must say about it.
REMOTE_START_FAULTS = {
    "empty token": ("databricks-token", "", ["DATABRICKS_TOKEN is empty", "secret `databricks-token` of scope `tabml-staging`"]),
    "empty host": ("databricks-host", "", ["DATABRICKS_HOST is empty", "secret `databricks-host` of scope `tabml-staging`"]),
    "host without a scheme": ("databricks-host", "dbc-1234.cloud.databricks.com", ["DATABRICKS_HOST: expected a workspace URL"]),
}


def step_event_types(instance: DagsterInstance, run_id: str, step_key: str) -> list[DagsterEventType]:
    return [
        record.event_log_entry.dagster_event_type
        for record in instance.get_records_for_run(run_id).records
        if record.event_log_entry.step_key == step_key and record.event_log_entry.dagster_event_type is not None
    ]


def run_failure_message(instance: DagsterInstance, run_id: str) -> str:
    (failure,) = step_events(instance, run_id, DagsterEventType.RUN_FAILURE)
    return failure.message or ""


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(REMOTE_START_FAULTS))
def test_a_remote_step_that_cannot_build_its_resources_fails_once_naming_the_cause(
    fault: str, staging: Staging, instance: DagsterInstance
) -> None:
    key, value, expected = REMOTE_START_FAULTS[fault]
    staging.emulator.secret_scopes["tabml-staging"][key] = value
    # Staging's own job: the multiprocess executor and the spec's RetryPolicy on raw_data.
    job = staging_job()
    raw_step = f"{PROJECT}__raw_data"
    policy = job.get_retry_policy_for_handle(NodeHandle(raw_step, None))
    assert job.executor_def.name == "multiprocess" and policy is not None and policy.max_retries >= 1

    result = execute_job(
        reconstructable(staging_job), instance=instance,
        tags={"dagster/partition": PARTITION}, asset_selection=[KEYS.raw_data, KEYS.quarantine],
    )
    assert not result.success
    # One Databricks run, whose driver reported the resource failure; one step failure, no retry.
    (remote,) = staging.emulator.runs.values()
    assert remote.result_state == "FAILED"
    (init_failure,) = step_events(instance, result.run_id, DagsterEventType.RESOURCE_INIT_FAILURE)
    assert init_failure.pid == remote.report["pid"]  # type: ignore[index]
    events = step_event_types(instance, result.run_id, raw_step)
    assert events.count(DagsterEventType.STEP_FAILURE) == 1
    assert DagsterEventType.STEP_UP_FOR_RETRY not in events
    text = failure_text(instance, result.run_id)
    assert f"Databricks run {remote.run_id}" in text and "could not build its resources" in text
    for part in expected:
        assert part in text, text
    assert TOKEN not in text
    # The executor saw a step failure, not a crash of its own.
    assert run_failure_message(instance, result.run_id).endswith(f"Steps failed: ['{raw_step}'].")


@pytest.mark.slow
def test_a_secret_missing_from_the_scope_fails_the_step_with_the_task_error(
    staging: Staging, instance: DagsterInstance
) -> None:
    del staging.emulator.secret_scopes["tabml-staging"]["databricks-token"]
    result = execute_job(
        reconstructable(staging_job), instance=instance,
        tags={"dagster/partition": PARTITION}, asset_selection=[KEYS.raw_data, KEYS.quarantine],
    )
    assert not result.success
    (remote,) = staging.emulator.runs.values()
    text = failure_text(instance, result.run_id)
    # Databricks' own words ("see run output") and the task's error from the run output.
    assert "failed with result state" in text
    assert "Secret does not exist with scope: tabml-staging and key: databricks-token" in text
    assert step_event_types(instance, result.run_id, f"{PROJECT}__raw_data").count(DagsterEventType.STEP_FAILURE) == 1
    assert remote.result_state == "FAILED"


def test_credential_problems_name_the_variable_and_its_secret_never_the_value() -> None:
    secrets = [
        {"name": "DATABRICKS_HOST", "key": "databricks-host", "scope": "tabml-staging"},
        {"name": "DATABRICKS_TOKEN", "key": "databricks-token", "scope": "tabml-staging"},
    ]
    ok = {"databricks_host": "https://dbc-1.cloud.databricks.com", "databricks_token": "dapi-x", "secrets_to_env_variables": secrets}
    assert credential_problems(ok, {}) == []
    (empty,) = credential_problems({**ok, "databricks_token": " "}, {})
    assert empty.startswith("DATABRICKS_TOKEN is empty") and "secret `databricks-token` of scope `tabml-staging`" in empty
    (bad_host,) = credential_problems({**ok, "databricks_host": "dapi-secret-in-the-wrong-place"}, {})
    assert "DATABRICKS_HOST: expected a workspace URL" in bad_host and "dapi-secret" not in bad_host
    # oauth_m2m: no token in config; databricks-sdk reads the service principal from the environment.
    oauth = {"databricks_host": ok["databricks_host"], "secrets_to_env_variables": []}
    assert credential_problems(oauth, {"DATABRICKS_CLIENT_ID": "sp", "DATABRICKS_CLIENT_SECRET": "s"}) == []
    (missing,) = credential_problems(oauth, {"DATABRICKS_CLIENT_ID": "sp"})
    assert missing.startswith("DATABRICKS_CLIENT_SECRET is empty or unset")
    assert "databricks.secrets" in missing


def recorded_error(exc: BaseException) -> SerializableErrorInfo:
    try:
        raise exc
    except BaseException:
        return serializable_error_info_from_exc_info(sys.exc_info())


def test_remote_start_failures_fail_at_once_unless_transient() -> None:
    policy = RetryPolicy(max_retries=3, delay=2)

    @resource
    def empty_token(_: Any) -> None:
        raise DatabricksConfigError("step_launcher: DATABRICKS_TOKEN is empty")

    # The error a resource that fails to build records, as the cluster's event carries it.
    with pytest.raises(DagsterResourceFunctionError) as raised:
        with build_resources({"step_launcher": empty_token}):
            pass
    permanent = recorded_error(raised.value)
    assert not is_transient_error_info(permanent)
    failure = remote_start_failure("nyc_taxi__raw_data", 1005, permanent, [], policy, previous_attempts=0)
    assert isinstance(failure, Failure) and not failure.allow_retries
    assert failure.description is not None
    assert failure.description.startswith("nyc_taxi__raw_data: the remote step (Databricks run 1005) could not build")
    assert (
        "DagsterResourceFunctionError: Error executing resource_fn on ResourceDefinition step_launcher; "
        "caused by DatabricksConfigError: step_launcher: DATABRICKS_TOKEN is empty"
    ) in failure.description

    transient = recorded_error(ConnectionRefusedError("[Errno 111] Connection refused"))
    assert is_transient_error_info(transient)
    retry = remote_start_failure("nyc_taxi__raw_data", 1005, transient, [], policy, previous_attempts=1)
    assert isinstance(retry, RetryRequested)
    assert retry.max_retries == 3 and retry.seconds_to_wait == policy.calculate_delay(2)
    # Without retries left in the policy, a transient cause fails like any other.
    assert isinstance(remote_start_failure("k", 1, transient, [], RetryPolicy(max_retries=0), 0), Failure)
