"""One MLflow parent run per Dagster run: tabml's steps nest their runs under it, and a team's
own asset logging through dagster-mlflow's resource (`<project>_mlflow`) writes to that same
run. Real MLflow on sqlite, a real Dagster instance."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import mlflow.tracking.fluent as fluent
import pytest
from dagster import DagsterInstance, Definitions, asset
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from tabml_assets.assets.common import daily_partitions
from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_model_registry, model_registry
from tabml_assets.resources.model_registry import DUPLICATE_OF_TAG, PARENT_ID_TAG, PARENT_RUN_TAG
from tabml_assets.seed import plan_seed, run_selection
from tabml_assets.spec import LoadedSpec
from tabml_assets_tests.conftest import TODAY

TEAM_METRIC = "team_business_kpi"


@pytest.fixture
def fluent_state_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """dagster-mlflow sets the process's tracking URI and experiment: put them back after."""
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_team_asset_logs_to_the_parent_run_of_tabml_steps(
    test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path, fluent_state_restored: None
) -> None:
    keys = test_spec.keys
    plan = plan_seed(test_spec, TODAY)
    first, last = plan.ingest_days[0].isoformat(), plan.ingest_days[-1].isoformat()
    defs = build_definitions(test_spec)
    run_selection(defs, instance, keys.assets("raw_data", "features"), partition_range=(first, last))

    @asset(
        key=keys.asset("team_kpi"),
        partitions_def=daily_partitions(test_spec.pipeline),
        deps=[keys.evaluation_report],
        required_resource_keys={keys.mlflow_resource},
    )
    def team_kpi(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads the annotation, a string here
        getattr(context.resources, keys.mlflow_resource).log_metric(TEAM_METRIC, 0.75)

    with_team = Definitions.merge(defs, Definitions(assets=[team_kpi]))
    selection = [keys.trained_model, keys.evaluation_report, team_kpi.key]
    result = run_selection(with_team, instance, selection, partition_key=plan.training_day.isoformat())
    assert result.success

    uri = f"sqlite:///{tabml_home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(test_spec.profile.mlflow.experiment_name)
    assert experiment is not None
    # dagster-mlflow did not create the experiment with MLflow's default ./mlruns.
    assert experiment.artifact_location.startswith(str(tabml_home))
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{result.run_id}'")
    steps = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{result.run_id}'")
    by_asset = {run.data.tags["dagster.asset_key"]: run for run in steps}
    assert sorted(by_asset) == ["nyc_taxi/evaluation_report", "nyc_taxi/trained_model"]
    # Both steps' runs under the one parent, which holds the team's metric and no step's.
    assert {run.data.tags[PARENT_ID_TAG] for run in steps} == {parent.info.run_id}
    assert parent.data.metrics == {TEAM_METRIC: 0.75}
    assert parent.data.tags["tabml.project"] == "nyc_taxi"
    assert "dagster.asset_key" not in parent.data.tags
    assert parent.info.status == "FINISHED" and parent.info.end_time is not None
    assert {run.info.status for run in steps} == {"FINISHED"}
    # dagster-mlflow's active run did not outlive the Dagster run.
    assert mlflow.active_run() is None

    # A run of the team's asset alone: dagster-mlflow starts the parent itself, and without
    # tabml's teardown (or its hook on the job's last step) it would stay RUNNING.
    alone = run_selection(with_team, instance, [team_kpi.key], partition_key=plan.training_day.isoformat())
    (own,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{alone.run_id}'")
    assert own.info.run_id != parent.info.run_id
    assert own.info.status == "FINISHED" and own.data.metrics == {TEAM_METRIC: 0.75}
    assert mlflow.active_run() is None


def test_a_second_run_gets_its_own_parent_and_tabml_names_it(
    test_spec: LoadedSpec, tabml_home: Path
) -> None:
    """Without dagster-mlflow: the registry creates the parent itself, and two steps of one
    Dagster run creating it at once end up with one (the other KILLED and untagged)."""
    registry = build_model_registry(test_spec)
    experiment_id = registry.experiment_id()
    dagster_run_id = "0123456789abcdef-race"
    tags = {"dagster.run_id": dagster_run_id, "tabml.project": "nyc_taxi"}
    barrier = threading.Barrier(2)
    children: list[str] = []
    errors: list[BaseException] = []

    def step() -> None:
        # Each step process has its own registry resource and client.
        own = build_model_registry(test_spec)
        try:
            barrier.wait(timeout=30)
            with own.run("a step", tags) as run:
                children.append(run.run_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=step) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [str(e) for e in errors] == [] and len(children) == 2
    client = registry.client()
    (parent,) = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{dagster_run_id}'")
    # Both steps' runs end up under the one parent, whoever created it.
    assert {client.get_run(child).data.tags[PARENT_ID_TAG] for child in children} == {parent.info.run_id}
    assert parent.info.run_name == "dagster run 01234567" and parent.info.status == "FINISHED"
    duplicates = client.search_runs([experiment_id], filter_string=f"tags.`{DUPLICATE_OF_TAG}` = '{parent.info.run_id}'")
    # A duplicate exists only when both searched before either created.
    assert all(run.info.status == "KILLED" and PARENT_RUN_TAG not in run.data.tags for run in duplicates)
    assert len(duplicates) <= 1

def test_of_two_parents_created_at_once_the_older_is_kept(
    test_spec: LoadedSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made certain: another step created the parent between this step's search and
    its create. This step keeps the other's (older) parent and ends its own KILLED, untagged."""
    registry = build_model_registry(test_spec)
    client = registry.client()
    experiment_id = registry.experiment_id()
    dagster_run_id = "fedcba9876543210-race"
    others = client.create_run(
        experiment_id, run_name="dagster run fedcba98", tags={PARENT_RUN_TAG: dagster_run_id},
        start_time=get_current_time_millis() - 1_000,
    ).info.run_id
    search = model_registry.parent_runs
    searches: list[int] = []

    def first_search_misses(client: MlflowClient, experiment: str, dagster_run: str) -> list[Any]:
        searches.append(1)
        return [] if len(searches) == 1 else search(client, experiment, dagster_run)

    monkeypatch.setattr(model_registry, "parent_runs", first_search_misses)
    with registry.run("a step", {"dagster.run_id": dagster_run_id}) as run:
        assert client.get_run(run.run_id).data.tags[PARENT_ID_TAG] == others
    assert len(searches) == 2
    (duplicate,) = client.search_runs([experiment_id], filter_string=f"tags.`{DUPLICATE_OF_TAG}` = '{others}'")
    assert duplicate.info.status == "KILLED" and PARENT_RUN_TAG not in duplicate.data.tags
    assert "is older" in duplicate.data.tags["tabml.ended_by"]
    assert client.get_run(others).info.status == "FINISHED"


def test_a_failed_team_step_ends_its_parent_run_failed(
    test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path, fluent_state_restored: None
) -> None:
    keys = test_spec.keys

    @asset(
        key=keys.asset("team_failing"),
        partitions_def=daily_partitions(test_spec.pipeline),
        required_resource_keys={keys.mlflow_resource},
    )
    def team_failing(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads the annotation
        getattr(context.resources, keys.mlflow_resource).log_metric(TEAM_METRIC, 0.5)
        raise ValueError("the team's step failed after logging")

    defs = Definitions.merge(build_definitions(test_spec), Definitions(assets=[team_failing]))
    day = plan_seed(test_spec, TODAY).training_day.isoformat()
    result = run_selection(defs, instance, [team_failing.key], partition_key=day, raise_on_error=False)
    assert not result.success
    client = MlflowClient(tracking_uri=f"sqlite:///{tabml_home}/mlflow.db")
    experiment = client.get_experiment_by_name(test_spec.profile.mlflow.experiment_name)
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{result.run_id}'")
    assert parent.info.status == "FAILED" and parent.data.metrics == {TEAM_METRIC: 0.5}
    assert mlflow.active_run() is None
