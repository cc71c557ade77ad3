"""Spark for large partitions: pyspark local mode runs the same pandas functions through
mapInPandas (model broadcast), and a 1M-row partition gives the same features and predictions
as the pandas streaming path. One local session serves the whole module (startup ~10 s)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, ResourceDefinition
from pyspark.sql import SparkSession

from tabml_assets.ml.features import FeatureTable, build_features
from tabml_assets.ml.scoring import PREDICTION_COLUMN, score_frame
from tabml_assets.ml.spark_jobs import shared_with_executors
from tabml_assets.resources import build_partition_store, build_resources
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import (
    SUMMARY_SUFFIX,
    PartitionStore,
    SummaryColumns,
)
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec, load_spec
from tabml_assets_tests.test_scoring import definitions_with, fitted_model, register_champion

DAY = "2026-03-01"
MILLION = 1_000_000
SCORED_AT = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
# Small input splits, so a 1M-row day runs as several tasks whose part files must be put back
# together in order.
LOCAL_SPARK = SparkSessionResource(master="local[2]", config={"spark.sql.files.maxPartitionBytes": "4m"})


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = LOCAL_SPARK.get_session()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def taxi(tmp_path_factory: pytest.TempPathFactory) -> LoadedSpec:
    """The nyc_taxi example of the test deployment: its demo rows, steps and asset keys."""
    return load_spec("test", tabml_home=tmp_path_factory.mktemp("spark_home"))


def taxi_features(spec: LoadedSpec) -> partial:
    """The features asset's batch transform: the example's steps.build_features in tabml's table."""
    return partial(build_features, table=FeatureTable.of(spec.pipeline), derive=spec.steps.build_features)


@pytest.fixture(scope="module")
def big_store(
    tmp_path_factory: pytest.TempPathFactory, taxi: LoadedSpec
) -> Iterator[PartitionStore]:
    """A store holding one 1M-row raw_data partition and its features, made by the pandas path."""
    root = tmp_path_factory.mktemp("big_store")
    store = PartitionStore(root=str(root))
    assert taxi.steps.demo_rows is not None
    raw = taxi.steps.demo_rows(dt.date.fromisoformat(DAY), MILLION)
    raw_path = store.path(taxi.keys.raw_data, DAY)
    raw_path.parent.mkdir(parents=True)
    raw.to_parquet(raw_path, index=False, row_group_size=MILLION // 4)
    store.transform_partition(taxi.keys.raw_data, taxi.keys.features, DAY, taxi_features(taxi))
    yield store
    shutil.rmtree(root, ignore_errors=True)


def copy_aside(path: Path, name: str) -> Path:
    aside = path.parent.parent / "pandas_path" / name
    aside.parent.mkdir(exist_ok=True)
    shutil.copy(path, aside)
    return aside


def test_features_of_a_million_rows_are_identical_on_spark(
    spark: SparkSession, big_store: PartitionStore, taxi: LoadedSpec
) -> None:
    keys = taxi.keys
    pandas_path = big_store.read_frame(keys.features, DAY)

    raw_path = big_store.path(keys.raw_data, DAY)
    assert spark.read.parquet(str(raw_path)).rdd.getNumPartitions() > 1

    # The example's build_features is imported from its project folder, not an installed
    # package: the executors get it pickled by value.
    written = big_store.transform_partition(
        keys.raw_data, keys.asset("features_on_spark"), DAY, taxi_features(taxi), spark=spark
    )

    on_spark = pd.read_parquet(written.path)
    assert len(on_spark) == MILLION
    # Same rows in the same order, same dtypes (timestamps stay naive microseconds).
    pd.testing.assert_frame_equal(on_spark, pandas_path, rtol=0, atol=1e-9)
    # Spark's part files were compacted into the partition file and removed; beside it only
    # the partition's summary, which the checks read.
    assert sorted(p.name for p in written.path.parent.iterdir()) == [f"{DAY}.parquet", f"{DAY}{SUMMARY_SUFFIX}"]


def test_predictions_of_a_million_rows_are_identical_on_spark(
    spark: SparkSession, big_store: PartitionStore, tmp_path: Path
) -> None:
    spec = load_spec("test", tabml_home=tmp_path)
    model = fitted_model(spec)
    keys = spec.keys
    score = partial(
        score_frame, feature_columns=spec.pipeline.feature_columns, model_name="fare",
        model_version="3", scored_at=SCORED_AT,
    )
    summary = SummaryColumns(sums=(PREDICTION_COLUMN,))

    on_pandas = big_store.transform_partition(
        keys.features, keys.batch_predictions, DAY, score, {"model": model}, summary=summary
    )
    pandas_file = copy_aside(on_pandas.path, "predictions.parquet")
    on_spark = big_store.transform_partition(
        keys.features, keys.batch_predictions, DAY, score, {"model": model}, spark=spark, summary=summary
    )

    expected, got = pd.read_parquet(pandas_file), pd.read_parquet(on_spark.path)
    assert len(got) == MILLION
    pd.testing.assert_frame_equal(got, expected, rtol=0, atol=1e-9)
    assert on_spark.rows == on_pandas.rows == MILLION
    assert on_spark.column_sums[PREDICTION_COLUMN] == pytest.approx(on_pandas.column_sums[PREDICTION_COLUMN], rel=1e-12)


def test_the_model_is_broadcast_once_and_released(spark: SparkSession) -> None:
    with shared_with_executors(spark, {"model": "a fitted model"}) as objects:
        values = spark.sparkContext.parallelize(range(4), 2).map(lambda _: objects.get()["model"]).collect()
        # Tasks carry a broadcast handle, not a copy of the model each.
        assert objects.values is None and objects.broadcast is not None
        broadcast_file = Path(objects.broadcast._path)
        assert broadcast_file.exists()
    assert values == ["a fitted model"] * 4
    assert not broadcast_file.exists()  # destroyed once the job is done


def test_assets_run_on_spark_when_the_resource_is_present(
    spark: SparkSession, test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance
) -> None:
    champion = register_champion(test_spec)
    keys = test_spec.keys
    store = build_partition_store(test_spec)
    assets = keys.assets("raw_data", "features", "batch_predictions")
    run_selection(test_defs, instance, assets, partition_key=DAY)
    on_pandas = {
        a: store.read_frame(keys.asset(a), DAY) for a in ("features", "batch_predictions")
    }

    spark_defs = definitions_with(test_spec, spark=SparkSessionResource(master="local[2]"))
    result = run_selection(spark_defs, instance, assets, partition_key=DAY)

    assert result.success
    features = store.read_frame(keys.features, DAY)
    predictions = store.read_frame(keys.batch_predictions, DAY)
    pd.testing.assert_frame_equal(features, on_pandas["features"])
    # Same predictions from the same champion; only the scoring time differs between the runs.
    pd.testing.assert_frame_equal(
        predictions.drop(columns="scored_at"), on_pandas["batch_predictions"].drop(columns="scored_at"),
        rtol=0, atol=1e-9,
    )
    assert set(predictions["model_version"]) == {champion.version}
    materialization = result.asset_materializations_for_node("nyc_taxi__batch_predictions")[0]
    assert materialization.metadata["engine"].value == "spark (local[2]), mapInPandas"
    assert materialization.metadata["dagster/row_count"].value == len(predictions)


def test_spark_resource_is_present_only_where_a_cluster_runs_the_steps(tmp_path: Path) -> None:
    for deployment in ("dev", "test"):
        spark = build_resources(load_spec(deployment, tabml_home=tmp_path))["spark"]
        assert isinstance(spark, ResourceDefinition) and spark.resource_fn(None) is None
    for deployment in ("staging", "prod"):
        spark = build_resources(load_spec(deployment, tabml_home=tmp_path))["spark"]
        # master None: the session of the Databricks cluster the step runs on.
        assert isinstance(spark, SparkSessionResource) and spark.master is None


def test_cluster_mode_returns_the_running_session(spark: SparkSession) -> None:
    assert SparkSessionResource().get_session() is spark
