"""Split a training window and fit the model pipeline: pure functions, no I/O."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.pipeline import Pipeline

from tabml_assets.ml.evaluation import regression_metrics
from tabml_assets.ml.features import build_preprocessor, require_columns
from tabml_assets.ml.schema import PICKUP
from tabml_assets.spec import ESTIMATOR_ALLOW_LIST, EstimatorSpec, PipelineSpec, SplitSpec

TREE_ESTIMATORS = {
    "HistGradientBoostingRegressor",
    "GradientBoostingRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
}


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class FitResult:
    model: Pipeline
    train_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    train_rows: int
    validation_rows: int
    test_rows: int


def split_chronologically(frame: pd.DataFrame, ratios: SplitSpec) -> Splits:
    """Oldest rows train, then validation, newest rows test; ties broken by row order."""
    if len(frame) < 3:
        raise ValueError(f"training window: expected at least 3 rows to split, found {len(frame)}")
    ordered = frame.sort_values(PICKUP, kind="stable").reset_index(drop=True)
    n = len(ordered)
    n_train = max(1, round(n * ratios.train))
    n_validation = round(n * ratios.validation)
    n_train = min(n_train, n - 1 - n_validation) if n_validation else min(n_train, n - 1)
    train = ordered.iloc[:n_train]
    validation = ordered.iloc[n_train : n_train + n_validation]
    test = ordered.iloc[n_train + n_validation :]
    return Splits(train=train, validation=validation, test=test)


def make_estimator(spec: EstimatorSpec) -> RegressorMixin:
    """Instantiate an allow-listed estimator; config never imports arbitrary classes."""
    module_name = ESTIMATOR_ALLOW_LIST.get(spec.class_name)
    if module_name is None:
        raise ValueError(
            f"estimator.class: expected one of {sorted(ESTIMATOR_ALLOW_LIST)}, found {spec.class_name!r}"
        )
    estimator_class = getattr(importlib.import_module(module_name), spec.class_name)
    try:
        return estimator_class(**spec.params)
    except TypeError as exc:
        raise ValueError(f"estimator.params for {spec.class_name}: {exc}") from None


def build_model_pipeline(spec: PipelineSpec) -> Pipeline:
    tree_model = spec.estimator.class_name in TREE_ESTIMATORS
    estimator = make_estimator(spec.estimator)
    if spec.estimator.class_name == "HistGradientBoostingRegressor":
        # The preprocessor emits categorical columns first, in spec order.
        n_cat = len(spec.categorical_columns)
        mask = [i < n_cat for i in range(len(spec.feature_columns))]
        estimator.set_params(categorical_features=mask)
    preprocessor = build_preprocessor(spec.feature_columns, spec.categorical_columns, tree_model)
    return Pipeline([("preprocess", preprocessor), ("estimator", estimator)])


def model_inputs(frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    require_columns(frame, spec.feature_columns, "model inputs")
    return frame[spec.feature_columns]


def fit_model(splits: Splits, spec: PipelineSpec) -> FitResult:
    """Fit the spec's pipeline on the train split; report train and validation metrics."""
    for name, part in (("train", splits.train), ("validation", splits.validation)):
        require_columns(part, [*spec.feature_columns, spec.target_column], f"{name} split")
    target = splits.train[spec.target_column]
    if target.isna().all():
        raise ValueError(f"train split: target column {spec.target_column!r} is entirely null")
    model = build_model_pipeline(spec)
    model.fit(model_inputs(splits.train, spec), target.to_numpy())
    train_metrics = regression_metrics(target.to_numpy(), model.predict(model_inputs(splits.train, spec)))
    validation_metrics = (
        regression_metrics(
            splits.validation[spec.target_column].to_numpy(),
            model.predict(model_inputs(splits.validation, spec)),
        )
        if len(splits.validation)
        else {}
    )
    return FitResult(
        model=model,
        train_metrics=train_metrics,
        validation_metrics=validation_metrics,
        train_rows=len(splits.train),
        validation_rows=len(splits.validation),
        test_rows=len(splits.test),
    )


def estimator_params(model: Pipeline) -> dict[str, Any]:
    """The estimator's own parameters, stringified for MLflow."""
    params = model.named_steps["estimator"].get_params()
    return {k: (v if isinstance(v, int | float | str | bool) or v is None else str(v)) for k, v in params.items()}


def naive_predictions(train_target: pd.Series, rows: int) -> np.ndarray:
    """The naive baseline: always predict the training mean."""
    return np.full(rows, float(train_target.mean()))
