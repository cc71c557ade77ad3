"""Batch scoring: `score_frame` on tiny frames, and batch_predictions materialized for real
(a registered champion, a range of partitions streamed in small batches)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, Definitions
from sklearn.pipeline import Pipeline

from tabml_assets.assets import build_assets
from tabml_assets.ml.features import FeatureTable, MissingColumnsError, build_features
from tabml_assets.ml.scoring import PREDICTION_COLUMN, predict_in_chunks, score_frame
from tabml_assets.ml.training import fit_model, model_inputs, split_chronologically
from tabml_assets.resources import build_model_registry, build_resources
from tabml_assets.resources.model_registry import CHAMPION, ModelVersionRef
from tabml_assets.resources.storage import PartitionedParquetIOManager, PartitionStore
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec, load_spec

SCORED_AT = dt.datetime(2026, 3, 10, 0, 30, tzinfo=dt.UTC)
DAYS = ["2026-03-08", "2026-03-09"]


def demo_features(spec: LoadedSpec, day: str, rows: int) -> pd.DataFrame:
    """The project's demo rows for `day` through its steps.build_features, as the features asset makes them."""
    assert spec.steps.demo_rows is not None
    raw = spec.steps.demo_rows(dt.date.fromisoformat(day), rows)
    return build_features(raw, FeatureTable.of(spec.pipeline), derive=spec.steps.build_features)


def fitted_model(spec: LoadedSpec, rows: int = 600) -> Pipeline:
    features = demo_features(spec, "2026-03-01", rows)
    splits = split_chronologically(features, spec.pipeline.split, spec.pipeline.event_time)
    return fit_model(splits, spec.pipeline, spec.steps).model


def register_champion(spec: LoadedSpec) -> ModelVersionRef:
    """Register a small fitted model and point `champion` at it, as champion_model would."""
    registry = build_model_registry(spec)
    model = fitted_model(spec)
    example = model_inputs(demo_features(spec, "2026-03-01", 5), spec.pipeline)
    with registry.run("test champion", {"tabml.test": "scoring"}) as run:
        ref = registry.log_and_register(run, model, example, model.predict(example))
    registry.set_alias(CHAMPION, ref.version)
    return ref


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """One fitted model for the pure tests (the spec's pipeline does not depend on TABML_HOME)."""
    return fitted_model(load_spec("test", tabml_home=tmp_path_factory.mktemp("scoring_home")))


def definitions_with(spec: LoadedSpec, **resources: object) -> Definitions:
    return Definitions(assets=build_assets(spec), resources={**build_resources(spec), **resources})


def test_score_frame_adds_prediction_and_provenance(test_spec: LoadedSpec, model: Pipeline) -> None:
    features = demo_features(test_spec, "2026-03-08", 3)
    before = features.copy()

    scored = score_frame(features, model, test_spec.pipeline.feature_columns, "fare", "4", SCORED_AT)

    pd.testing.assert_frame_equal(features, before)  # the input is not modified
    assert list(scored.columns) == [*features.columns, PREDICTION_COLUMN, "model_name", "model_version", "scored_at"]
    assert scored[PREDICTION_COLUMN].tolist() == pytest.approx(
        model.predict(features[test_spec.pipeline.feature_columns]).tolist()
    )
    assert set(scored["model_version"]) == {"4"} and set(scored["model_name"]) == {"fare"}
    # Naive UTC, like every other timestamp tabml stores.
    assert set(scored["scored_at"]) == {pd.Timestamp("2026-03-10 00:30:00")}


def test_score_frame_names_a_missing_feature_column(test_spec: LoadedSpec, model: Pipeline) -> None:
    features = demo_features(test_spec, "2026-03-08", 3).drop(columns=["pickup_zip"])
    with pytest.raises(MissingColumnsError, match=r"scoring input: missing columns \['pickup_zip'\]"):
        score_frame(features, model, test_spec.pipeline.feature_columns, "fare", "4", SCORED_AT)


def test_score_frame_on_no_rows_keeps_the_columns(test_spec: LoadedSpec, model: Pipeline) -> None:
    empty = demo_features(test_spec, "2026-03-08", 3).iloc[:0]
    scored = score_frame(empty, model, test_spec.pipeline.feature_columns, "fare", "4", SCORED_AT)
    assert len(scored) == 0 and PREDICTION_COLUMN in scored.columns


def test_chunked_prediction_equals_one_predict(test_spec: LoadedSpec, model: Pipeline) -> None:
    inputs = demo_features(test_spec, "2026-03-08", 101)[test_spec.pipeline.feature_columns]
    assert predict_in_chunks(model, inputs, chunk_rows=10).tolist() == model.predict(inputs).tolist()


def test_batch_predictions_without_champion_says_what_to_run(
    test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance
) -> None:
    # The alias is checked before any partition is read.
    result = run_selection(
        test_defs, instance, [test_spec.keys.batch_predictions], partition_key=DAYS[0], raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "has no 'champion' alias yet" in message and test_spec.profile.mlflow.model_name in message


def test_range_run_streams_each_partition_through_the_champion(
    test_spec: LoadedSpec, instance: DagsterInstance, tabml_home: Path
) -> None:
    champion = register_champion(test_spec)
    keys = test_spec.keys
    root = Path(test_spec.resolve_local(test_spec.profile.storage.root))
    # Batches of 64 rows: each 400-row day is scored in 7 batches, as a large day would be.
    store = PartitionStore(root=str(root), stream_batch_rows=64)
    defs = definitions_with(test_spec, partition_store=store, io_manager=PartitionedParquetIOManager(store=store))

    result = run_selection(
        defs, instance, keys.assets("raw_data", "features", "batch_predictions"), partition_range=(DAYS[0], DAYS[-1])
    )

    assert result.success
    model = build_model_registry(test_spec).load_model(champion)
    rows_per_day = test_spec.profile.data_source.demo_rows_per_day
    all_predictions = []
    for day in DAYS:
        features = store.read_frame(keys.features, day)
        predictions = store.read_frame(keys.batch_predictions, day)
        assert len(features) == len(predictions) == rows_per_day
        assert pq.ParquetFile(store.path(keys.batch_predictions, day)).metadata.num_row_groups == 7
        expected = score_frame(
            features, model, test_spec.pipeline.feature_columns, champion.name, champion.version,
            predictions["scored_at"].iloc[0].to_pydatetime(),
        )
        pd.testing.assert_frame_equal(predictions, expected, rtol=0, atol=1e-9)
        all_predictions.append(predictions)

    # One materialization per partition, each carrying the run's totals and the champion.
    records = instance.fetch_materializations(keys.batch_predictions, limit=10).records
    assert sorted(r.asset_materialization.partition for r in records) == DAYS
    for record in records:
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert metadata["dagster/row_count"] == 2 * rows_per_day
        assert metadata["rows_per_partition"] == dict.fromkeys(DAYS, rows_per_day)
        assert metadata["model_version"] == champion.version
        assert metadata["mlflow_run_id"] == champion.run_id
        assert metadata["mean_prediction"] == pytest.approx(pd.concat(all_predictions)[PREDICTION_COLUMN].mean())
        assert metadata["engine"] == "pandas, streamed in batches of 64 rows"
        assert "prediction" in {c.name for c in metadata["dagster/column_schema"].columns}
