"""Schedules, sensors, freshness and the run queue, evaluated against a real Dagster instance,
a real landing folder and a real (SQLite) MLflow registry."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    EnvVar,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.test_utils import create_run_for_test, freeze_time
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from mlflow.tracking import MlflowClient

from tabml_assets import keys
from tabml_assets.automation.landing import landing_run_key, scan_landing_folder
from tabml_assets.definitions import build_definitions
from tabml_assets.keys import PipelineKeys
from tabml_assets.resources.data_sources import LandingFolderSource
from tabml_assets.resources.model_registry import CHAMPION
from tabml_assets.resources.notifier import (
    LogNotifier,
    NotificationError,
    SlackWebhookNotifier,
)
from tabml_assets.resources.storage import write_parquet_atomic
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec, SpecError, load_spec
from tabml_assets_tests.dagster_dev_server import REPO_ROOT

DAYS = ["2026-03-04", "2026-03-05", "2026-03-06"]
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
# The example project the test deployment runs; every asset, job, schedule and sensor carries its name.
KEYS = PipelineKeys("nyc_taxi")
RAW_DATA, FEATURES = KEYS.raw_data, KEYS.features
QUARANTINE = KEYS.quarantine
TRAINED_MODEL, BATCH_PREDICTIONS = KEYS.trained_model, KEYS.batch_predictions
LANDING_SENSOR = KEYS.sensor(keys.LANDING_SENSOR)
CHAMPION_SENSOR = KEYS.sensor(keys.CHAMPION_SENSOR)
RETRAINING_SENSOR = KEYS.sensor(keys.RETRAINING_SENSOR)
SCORING_JOB = KEYS.job(keys.SCORING_JOB)


def _update_yaml(path: Path, sections: Mapping[str, dict | list]) -> None:
    profile = yaml.safe_load(path.read_text()) if path.exists() else {}
    for key, values in sections.items():
        if isinstance(values, dict):
            profile.setdefault(key, {}).update(values)
        else:
            profile[key] = values
    path.write_text(yaml.safe_dump(profile))


def edit_profile(conf_dir: Path, deployment: str = "test", **sections: dict | list) -> None:
    """Update sections of the deployment's profile (conf/profiles/<deployment>.yaml); a list
    (`projects`) replaces the profile's."""
    _update_yaml(conf_dir / "profiles" / f"{deployment}.yaml", sections)


# A deployment of the nyc_taxi example alone: what the end-to-end tests under `dagster dev`
# exercise. The second project would only add its sensors' ticks and runs to the daemon's load.
NYC_TAXI_ONLY = ["../examples/nyc_taxi"]


def edit_project_profile(project_dir: Path, deployment: str = "test", **sections: dict) -> None:
    """Update sections of the project's own profiles/<deployment>.yaml (e.g. pipeline_overrides)."""
    _update_yaml(project_dir / "profiles" / f"{deployment}.yaml", sections)


@pytest.fixture
def landing_spec(conf_dir: Path, tabml_home: Path) -> LoadedSpec:
    """The test deployment reading a landing folder, with sensors evaluated every 5 s."""
    edit_profile(
        conf_dir,
        data_source={"kind": "landing_folder", "landing_folder": "landing"},
        sensors={"default_status": "RUNNING", "minimum_interval_seconds": 5},
    )
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    assert spec.landing_folder() == tabml_home / "landing" / "nyc_taxi"
    spec.landing_folder().mkdir(parents=True)
    return spec


@pytest.fixture
def landing_defs(landing_spec: LoadedSpec) -> Definitions:
    return build_definitions(landing_spec)


def land(
    spec: LoadedSpec,
    name: str,
    days: list[str],
    rows_per_day: int = 20,
    csv: bool = False,
    folder: Path | None = None,
) -> Path:
    """Drop one file holding `rows_per_day` of the project's demo trips for each of `days`
    into `folder` (default: the project's landing folder)."""
    assert spec.steps.demo_rows is not None
    frame = pd.concat(
        [spec.steps.demo_rows(dt.date.fromisoformat(d), rows_per_day) for d in days], ignore_index=True
    )
    path = (folder or spec.landing_folder()) / name
    if csv:
        frame.to_csv(path, index=False)
    else:
        write_parquet_atomic(frame, path)
    return path


def tick(defs: Definitions, name: str, instance: DagsterInstance, cursor: str | None) -> SensorExecutionData:
    """One evaluation as the daemon does it: resources from the definitions, cursor passed in."""
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def(name)
    with build_sensor_context(
        instance=instance, cursor=cursor, repository_def=repository, sensor_name=name,
        resources=defs.resources,
    ) as context:
        return sensor.evaluate_tick(context)


def partitions_of(data: SensorExecutionData) -> list[str]:
    return sorted(r.partition_key for r in data.run_requests)


def registry_client(tabml_home: Path) -> MlflowClient:
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_versions(tabml_home: Path, model_name: str, count: int) -> list[str]:
    """Registered versions without artifacts: the sensors only read aliases and versions."""
    client = registry_client(tabml_home)
    client.create_registered_model(model_name)
    return [
        str(client.create_model_version(model_name, source=str(tabml_home / f"model_{i}")).version)
        for i in range(count)
    ]


def report_materialization(instance: DagsterInstance, asset: AssetKey, partition: str, **metadata: str) -> None:
    instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition, metadata=metadata))


# --- landing sensor -------------------------------------------------------------------------


def test_file_with_three_days_requests_exactly_those_partitions(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    land(landing_spec, "trips.parquet", DAYS)
    with freeze_time(NOW):
        first = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert partitions_of(first) == DAYS
    assert {r.job_name for r in first.run_requests} <= {None, SCORING_JOB}
    # No champion yet: the days are ingested, scoring waits for a model.
    assert all(set(r.asset_selection) == {RAW_DATA, QUARANTINE, FEATURES} for r in first.run_requests)
    assert all(r.tags["tabml/landing_files"] == "trips.parquet" for r in first.run_requests)

    # The persisted cursor remembers the file: the same content requests nothing.
    state = json.loads(first.cursor)
    assert set(state["files"]["trips.parquet"]["days"]) == set(DAYS)
    with freeze_time(NOW):
        again = tick(landing_defs, LANDING_SENSOR, instance, first.cursor)
    assert again.run_requests == []
    assert "no new or changed landing files" in again.skip_message

    # Even with the cursor lost, the same content yields the same run keys, which Dagster runs once.
    with freeze_time(NOW):
        lost = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert sorted(r.run_key for r in lost.run_requests) == sorted(r.run_key for r in first.run_requests)


def test_changed_file_requests_old_and_new_days_and_csv_is_read(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    folder = landing_spec.landing_folder()
    land(landing_spec, "trips.csv", DAYS[:2], csv=True)
    with freeze_time(NOW):
        first = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert partitions_of(first) == DAYS[:2]

    # The file is replaced by one holding days 2 and 3: day 1 lost its rows, day 3 gained some.
    land(landing_spec, "trips.csv", DAYS[1:], rows_per_day=25, csv=True)
    with freeze_time(NOW):
        second = tick(landing_defs, LANDING_SENSOR, instance, first.cursor)
    assert partitions_of(second) == DAYS
    assert not {r.run_key for r in second.run_requests} & {r.run_key for r in first.run_requests}

    # Deleting the file re-ingests its days without it.
    (folder / "trips.csv").unlink()
    with freeze_time(NOW):
        third = tick(landing_defs, LANDING_SENSOR, instance, second.cursor)
    assert partitions_of(third) == DAYS[1:]
    assert json.loads(third.cursor)["files"] == {}


def test_days_already_ingested_after_the_file_landed_are_not_rerun(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    land(landing_spec, "trips.parquet", DAYS[:1])
    run_selection(landing_defs, instance, [RAW_DATA], partition_key=DAYS[0])
    with freeze_time(NOW):
        result = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert result.run_requests == []
    assert "trips.parquet" in json.loads(result.cursor)["files"]


def test_unreadable_file_is_reported_and_other_files_still_run(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    folder = landing_spec.landing_folder()
    (folder / "broken.csv").write_text("tpep_pickup_datetime,fare_amount\nnot a date,3\n")
    with freeze_time(NOW):
        only_broken = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert only_broken.run_requests == []
    assert "broken.csv unreadable" in only_broken.skip_message
    assert "missing column" in json.loads(only_broken.cursor)["files"]["broken.csv"]["error"]

    land(landing_spec, "good.parquet", DAYS[:1])
    with freeze_time(NOW):
        result = tick(landing_defs, LANDING_SENSOR, instance, only_broken.cursor)
    assert partitions_of(result) == DAYS[:1]


def test_today_waits_until_its_partition_exists(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    land(landing_spec, "late.parquet", ["2026-03-09", "2026-03-10"])
    with freeze_time(NOW):
        first = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert partitions_of(first) == ["2026-03-09"]
    assert list(json.loads(first.cursor)["pending"]) == ["2026-03-10"]
    with freeze_time(NOW + dt.timedelta(days=1)):
        next_day = tick(landing_defs, LANDING_SENSOR, instance, first.cursor)
    assert partitions_of(next_day) == ["2026-03-10"]


def test_days_an_in_flight_backfill_writes_are_held_back(
    landing_defs: Definitions, landing_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    backfill_run = create_run_for_test(
        instance,
        job_name="__ASSET_JOB",
        status=DagsterRunStatus.STARTED,
        tags={ASSET_PARTITION_RANGE_START_TAG: DAYS[0], ASSET_PARTITION_RANGE_END_TAG: DAYS[1]},
        asset_selection={RAW_DATA, FEATURES},
    )
    land(landing_spec, "trips.parquet", DAYS)
    with freeze_time(NOW):
        first = tick(landing_defs, LANDING_SENSOR, instance, None)
    assert partitions_of(first) == DAYS[2:]
    assert sorted(json.loads(first.cursor)["pending"]) == DAYS[:2]

    instance.report_run_canceled(backfill_run)
    with freeze_time(NOW):
        second = tick(landing_defs, LANDING_SENSOR, instance, first.cursor)
    assert partitions_of(second) == DAYS[:2]
    assert json.loads(second.cursor)["pending"] == {}


def test_run_key_depends_on_content_only() -> None:
    changed = {"a.parquet": "1" * 64, "b.csv": "2" * 64}
    key = landing_run_key("2026-03-04", changed, ["b.csv", "a.parquet"])
    assert key == landing_run_key("2026-03-04", changed, ["a.parquet", "b.csv"])
    assert key != landing_run_key("2026-03-04", {**changed, "b.csv": "3" * 64}, ["a.parquet", "b.csv"])
    assert key != landing_run_key("2026-03-05", changed, ["a.parquet", "b.csv"])


def test_scan_reads_only_changed_files(test_spec: LoadedSpec, tmp_path: Path) -> None:
    source = LandingFolderSource(dataset_spec=test_spec.pipeline.dataset.model_dump_json(), folder=str(tmp_path))
    path = land(test_spec, "trips.parquet", DAYS[:1], folder=tmp_path)
    first = scan_landing_folder([path], {}, source)
    assert first.changed == {"trips.parquet": first.files["trips.parquet"].sha256}
    assert list(first.examined) == ["trips.parquet"]
    os.utime(path, (0, 0))  # touching a file is not a change
    touched = scan_landing_folder([path], first.files, source)
    assert touched.changed == {} and touched.examined == {}
    # Unchanged since: not even hashed again, so a quiet folder costs one stat per file.
    assert scan_landing_folder([path], touched.files, source).files == touched.files


def test_demo_and_databricks_sources_have_no_landing_sensor(test_defs: Definitions) -> None:
    names = {s.name for s in test_defs.get_repository_def().sensor_defs}
    assert LANDING_SENSOR not in names
    assert {CHAMPION_SENSOR, RETRAINING_SENSOR, "run_failure_alert_sensor"} <= names


# --- champion sensor ------------------------------------------------------------------------


def test_new_champion_rescores_the_last_k_days_scored_by_another_version(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    model_name = test_spec.profile.mlflow.model_name
    first, second = register_versions(tabml_home, model_name, 2)
    client = registry_client(tabml_home)
    assert tick(test_defs, CHAMPION_SENSOR, instance, None).run_requests == []  # no alias yet

    client.set_registered_model_alias(model_name, CHAMPION, first)
    days = [f"2026-03-0{d}" for d in range(1, 10)]
    for day in days:
        report_materialization(instance, BATCH_PREDICTIONS, day, model_version=first)
    settled = tick(test_defs, CHAMPION_SENSOR, instance, None)
    assert settled.run_requests == []  # predictions already use the champion
    assert json.loads(settled.cursor)["version"] == first

    client.set_registered_model_alias(model_name, CHAMPION, second)
    k = test_spec.pipeline.automation.rescore_partitions_on_new_champion
    moved = tick(test_defs, CHAMPION_SENSOR, instance, settled.cursor)
    assert partitions_of(moved) == days[-k:]
    assert all(r.asset_selection == [BATCH_PREDICTIONS] for r in moved.run_requests)
    assert all(f":v{second}:" in r.run_key for r in moved.run_requests)
    assert tick(test_defs, CHAMPION_SENSOR, instance, moved.cursor).run_requests == []

    # A day already rescored by the new champion is left alone after a lost cursor.
    report_materialization(instance, BATCH_PREDICTIONS, days[-1], model_version=second)
    after_loss = tick(test_defs, CHAMPION_SENSOR, instance, None)
    assert partitions_of(after_loss) == days[-k:-1]


# --- retraining sensor ----------------------------------------------------------------------


def test_retraining_on_new_feature_days_and_on_staleness(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    automation = test_spec.pipeline.automation
    assert tick(test_defs, RETRAINING_SENSOR, instance, None).run_requests == []  # nothing trained
    with freeze_time(NOW):
        report_materialization(instance, TRAINED_MODEL, "2026-03-01")
        new_days = [f"2026-03-{d:02d}" for d in range(2, 2 + automation.retrain_after_new_partitions)]
        for day in ["2026-02-28", "2026-03-01", *new_days[:-1]]:
            report_materialization(instance, FEATURES, day)
        fresh = tick(test_defs, RETRAINING_SENSOR, instance, None)
        assert fresh.run_requests == []
        assert f"{len(new_days) - 1} of {len(new_days)} new feature days" in fresh.skip_message

        report_materialization(instance, FEATURES, new_days[-1])
        enough = tick(test_defs, RETRAINING_SENSOR, instance, None)
    assert [r.partition_key for r in enough.run_requests] == [new_days[-1]]
    assert enough.run_requests[0].tags["tabml/trigger"] == "new_feature_partitions"


def test_retraining_when_the_model_fails_its_freshness(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    fail_hours = test_spec.pipeline.automation.model_freshness_fail_hours
    with freeze_time(NOW):
        report_materialization(instance, TRAINED_MODEL, "2026-03-01")
        report_materialization(instance, FEATURES, "2026-03-02")
    with freeze_time(NOW + dt.timedelta(hours=fail_hours - 1)):
        assert tick(test_defs, RETRAINING_SENSOR, instance, None).run_requests == []
    with freeze_time(NOW + dt.timedelta(hours=fail_hours + 1)):
        stale = tick(test_defs, RETRAINING_SENSOR, instance, None)
    assert [r.partition_key for r in stale.run_requests] == ["2026-03-02"]
    assert stale.run_requests[0].tags["tabml/trigger"] == "stale_model"


# --- schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "job", "tick_time", "partition"),
    [
        (
            "nyc_taxi_daily_scoring_schedule", "nyc_taxi_scoring_job",
            dt.datetime(2026, 3, 10, 0, 30, tzinfo=dt.UTC), "2026-03-09",
        ),
        (
            "nyc_taxi_retraining_schedule", "nyc_taxi_training_job",
            dt.datetime(2026, 3, 9, 3, 0, tzinfo=dt.UTC), "2026-03-08",
        ),
    ],
)
def test_schedules_request_the_day_that_just_closed(
    test_defs: Definitions, instance: DagsterInstance, name: str, job: str, tick_time: dt.datetime, partition: str
) -> None:
    repository = test_defs.get_repository_def()
    schedule = repository.get_schedule_def(name)
    assert schedule.job_name == job
    assert schedule.execution_timezone == "UTC"
    with build_schedule_context(
        instance=instance, scheduled_execution_time=tick_time, repository_def=repository
    ) as context:
        data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == [partition]
    # The partition exists in the job's partitions at tick time.
    with freeze_time(tick_time):
        assert partition in test_defs.resolve_job_def(job).partitions_def.get_partition_keys()


def test_schedule_and_sensor_status_come_from_the_profile(
    conf_dir: Path, project_dir: Path, tabml_home: Path, test_defs: Definitions
) -> None:
    repository = test_defs.get_repository_def()
    assert {s.default_status.value for s in repository.sensor_defs} == {"STOPPED"}
    assert {s.default_status.value for s in repository.schedule_defs} == {"STOPPED"}
    edit_profile(conf_dir, schedules={"default_status": "RUNNING"})
    edit_project_profile(project_dir, pipeline_overrides={"automation": {"scoring_cron": "15 1 * * *"}})
    repository = build_definitions(load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)).get_repository_def()
    assert {s.default_status.value for s in repository.schedule_defs} == {"RUNNING"}
    assert repository.get_schedule_def("nyc_taxi_daily_scoring_schedule").cron_schedule == "15 1 * * *"


def test_invalid_automation_values_name_file_and_key(
    conf_dir: Path, project_dir: Path, tabml_home: Path
) -> None:
    pipeline = project_dir / "pipeline.yaml"
    text = pipeline.read_text()
    pipeline.write_text(text.replace('scoring_cron: "30 0 * * *"', 'scoring_cron: "every day"'))
    with pytest.raises(SpecError, match=r"key `automation.scoring_cron`: expected a cron string .*'every day'"):
        load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    pipeline.write_text(text.replace("model_freshness_warn_hours: 168", "model_freshness_warn_hours: 200"))
    with pytest.raises(SpecError, match=r"pipeline.yaml: invalid spec\n.*warn_hours must be less than .*200 >= 192"):
        load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)


# --- freshness ------------------------------------------------------------------------------


def test_freshness_policies_come_from_the_spec(test_defs: Definitions, test_spec: LoadedSpec) -> None:
    graph = test_defs.get_repository_def().asset_graph
    automation = test_spec.pipeline.automation
    model_policy = graph.get(TRAINED_MODEL).freshness_policy
    assert model_policy.fail_window.to_timedelta() == dt.timedelta(hours=automation.model_freshness_fail_hours)
    assert model_policy.warn_window.to_timedelta() == dt.timedelta(hours=automation.model_freshness_warn_hours)
    predictions_policy = graph.get(BATCH_PREDICTIONS).freshness_policy
    assert predictions_policy.deadline_cron == automation.predictions_deadline_cron
    assert graph.get(FEATURES).freshness_policy is None


def run_predictions_freshness_check(defs: Definitions, instance: DagsterInstance) -> tuple[bool, str]:
    data = tick(defs, "nyc_taxi_batch_predictions_freshness_sensor", instance, None)
    check_keys = [k for r in data.run_requests for k in r.asset_check_keys]
    assert [k.name for k in check_keys] == ["freshness_check"]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(check_keys)
    )
    result = job.execute_in_process(instance=instance)
    evaluation = result.get_asset_check_evaluations()[0]
    return evaluation.passed, evaluation.description


def test_missing_yesterday_is_flagged_even_after_an_old_day_was_backfilled(
    test_defs: Definitions, instance: DagsterInstance
) -> None:
    after_deadline = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)
    with freeze_time(after_deadline):
        report_materialization(instance, BATCH_PREDICTIONS, "2026-03-01")  # a backfilled old day
        passed, description = run_predictions_freshness_check(test_defs, instance)
        assert not passed
        assert "2026-03-09" in description
    with freeze_time(after_deadline + dt.timedelta(minutes=5)):
        report_materialization(instance, BATCH_PREDICTIONS, "2026-03-09")
        passed, description = run_predictions_freshness_check(test_defs, instance)
        assert passed, description


# --- run-failure sensor and notifiers -------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Hook]]:
    """A Slack-compatible webhook on 127.0.0.1; its URL only in the environment."""
    hook = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TABML_TEST_WEBHOOK", f"http://127.0.0.1:{server.server_port}/services/secret-token")
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def test_failed_run_alerts_through_the_notifier(
    test_defs: Definitions, instance: DagsterInstance, webhook: type[_Hook], caplog: pytest.LogCaptureFixture
) -> None:
    # No champion yet: scoring fails with a message that names the missing alias.
    result = run_selection(
        test_defs, instance, [RAW_DATA, FEATURES, BATCH_PREDICTIONS], partition_key="2026-03-09",
        raise_on_error=False,
    )
    assert not result.success
    sensor = test_defs.get_repository_def().get_sensor_def("run_failure_alert_sensor")
    notifier = SlackWebhookNotifier(webhook_url=EnvVar("TABML_TEST_WEBHOOK"))
    context = build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"notifier": notifier},
    )
    sensor(context)
    [message] = webhook.received
    assert "tabml run failed: __ASSET_JOB [2026-03-09]" in message["text"]
    assert "step nyc_taxi__batch_predictions" in message["text"]
    assert "has no 'champion' alias yet" in message["text"]

    with caplog.at_level(logging.ERROR, logger="tabml.alerts"):
        sensor(build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"notifier": LogNotifier()},
        ))
    assert "tabml run failed" in caplog.text and "2026-03-09" in caplog.text


def test_webhook_errors_never_show_the_url(webhook: type[_Hook]) -> None:
    webhook.status = 500
    notifier = SlackWebhookNotifier(webhook_url=os.environ["TABML_TEST_WEBHOOK"])
    with pytest.raises(NotificationError, match="HTTP 500") as raised:
        notifier.notify("t", "b")
    assert "secret-token" not in str(raised.value)
    unreachable = SlackWebhookNotifier(webhook_url="http://127.0.0.1:9/services/secret-token", timeout_seconds=2)
    with pytest.raises(NotificationError) as raised:
        unreachable.notify("t", "b")
    assert "secret-token" not in str(raised.value)


def test_slack_is_chosen_by_the_profile_and_reads_an_env_var(conf_dir: Path, tabml_home: Path) -> None:
    edit_profile(conf_dir, notifications={"kind": "slack", "slack_webhook_env_var": "TABML_TEST_WEBHOOK"})
    defs = build_definitions(load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home))
    notifier = defs.resources["notifier"]
    assert isinstance(notifier, SlackWebhookNotifier)
    assert isinstance(notifier.webhook_url, EnvVar) and notifier.webhook_url.env_var_name == "TABML_TEST_WEBHOOK"


# --- the run queue --------------------------------------------------------------------------


@pytest.fixture
def dev_queue_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "queue_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "infra" / "dagster" / "dagster.dev.yaml").read_text())
    with DagsterInstance.from_config(str(home)) as queue_instance:
        yield queue_instance


def runs_to_dequeue(instance: DagsterInstance) -> set[str]:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    return {r.run_id for r in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)}


def test_the_dev_queue_never_runs_two_writers_of_the_same_day(dev_queue_instance: DagsterInstance) -> None:
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("tabml_assets"), "__repository__"), SCORING_JOB
    )

    def queued(**tags: str) -> str:
        return create_run_for_test(
            dev_queue_instance, status=DagsterRunStatus.QUEUED, tags=tags, remote_job_origin=origin
        ).run_id

    running = create_run_for_test(
        dev_queue_instance, status=DagsterRunStatus.STARTED, tags={PARTITION_NAME_TAG: "2026-03-09"}
    )
    same_day = queued(**{PARTITION_NAME_TAG: "2026-03-09"})
    other_day = queued(**{PARTITION_NAME_TAG: "2026-03-08"})
    assert runs_to_dequeue(dev_queue_instance) == {other_day}

    dev_queue_instance.report_run_canceled(running)
    assert runs_to_dequeue(dev_queue_instance) == {same_day, other_day}

    # Two ranges from the same first day overlap: only one of them may start.
    for run in dev_queue_instance.get_runs():
        dev_queue_instance.report_run_canceled(run)
    first = queued(**{ASSET_PARTITION_RANGE_START_TAG: "2026-01-01", ASSET_PARTITION_RANGE_END_TAG: "2026-01-31"})
    queued(**{ASSET_PARTITION_RANGE_START_TAG: "2026-01-01", ASSET_PARTITION_RANGE_END_TAG: "2026-01-15"})
    assert runs_to_dequeue(dev_queue_instance) == {first}
