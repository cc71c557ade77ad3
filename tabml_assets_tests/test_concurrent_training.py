"""Two trainings at once in one process: each step writes its own MLflow run through its own
registry resource, both runs end FINISHED with their own params, metrics and model version, and
MLflow's process-wide fluent state is left as it was."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
from dagster import DagsterInstance, ExecuteInProcessResult
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.ml.records import TrainedModel
from tabml_assets.seed import plan_seed, run_selection
from tabml_assets.spec import LoadedSpec
from tabml_assets_tests.conftest import TODAY


def test_two_trainings_in_one_process_write_separate_complete_mlflow_runs(
    test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    keys = test_spec.keys
    plan = plan_seed(test_spec, TODAY)
    days = [plan.ingest_days[0].isoformat(), plan.ingest_days[-1].isoformat()]
    run_selection(build_definitions(test_spec), instance, keys.assets("raw_data", "features"), partition_range=(days[0], days[1]))
    # Two partitions whose whole training windows are ingested.
    partitions = [plan.training_day.isoformat(), plan.scoring_day.isoformat()]
    fluent_uri_before = mlflow.get_tracking_uri()

    start = threading.Barrier(len(partitions))
    results: dict[str, ExecuteInProcessResult] = {}
    errors: list[BaseException] = []

    def train(partition: str) -> None:
        # Its own Definitions: its own ModelRegistry instance, with its own MLflow client.
        defs = build_definitions(test_spec)
        try:
            start.wait(timeout=60)
            with DagsterInstance.ephemeral() as own:
                results[partition] = run_selection(defs, own, [keys.trained_model], partition_key=partition)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(p,), name=f"train {p}") for p in partitions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert errors == [] and sorted(results) == sorted(partitions)

    uri = f"sqlite:///{tabml_home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(test_spec.profile.mlflow.experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`dagster.asset_key` = 'nyc_taxi/trained_model'")
    assert len(runs) == 2
    by_partition = {run.data.tags["dagster.partition_key"]: run for run in runs}
    assert sorted(by_partition) == sorted(partitions)
    versions = set()
    for partition, result in results.items():
        run = by_partition[partition]
        record = result.output_for_node(keys.trained_model.to_python_identifier())
        assert isinstance(record, TrainedModel)
        assert run.info.status == "FINISHED" and run.info.end_time is not None
        assert run.data.tags["dagster.run_id"] == result.run_id
        # Its own window, params and metrics: nothing of the other run leaked in.
        assert run.data.tags["tabml.window_end"] == partition == record.window_end
        assert run.data.params["spec.training_window_days"] == str(test_spec.pipeline.training_window_days)
        assert run.data.metrics["validation_rmse"] == record.validation_metrics["rmse"]
        assert run.data.tags["tabml.training_rows"] == str(record.rows.fitted)
        version = client.get_model_version(test_spec.profile.mlflow.model_name, record.model.version)
        assert version.run_id == run.info.run_id == record.model.run_id
        # The model is the run's one output, complete, and the source of the registered version.
        (output,) = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        assert logged.source_run_id == run.info.run_id and logged.status == "READY"
        assert version.source == logged.artifact_location
        versions.add(record.model.version)
    assert versions == {"1", "2"}
    # They ran at once: each run started before the other ended (a process-wide lock held
    # across the fit would run them one after the other).
    first, second = runs
    assert first.info.start_time < second.info.end_time and second.info.start_time < first.info.end_time
    # And MLflow's process-wide state is untouched: no active run, the tracking URI as it was.
    assert mlflow.active_run() is None
    assert mlflow.get_tracking_uri() == fluent_uri_before
