"""Training on Spark: `estimator.class: SparkXGBRegressor` / `SparkXGBClassifier` fits the
window's feature files with xgboost.spark in pyspark local mode, on a driver whose result
size is capped below the window, and registers a plain scikit-learn Pipeline that the
pandas scoring path loads and scores without Spark."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from dagster import DagsterInstance, Definitions
from pyspark.sql import SparkSession
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from tabml_assets.assets import build_assets
from tabml_assets.ml.estimators import LabelEncodedClassifier, build_model_pipeline
from tabml_assets.ml.features import FeatureTable, build_features
from tabml_assets.ml.metrics import regression_metrics
from tabml_assets.ml.spark_training import fit_window_on_spark
from tabml_assets.ml.training import labelled_rows, split_chronologically
from tabml_assets.resources import build_partition_store, build_resources
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.seed import run_selection
from tabml_assets.spec import EstimatorSpec, LoadedSpec, PipelineSpec, load_spec

FIRST_DAY = dt.date(2026, 3, 1)
WINDOW_DAYS = 3
ROWS_PER_DAY = 20_000
# The driver may receive 2 MiB of results; collecting the 60k-row window takes several times that.
DRIVER_CAP = "2m"
CAPPED_SPARK = SparkSessionResource(master="local[2]", config={"spark.driver.maxResultSize": DRIVER_CAP})
SPARK_XGB = {"n_estimators": 40, "max_depth": 5, "learning_rate": 0.2, "num_workers": 2}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = CAPPED_SPARK.get_session()
    # A session started earlier in this process would not carry the cap.
    assert session.sparkContext.getConf().get("spark.driver.maxResultSize") == DRIVER_CAP
    yield session
    session.stop()


@pytest.fixture(scope="module")
def taxi(tmp_path_factory: pytest.TempPathFactory) -> LoadedSpec:
    return load_spec("test", tabml_home=tmp_path_factory.mktemp("spark_training_home"))


@pytest.fixture(scope="module")
def window_files(tmp_path_factory: pytest.TempPathFactory, taxi: LoadedSpec) -> list[str]:
    """Three days of the example's feature partitions, 20k trips each."""
    folder = tmp_path_factory.mktemp("window")
    assert taxi.steps.demo_rows is not None
    paths = []
    for offset in range(WINDOW_DAYS):
        day = FIRST_DAY + dt.timedelta(days=offset)
        raw = taxi.steps.demo_rows(day, ROWS_PER_DAY)
        features = build_features(raw, table=FeatureTable.of(taxi.pipeline), derive=taxi.steps.build_features)
        path = folder / f"{day}.parquet"
        features.to_parquet(path, index=False)
        paths.append(str(path))
    return paths


def with_estimator(pipeline: PipelineSpec, class_name: str, params: dict[str, object]) -> PipelineSpec:
    return pipeline.model_copy(
        update={"estimator": EstimatorSpec.model_validate({"class": class_name, "params": params})}
    )


@pytest.mark.slow
def test_spark_fit_trains_on_every_row_of_a_window_the_driver_cannot_hold(
    spark: SparkSession, taxi: LoadedSpec, window_files: list[str]
) -> None:
    spec = with_estimator(taxi.pipeline, "SparkXGBRegressor", SPARK_XGB)
    # The window does not fit through the driver: collecting it, as a pandas fit must, fails.
    with pytest.raises(Exception, match=r"bigger than spark\.driver\.maxResultSize"):
        spark.read.parquet(*window_files).toPandas()

    trained = fit_window_on_spark(spark, window_files, spec, taxi.steps, driver_sample_rows=2_000)

    # The same chronological split an in-process fit makes, read here without Spark.
    window = pd.concat([pd.read_parquet(p) for p in window_files], ignore_index=True)
    splits = split_chronologically(labelled_rows(window, spec.target_column), spec.split, spec.event_time)
    assert trained.window_rows == len(window) == WINDOW_DAYS * ROWS_PER_DAY
    assert trained.labelled_rows == window[spec.target_column].notna().sum()
    test_starts = splits.test[spec.event_time].min()
    fitted = window[window[spec.event_time] < test_starts]
    # Every train and validation row (up to the test split's first timestamp) was fitted on.
    assert trained.fit.fitted_rows == len(fitted)
    assert len(splits.train) + len(splits.validation) - trained.fit.fitted_rows <= (
        (window[spec.event_time] == test_starts).sum()
    )
    assert trained.fit.train_rows + trained.fit.validation_rows + trained.fit.test_rows == trained.labelled_rows

    # A plain Pipeline: tabml's preprocessing and an XGBRegressor holding the Spark booster.
    model = trained.fit.model
    assert isinstance(model, Pipeline) and isinstance(model.named_steps["estimator"], XGBRegressor)
    assert model.named_steps["estimator"].get_booster().num_boosted_rounds() == SPARK_XGB["n_estimators"]
    inputs, truth = splits.test[spec.feature_columns], splits.test[spec.target_column].to_numpy()
    naive = regression_metrics(truth, np.full(len(truth), fitted[spec.target_column].mean()))
    assert regression_metrics(truth, model.predict(inputs))["rmse"] < 0.5 * naive["rmse"]
    assert trained.fit.validation_metrics["rmse"] < 0.5 * naive["rmse"]
    # What the registry stores (skops) loads back and predicts the same.
    data = skops.io.dumps(model)
    loaded = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert np.array_equal(loaded.predict(inputs), model.predict(inputs))
    assert len(trained.example) == 5 and list(trained.example.columns) == spec.feature_columns


@pytest.mark.slow
def test_spark_classifier_registers_a_label_encoded_xgb_classifier(
    spark: SparkSession, taxi: LoadedSpec, window_files: list[str], tmp_path: Path
) -> None:
    frame = pd.read_parquet(window_files[0]).head(6_000)
    frame = frame.assign(expensive=np.where(frame["fare_amount"] > frame["fare_amount"].median(), "yes", "no"))
    halves = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    frame.iloc[:3_000].to_parquet(halves[0], index=False)
    frame.iloc[3_000:].to_parquet(halves[1], index=False)
    spec = PipelineSpec.model_validate(
        {
            **taxi.pipeline.model_dump(by_alias=True, exclude={"data_quality", "validation"}),
            "dataset": {
                **taxi.pipeline.dataset.model_dump(by_alias=True),
                "columns": {**taxi.pipeline.dataset.model_dump(by_alias=True)["columns"], "expensive": {"type": "string"}},
                "label_columns": ["expensive"],
            },
            "target": {"column": "expensive", "task": "binary", "positive_class": "yes"},
            "features": {**taxi.pipeline.features.model_dump(), "columns": ["trip_distance", "pickup_zip"]},
            "estimator": {"class": "SparkXGBClassifier", "params": {"n_estimators": 20, "num_workers": 2}},
            "primary_metric": "roc_auc",
        }
    )
    trained = fit_window_on_spark(spark, [str(p) for p in halves], spec, taxi.steps, driver_sample_rows=1_000)

    estimator = trained.fit.model.named_steps["estimator"]
    assert isinstance(estimator, LabelEncodedClassifier) and isinstance(estimator.estimator_, XGBClassifier)
    assert list(estimator.classes_) == ["no", "yes"]
    probabilities = trained.fit.model.predict_proba(frame[spec.feature_columns])
    assert probabilities.shape == (len(frame), 2)
    assert set(trained.fit.model.predict(frame[spec.feature_columns])) <= {"no", "yes"}
    assert trained.fit.validation_metrics["roc_auc"] > 0.8


def test_spark_estimators_are_not_built_into_an_in_process_pipeline(taxi: LoadedSpec) -> None:
    spec = with_estimator(taxi.pipeline, "SparkXGBRegressor", SPARK_XGB)
    with pytest.raises(ValueError, match="SparkXGBRegressor trains on Spark from the window's files"):
        build_model_pipeline(spec, taxi.steps)


def test_spark_fit_names_a_parameter_xgboost_spark_refuses(
    spark: SparkSession, taxi: LoadedSpec, window_files: list[str]
) -> None:
    spec = with_estimator(taxi.pipeline, "SparkXGBRegressor", {"n_estimators": 5, "n_jobs": 2})
    with pytest.raises(ValueError, match=r"estimator.params for SparkXGBRegressor: \['n_jobs'\]"):
        fit_window_on_spark(spark, window_files[:1], spec, taxi.steps, driver_sample_rows=1_000)


@pytest.mark.slow
def test_spark_trained_champion_is_scored_by_the_pandas_path(
    spark: SparkSession, test_spec: LoadedSpec, instance: DagsterInstance
) -> None:
    spec = test_spec.model_copy(
        update={"pipeline": with_estimator(test_spec.pipeline, "SparkXGBRegressor", SPARK_XGB)}
    )
    keys = spec.keys
    days = [str(FIRST_DAY + dt.timedelta(days=i)) for i in range(spec.pipeline.training_window_days + 1)]
    plain = Definitions(assets=build_assets(spec), resources=build_resources(spec))
    on_spark = Definitions(assets=build_assets(spec), resources={**build_resources(spec), "spark": CAPPED_SPARK})
    assert run_selection(plain, instance, keys.assets("raw_data", "features"), partition_range=(days[0], days[-1])).success

    trained = run_selection(
        on_spark, instance, keys.assets("trained_model", "evaluation_report", "champion_model"),
        partition_key=days[-2],
    )
    assert trained.success
    store = build_partition_store(spec)
    record = store.read_record(keys.trained_model, days[-2])
    window = pd.concat([store.read_frame(keys.features, d) for d in days[:-1]])
    assert record["rows"]["window"] == len(window)

    # Scoring needs no Spark: the plain resources load models:/<name>/<champion> and predict.
    scored = run_selection(plain, instance, keys.assets("batch_predictions"), partition_key=days[-1])
    assert scored.success
    predictions = store.read_frame(keys.batch_predictions, days[-1])
    features = store.read_frame(keys.features, days[-1])
    assert len(predictions) == len(features) > 0
    assert set(predictions["model_version"]) == {record["model"]["version"]}
    assert predictions["prediction"].between(0, 1000).all()
