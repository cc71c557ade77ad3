"""Train on Spark: XGBoost's `xgboost.spark` estimators fitted on the window's feature files,
registered as the plain scikit-learn Pipeline every other model is.

`estimator.class: SparkXGBRegressor` (or `SparkXGBClassifier`) fits the window where it lives:
Spark reads the feature partitions, splits them chronologically, applies the project's
fitted preprocessing with `mapInPandas` on every executor, and trains XGBoost with
`num_workers` Spark tasks. No step collects the window to the driver, so a window larger
than the driver's memory trains.

What comes back is the same `Pipeline([("preprocess", ...), ("estimator", XGBRegressor)])`
an in-process fit registers: the booster Spark trained, loaded into a plain `XGBRegressor` /
`XGBClassifier`. MLflow stores it with skops as always, and batch scoring (pandas or Spark)
loads and scores it without Spark.

What runs on a bounded number of rows on the driver, and why that is enough:

- The preprocessing is fitted on the first `DRIVER_SAMPLE_ROWS` rows of its split plus one row
  per distinct category of every categorical column, so the ordinal codes cover every
  category the split holds. tabml's tree preprocessing learns nothing else (numbers pass
  through); a project's own `build_preprocessor` is fitted on the same rows.
- Train and validation metrics are computed on at most `DRIVER_SAMPLE_ROWS` rows of each split
  (a seeded sample), scored by the registered Pipeline. The gate's test metrics are
  evaluation_report's own.

The split follows `split_chronologically`'s row counts, by time: train is the rows before the
event time at position n_train, validation those before the one at n_train + n_validation.
Rows that share the test split's first timestamp all stay out of training, so the test
split evaluation_report scores is never trained on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from tabml_assets.ml.estimators import LabelEncodedClassifier, build_model_pipeline
from tabml_assets.ml.training import FitResult, TrainedWindow, label_array, split_metrics
from tabml_assets.spec import EstimatorSpec, PipelineSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

    from tabml_assets.steps import ProjectSteps

# The Spark estimator -> the plain XGBoost estimator its booster is registered as.
SPARK_ESTIMATORS: dict[str, str] = {
    "SparkXGBRegressor": "XGBRegressor",
    "SparkXGBClassifier": "XGBClassifier",
}
# Parameters of the Spark estimators only; the registered XGB* estimator does not take them.
SPARK_ONLY_PARAMS = frozenset({"num_workers", "force_repartition", "repartition_random_shuffle"})
# XGBoost parameters the Spark estimators refuse, which the in-process ones accept.
NOT_ON_SPARK = frozenset({"n_jobs", "enable_categorical"})
DRIVER_SAMPLE_ROWS = 100_000
LABEL = "__tabml_label"
FEATURE_PREFIX = "__tabml_f"
SAMPLE_SEED = 0


def is_spark_estimator(estimator: EstimatorSpec) -> bool:
    return estimator.class_name in SPARK_ESTIMATORS


def registered_estimator_spec(estimator: EstimatorSpec) -> EstimatorSpec:
    """The in-process XGB* estimator the Spark booster is registered as, with the spec's
    parameters minus the Spark-only ones."""
    params = {k: v for k, v in estimator.params.items() if k not in SPARK_ONLY_PARAMS}
    return EstimatorSpec.model_validate(
        {"class": SPARK_ESTIMATORS[estimator.class_name], "params": params}
    )


def _timestamp_at(frame: SparkDataFrame, column: str, position: int) -> Any:
    """The value of `column` at `position` (0-based) of the frame sorted by it."""
    row = frame.select(column).orderBy(column).offset(position).limit(1).collect()
    return row[0][0] if row else None


@dataclass(frozen=True)
class _SparkSplits:
    train: SparkDataFrame
    validation: SparkDataFrame
    train_rows: int
    validation_rows: int
    test_rows: int


def split_chronologically_on_spark(
    labelled: SparkDataFrame, rows: int, spec: PipelineSpec
) -> _SparkSplits:
    """`split_chronologically`'s train and validation splits, by event time, on Spark."""
    from pyspark.sql import functions as F

    if rows < 3:
        raise ValueError(f"training window: expected at least 3 labelled rows to split, found {rows}")
    ratios, time = spec.split, spec.event_time
    n_validation = round(rows * ratios.validation)
    n_train = max(1, round(rows * ratios.train))
    n_train = min(n_train, rows - 1 - n_validation) if n_validation else min(n_train, rows - 1)
    validation_starts = _timestamp_at(labelled, time, n_train)
    test_starts = _timestamp_at(labelled, time, n_train + n_validation)
    in_train = F.col(time) < F.lit(validation_starts)
    in_validation = (F.col(time) >= F.lit(validation_starts)) & (F.col(time) < F.lit(test_starts))
    train, validation = labelled.where(in_train), labelled.where(in_validation)
    # Both counts in one pass over the window.
    counts = labelled.agg(
        F.sum(in_train.cast("long")).alias("train"), F.sum(in_validation.cast("long")).alias("validation")
    ).first()
    assert counts is not None
    train_rows, validation_rows = int(counts["train"] or 0), int(counts["validation"] or 0)
    if train_rows == 0:
        raise ValueError(
            f"training window: the oldest {n_train} labelled rows all share the event time "
            f"{validation_starts} of the validation split's first row; no row is left to train on"
        )
    return _SparkSplits(
        train, validation, train_rows, validation_rows, rows - train_rows - validation_rows
    )


def _driver_sample(frame: SparkDataFrame, rows: int, columns: Sequence[str], limit: int) -> pd.DataFrame:
    """At most `limit` rows of `frame` on the driver: all of them if it is that small."""
    selected = frame.select(*columns)
    if rows > limit:
        selected = selected.sample(fraction=min(1.0, 1.2 * limit / rows), seed=SAMPLE_SEED).limit(limit)
    return selected.toPandas()


def _preprocessing_rows(
    frame: SparkDataFrame, spec: PipelineSpec, sample: pd.DataFrame
) -> pd.DataFrame:
    """`sample` plus one row per distinct category of each categorical column of `frame`."""
    extra: list[pd.DataFrame] = []
    for column in spec.categorical_columns:
        values = [row[0] for row in frame.select(column).distinct().collect()]
        rows = sample.iloc[[0] * len(values)].copy()
        rows[column] = pd.Series(values, index=rows.index, dtype=sample[column].dtype)
        extra.append(rows)
    return pd.concat([sample, *extra], ignore_index=True)


@contextmanager
def _transformed(
    session: SparkSession, frame: SparkDataFrame, preprocessor: Any, spec: PipelineSpec,
    feature_count: int, label_encoder: LabelEncoder | None,
) -> Iterator[SparkDataFrame]:
    """`frame` as the booster's input: the fitted preprocessing's output columns and the label
    (class codes for a classifier), transformed batch by batch on the executors. The frame is
    lazy: the broadcast preprocessing lives, and its cache is kept, until the block exits."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    features = [f"{FEATURE_PREFIX}{i}" for i in range(feature_count)]
    schema = StructType([StructField(name, DoubleType()) for name in [*features, LABEL]])
    columns, target = spec.feature_columns, spec.target_column
    # Imported here: pyspark costs the code location's load ~0.2 s, and only Spark fits need it.
    from tabml_assets.ml.spark_jobs import shared_with_executors, ship_project_code_by_value

    ship_project_code_by_value()
    with shared_with_executors(session, {"preprocessor": preprocessor, "labels": label_encoder}) as shared:

        def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            objects = shared.get()
            for batch in batches:
                values = np.asarray(objects["preprocessor"].transform(batch[columns]), dtype="float64")
                out = pd.DataFrame(values, columns=features)
                labels = batch[target].to_numpy()
                encoder = objects["labels"]
                out[LABEL] = encoder.transform(labels) if encoder is not None else labels
                yield out.astype("float64")

        # Cached so the transform runs once, not once per pass of the fit over its input.
        transformed = frame.select(*columns, target).mapInPandas(apply, schema).cache()
        try:
            yield transformed
        finally:
            transformed.unpersist()


def _spark_estimator(
    spec: PipelineSpec, registered: Pipeline, feature_count: int, session: SparkSession
) -> Any:
    from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

    params = dict(spec.estimator.params)
    params.setdefault("num_workers", session.sparkContext.defaultParallelism)
    refused = sorted(set(params) & NOT_ON_SPARK)
    if refused:
        raise ValueError(
            f"estimator.params for {spec.estimator.class_name}: {refused} are not taken by "
            "xgboost.spark; categorical features follow features.categorical"
        )
    native = registered.named_steps["estimator"]
    native = native.estimator if isinstance(native, LabelEncodedClassifier) else native
    feature_types = native.get_params().get("feature_types")
    if feature_types is not None and "feature_types" not in params:
        params["feature_types"] = feature_types
    cls = SparkXGBRegressor if spec.estimator.class_name == "SparkXGBRegressor" else SparkXGBClassifier
    features = [f"{FEATURE_PREFIX}{i}" for i in range(feature_count)]
    try:
        return cls(features_col=features, label_col=LABEL, **params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"estimator.params for {spec.estimator.class_name}: {exc}") from None


def _fit_split(
    session: SparkSession, frame: SparkDataFrame, sample: pd.DataFrame, spec: PipelineSpec,
    steps: ProjectSteps | None, label_encoder: LabelEncoder | None,
) -> Pipeline:
    """Fit preprocessing (on `sample`, a bounded sample of `frame`, and its categories) and
    the booster (on every row of `frame`)."""
    registered_spec = spec.model_copy(update={"estimator": registered_estimator_spec(spec.estimator)})
    model = build_model_pipeline(registered_spec, steps)
    preprocessor = model.named_steps["preprocess"]
    fitting_rows = _preprocessing_rows(frame, spec, sample)
    preprocessor.fit(fitting_rows[spec.feature_columns], fitting_rows[spec.target_column])
    feature_count = int(np.asarray(preprocessor.transform(sample[spec.feature_columns].head(1))).shape[1])
    with _transformed(session, frame, preprocessor, spec, feature_count, label_encoder) as transformed:
        booster = _spark_estimator(spec, model, feature_count, session).fit(transformed).get_booster()
    return _as_registered_pipeline(model, booster, label_encoder)


def _as_registered_pipeline(
    model: Pipeline, booster: Any, label_encoder: LabelEncoder | None
) -> Pipeline:
    """The unfitted Pipeline's estimator given the Spark-trained booster: a fitted XGB* in the
    Pipeline whose preprocessing is already fitted."""
    estimator = model.named_steps["estimator"]
    native = estimator.estimator if isinstance(estimator, LabelEncodedClassifier) else estimator
    native.load_model(bytearray(booster.save_raw("ubj")))
    if isinstance(estimator, LabelEncodedClassifier):
        assert label_encoder is not None
        estimator.label_encoder_ = label_encoder
        estimator.classes_ = label_encoder.classes_
        estimator.estimator_ = native
        estimator.n_features_in_ = native.n_features_in_
    return model


def fit_window_on_spark(
    session: SparkSession,
    paths: Sequence[str],
    spec: PipelineSpec,
    steps: ProjectSteps | None = None,
    driver_sample_rows: int = DRIVER_SAMPLE_ROWS,
) -> TrainedWindow:
    """Split the window's feature files chronologically and fit the spec's Spark estimator on
    the train split (validation metrics), then on train + validation (the registered model,
    with `split.refit_on_validation`). At most `driver_sample_rows` rows of a split reach the
    driver (preprocessing fit, metrics)."""
    from pyspark.sql import functions as F

    from tabml_assets.ml.spark_jobs import ship_project_code_by_value

    if spec.split.early_stopping_rounds is not None:
        raise ValueError(
            f"split.early_stopping_rounds: not supported for {spec.estimator.class_name}; remove "
            "the key or set estimator.params.n_estimators"
        )
    ship_project_code_by_value()
    window = session.read.parquet(*paths)
    missing = [c for c in [*spec.feature_columns, spec.target_column] if c not in window.columns]
    if missing:
        raise ValueError(f"training window: missing columns {missing} in {list(paths)[:3]}")
    counts = window.agg(F.count(F.lit(1)).alias("window"), F.count(spec.target_column).alias("labelled")).first()
    assert counts is not None
    window_rows, labelled_rows = int(counts["window"]), int(counts["labelled"])
    labelled = window.where(F.col(spec.target_column).isNotNull())
    splits = split_chronologically_on_spark(labelled, labelled_rows, spec)
    label_encoder = None
    if spec.task != "regression":
        classes = sorted(row[0] for row in splits.train.select(spec.target_column).distinct().collect())
        if len(classes) < 2:
            raise ValueError(
                f"train split: a {spec.task} target needs at least 2 classes, found only "
                f"{classes} in {spec.target_column!r}"
            )
        label_encoder = LabelEncoder().fit(label_array(pd.Series(classes)))
    inputs = [*spec.feature_columns, spec.target_column, spec.event_time]
    train_sample = _driver_sample(splits.train, splits.train_rows, inputs, driver_sample_rows)
    validation_sample = _driver_sample(splits.validation, splits.validation_rows, inputs, driver_sample_rows)
    model = _fit_split(session, splits.train, train_sample, spec, steps, label_encoder)
    train_metrics = split_metrics(model, train_sample, spec, steps)
    validation_metrics = split_metrics(model, validation_sample, spec, steps) if len(validation_sample) else {}
    fitted, fitted_rows, lineage = splits.train, splits.train_rows, train_sample
    if spec.split.refit_on_validation and splits.validation_rows:
        fitted = splits.train.unionByName(splits.validation)
        fitted_rows = splits.train_rows + splits.validation_rows
        lineage = pd.concat([train_sample, validation_sample], ignore_index=True)
        model = _fit_split(session, fitted, lineage, spec, steps, label_encoder)
    return TrainedWindow(
        fit=FitResult(
            model=model,
            train_metrics=train_metrics,
            validation_metrics=validation_metrics,
            train_rows=splits.train_rows,
            validation_rows=splits.validation_rows,
            test_rows=splits.test_rows,
            fitted_rows=fitted_rows,
        ),
        window_rows=window_rows,
        labelled_rows=labelled_rows,
        example=train_sample[spec.feature_columns].head(5),
        lineage=lineage,
    )
