"""MLflow tracking and the registry: the promotion gate in each run mode, champion/challenger
aliases, and no MLflow run left RUNNING after success, failed steps, failed checks, subset runs
and materialize()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dagster import AssetCheckKey, DagsterInstance, materialize
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.keys import PipelineKeys
from tabml_assets.resources import build_partition_store, build_resources
from tabml_assets.seed import plan_seed, run_selection, seed_demo
from tabml_assets.spec import LoadedSpec, load_spec
from tabml_assets_tests.conftest import TODAY

KEYS = PipelineKeys("nyc_taxi")
TRAINING = KEYS.assets("trained_model", "evaluation_report", "champion_model")
# The test deployment's model_name template, tabml_{project}, filled for the example.
MODEL_NAME = "tabml_nyc_taxi"


def edit_pipeline(project_dir: Path, edit) -> None:
    path = project_dir / "pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def registry_client(tabml_home: Path) -> MlflowClient:
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_version(tabml_home: Path) -> str:
    return str(registry_client(tabml_home).get_model_version_by_alias(MODEL_NAME, "champion").version)


def all_runs(tabml_home: Path) -> list:
    client = registry_client(tabml_home)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


def test_failed_gate_keeps_the_champion_and_says_why(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    seed_spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    assert seed_spec.profile.mlflow.model_name == MODEL_NAME
    plan = seed_demo(build_definitions(seed_spec), seed_spec, instance, TODAY)
    first_champion = champion_version(tabml_home)

    edit_pipeline(project_dir, lambda d: d["validation"].update({"run_mode": "enabled", "criteria": {"rmse": {"max": 0.001}}}))
    strict_spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    strict_defs = build_definitions(strict_spec)
    result = run_selection(strict_defs, instance, TRAINING, partition_key=plan.scoring_day.isoformat(), raise_on_error=False)

    assert not result.success
    assert champion_version(tabml_home) == first_champion
    # champion_model never ran: the blocking check stopped the run before it.
    assert instance.get_latest_materialization_event(KEYS.champion_model).run_id != result.run_id

    check_key = AssetCheckKey(KEYS.evaluation_report, "gate_rmse_max")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key]
    assert record.status == AssetCheckExecutionRecordStatus.FAILED
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.metadata["metric"].value == "rmse"
    assert evaluation.metadata["threshold"].value == pytest.approx(0.001)
    assert evaluation.metadata["value"].value > 0.001
    assert "FAILED: rmse =" in evaluation.description and "required <= 0.001" in evaluation.description

    # The rejected model is the challenger, tagged as failed, and its evaluation run is FAILED.
    client = registry_client(tabml_home)
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert str(challenger.version) != first_champion
    assert challenger.tags["validation_status"] == "failed"
    evaluation_runs = [r for r in all_runs(tabml_home) if r.data.tags.get("dagster.run_id") == result.run_id and r.data.tags.get("dagster.asset_key") == "nyc_taxi/evaluation_report"]
    assert [r.info.status for r in evaluation_runs] == ["FAILED"]

    # The next scoring still uses the previous champion.
    run_selection(strict_defs, instance, [KEYS.batch_predictions], partition_key=plan.scoring_day.isoformat())
    scored = build_partition_store(strict_spec).read_frame(KEYS.batch_predictions, plan.scoring_day.isoformat())
    assert set(scored["model_version"]) == {first_champion}


def test_dry_run_reports_but_promotes(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    edit_pipeline(project_dir, lambda d: d["validation"].update({"run_mode": "dry_run", "criteria": {"r2": {"min": 0.9999}}}))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    plan = seed_demo(build_definitions(spec), spec, instance, TODAY)
    data = tabml_home / "data" / "nyc_taxi"
    report = json.loads((data / "evaluation_report" / f"{plan.training_day}.json").read_text())
    assert report["gate_passed"] is False
    check_key = AssetCheckKey(KEYS.evaluation_report, "gate_r2_min")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key]
    assert record.status == AssetCheckExecutionRecordStatus.FAILED
    assert record.event.dagster_event.event_specific_data.severity.value == "WARN"
    assert champion_version(tabml_home) == report["challenger"]["version"]
    champion = json.loads((data / "champion_model" / f"{plan.training_day}.json").read_text())
    assert champion["gate_warnings"] and "r2" in champion["gate_warnings"][0]


def test_disabled_gate_has_no_checks(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    def gate_checks() -> set[str]:
        defs = build_definitions(load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home))
        return {key.name for key in defs.resolve_asset_graph().asset_check_keys if key.name.startswith("gate_")}

    # The comparison with the champion is part of the default gate.
    assert gate_checks() == {"gate_rmse_max", "gate_r2_min", "gate_no_worse_than_champion"}
    edit_pipeline(project_dir, lambda d: d["validation"].update({"run_mode": "disabled"}))
    assert gate_checks() == set()


def test_beats_champion_criterion(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    """A retrained model on the same data cannot beat the champion by 50 %: not promoted."""
    edit_pipeline(project_dir, lambda d: d["validation"].update({"min_improvement_over_champion_pct": 50}))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    defs = build_definitions(spec)
    plan = seed_demo(defs, spec, instance, TODAY)  # first model: no champion yet, passes
    first = champion_version(tabml_home)
    result = run_selection(defs, instance, TRAINING, partition_key=plan.training_day.isoformat(), raise_on_error=False)
    assert not result.success
    assert champion_version(tabml_home) == first
    check_key = AssetCheckKey(KEYS.evaluation_report, "gate_beats_champion")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key]
    assert record.status == AssetCheckExecutionRecordStatus.FAILED
    assert "champion" in record.event.dagster_event.event_specific_data.description


def test_failed_training_step_marks_its_mlflow_run_failed(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    plan = plan_seed(spec, TODAY)
    defs = build_definitions(spec)
    run_selection(defs, instance, KEYS.assets("raw_data", "features"), partition_range=(plan.ingest_days[0].isoformat(), plan.ingest_days[-1].isoformat()))
    # A parameter the estimator rejects at fit time fails the step inside the MLflow run.
    edit_pipeline(project_dir, lambda d: d["estimator"]["params"].update({"learning_rate": -1.0}))
    bad_defs = build_definitions(load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home))
    result = run_selection(bad_defs, instance, [KEYS.trained_model], partition_key=plan.training_day.isoformat(), raise_on_error=False)
    assert not result.success
    runs = [r for r in all_runs(tabml_home) if r.data.tags.get("dagster.run_id") == result.run_id]
    assert [r.info.status for r in runs] == ["FAILED"]


def test_subset_run_and_materialize_finish_their_mlflow_runs(
    test_spec: LoadedSpec, tabml_home: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(test_spec)
    plan = plan_seed(test_spec, TODAY)
    run_selection(defs, instance, KEYS.assets("raw_data", "features"), partition_range=(plan.ingest_days[0].isoformat(), plan.ingest_days[-1].isoformat()))
    # A subset run: only trained_model.
    subset = run_selection(defs, instance, [KEYS.trained_model], partition_key=plan.training_day.isoformat())
    # materialize() over the asset definitions with the deployment's resources.
    materialized = materialize(
        list(defs.assets),
        selection=KEYS.assets("trained_model", "evaluation_report"),
        partition_key=plan.training_day.isoformat(),
        resources=build_resources(test_spec),
        instance=instance,
    )
    assert materialized.success
    for run_id in (subset.run_id, materialized.run_id):
        statuses = [r.info.status for r in all_runs(tabml_home) if r.data.tags.get("dagster.run_id") == run_id]
        assert statuses and set(statuses) == {"FINISHED"}
