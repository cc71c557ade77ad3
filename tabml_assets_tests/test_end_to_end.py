"""The whole graph materialized for real in a temporary DAGSTER_HOME and MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import AssetKey, DagsterInstance, Definitions
from mlflow.tracking import MlflowClient

from tabml_assets.resources import build_partition_store
from tabml_assets.seed import plan_seed, run_selection, seed_demo
from tabml_assets.spec import LoadedSpec
from tabml_assets_tests.conftest import TODAY


def latest_metadata(instance: DagsterInstance, asset: AssetKey, partition: str) -> dict:
    event = instance.get_latest_materialization_event(asset)
    records = instance.fetch_materializations(asset, limit=50).records
    for record in records:
        materialization = record.asset_materialization
        if materialization.partition == partition:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset.to_user_string()} for {partition}; latest was {event}")


def test_demo_graph_end_to_end(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    plan = seed_demo(test_defs, test_spec, instance, TODAY)
    store = build_partition_store(test_spec)
    keys = test_spec.keys
    event_time = test_spec.pipeline.event_time
    rows_per_day = test_spec.profile.data_source.demo_rows_per_day

    # raw -> features for every ingested day, one run for the whole range.
    for day in plan.ingest_days:
        raw = store.read_frame(keys.raw_data, day.isoformat())
        features = store.read_frame(keys.features, day.isoformat())
        assert len(raw) == len(features) == rows_per_day
        assert (pd.to_datetime(raw[event_time]).dt.date == day).all()
        assert set(test_spec.pipeline.feature_columns) <= set(features.columns)

    # The model beats the naive baseline by a wide margin on the held-out test split.
    report = store.read_record(keys.evaluation_report, plan.training_day.isoformat())
    ratio = report["challenger"]["metrics"]["rmse"] / report["baseline"]["metrics"]["rmse"]
    assert ratio <= 0.6, report
    assert report["gate_passed"] is True
    assert report["test_rows"] > 0

    # The champion alias points at the evaluated version, which has logged metrics.
    client = MlflowClient(tracking_uri=f"sqlite:///{tabml_home}/mlflow.db", registry_uri=f"sqlite:///{tabml_home}/mlflow.db")
    model_name = test_spec.profile.mlflow.model_name
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert str(champion.version) == report["challenger"]["version"]
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_rmse"] == report["challenger"]["metrics"]["rmse"]
    assert run.data.tags["dagster.asset_key"] == "nyc_taxi/trained_model"
    assert run.data.tags["tabml.project"] == "nyc_taxi"
    assert run.data.tags["tabml.window_end"] == plan.training_day.isoformat()
    # Training-data lineage: the window's features, with a content digest and their schema.
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == f"features[{plan.ingest_days[0]}..{plan.training_day}]"
    assert dataset_input.dataset.digest and "trip_distance" in dataset_input.dataset.schema
    assert str(store.asset_folder(keys.features)) in dataset_input.dataset.source
    # The evaluation run: each model's test metrics, the gate and the report, FINISHED.
    evaluated = latest_metadata(instance, test_spec.keys.evaluation_report, plan.training_day.isoformat())
    evaluation_run = client.get_run(evaluated["evaluation_mlflow_run_id"])
    assert evaluation_run.info.status == "FINISHED" and evaluation_run.data.tags["tabml.gate"] == "passed"
    assert evaluation_run.data.metrics["challenger_test_rmse"] == report["challenger"]["metrics"]["rmse"]
    assert evaluation_run.data.metrics["baseline_test_rmse"] == report["baseline"]["metrics"]["rmse"]
    assert {a.path for a in client.list_artifacts(evaluation_run.info.run_id)} == {"gate.json", "evaluation_report.html"}
    assert champion.tags["validation_status"] == "passed"

    # One finite prediction per input row, and the partition names the model that scored it.
    scoring_key = plan.scoring_day.isoformat()
    predictions = store.read_frame(keys.batch_predictions, scoring_key)
    features = store.read_frame(keys.features, scoring_key)
    assert len(predictions) == len(features) == rows_per_day
    assert predictions["prediction"].notna().all()
    assert set(predictions["model_version"]) == {str(champion.version)}
    metadata = latest_metadata(instance, test_spec.keys.batch_predictions, scoring_key)
    assert metadata["model_version"] == str(champion.version)
    assert metadata["dagster/row_count"] == rows_per_day


def test_reseeding_is_idempotent_for_stored_partitions(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    plan = plan_seed(test_spec, TODAY)
    key = plan.ingest_days[0].isoformat()
    store = build_partition_store(test_spec)
    run_selection(test_defs, instance, [test_spec.keys.raw_data], partition_key=key)
    first = store.read_frame(test_spec.keys.raw_data, key)
    run_selection(test_defs, instance, [test_spec.keys.raw_data], partition_key=key)
    second = store.read_frame(test_spec.keys.raw_data, key)
    pd.testing.assert_frame_equal(first, second)


def test_end_to_end_job_scores_with_the_champion_it_just_promoted(
    test_defs: Definitions, test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    """The demo job on a fresh registry: train, promote, then score the same day with that model."""
    plan = plan_seed(test_spec, TODAY)
    keys = test_spec.keys
    run_selection(test_defs, instance, keys.assets("raw_data", "features"), partition_range=(plan.ingest_days[0].isoformat(), plan.training_day.isoformat()))
    result = test_defs.resolve_job_def("nyc_taxi_end_to_end_job").execute_in_process(
        instance=instance, partition_key=plan.scoring_day.isoformat()
    )
    assert result.success
    store = build_partition_store(test_spec)
    champion = store.read_record(keys.champion_model, plan.scoring_day.isoformat())
    scored = store.read_frame(keys.batch_predictions, plan.scoring_day.isoformat())
    assert set(scored["model_version"]) == {champion["version"]}
