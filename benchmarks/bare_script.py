"""The baseline: the script a user would write by hand instead of tabml.

Plain pandas, scikit-learn and MLflow, the same work as tabml's graph: read the landed trips,
engineer the same features, split the window chronologically, fit the same estimator on the
train split for its train and validation metrics, refit it on train + validation as the shipped
spec does (`split.refit_on_validation`), log and register it in MLflow with a signature,
evaluate it on the test split against the naive baseline, point the `champion` alias at it and
score one day into parquet. Which inputs are categorical and whether to refit come from the
spec (benchmarks/run.py passes them), so the script fits the model tabml registers. It keeps
nothing in between: no per-day raw or feature files, no run history, no lineage. Deliberately
written without tabml's own modules.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

FEATURES = ["trip_distance", "trip_duration_minutes", "pickup_hour", "pickup_weekday", "pickup_zip", "dropoff_zip"]
TARGET = "fare_amount"


def engineer(trips: pd.DataFrame) -> pd.DataFrame:
    pickup = pd.to_datetime(trips["tpep_pickup_datetime"])
    dropoff = pd.to_datetime(trips["tpep_dropoff_datetime"])
    return pd.DataFrame(
        {
            "tpep_pickup_datetime": pickup,
            "trip_distance": trips["trip_distance"].astype("float64"),
            "trip_duration_minutes": (dropoff - pickup).dt.total_seconds() / 60.0,
            "pickup_hour": pickup.dt.hour,
            "pickup_weekday": pickup.dt.weekday,
            "pickup_zip": trips["pickup_zip"].astype("int64"),
            "dropoff_zip": trips["dropoff_zip"].astype("int64"),
            TARGET: trips[TARGET].astype("float64"),
        }
    )


def metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": float(mean_absolute_error(y, predicted)),
        "r2": float(r2_score(y, predicted)),
    }


def run_bare_pipeline(
    landing: Path,
    output: Path,
    tracking_uri: str,
    model_name: str,
    training_days: list[dt.date],
    scoring_day: dt.date,
    estimator_params: dict[str, Any],
    pip_requirements: list[str],
    gate: tuple[float, float] = (6.0, 0.6),
    categorical: tuple[str, ...] = (),
    refit_on_validation: bool = True,
) -> dict[str, Any]:
    """Train on `training_days`, register and promote, score `scoring_day`; return timings and metrics.

    `gate` is (maximum test rmse, minimum test r2) for promotion, as in pipeline.yaml;
    `categorical` and `refit_on_validation` are the spec's `features.categorical` and
    `split.refit_on_validation`.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    trips = pd.concat([pd.read_parquet(p) for p in sorted(landing.glob("*.parquet"))], ignore_index=True)
    features = engineer(trips)
    day = features["tpep_pickup_datetime"].dt.normalize()
    window = features[(day >= pd.Timestamp(training_days[0])) & (day <= pd.Timestamp(training_days[-1]))]
    window = window.sort_values("tpep_pickup_datetime", kind="stable").reset_index(drop=True)
    to_score = features[day == pd.Timestamp(scoring_day)].reset_index(drop=True)
    seconds["read_and_features"] = time.perf_counter() - start

    start = time.perf_counter()
    n_train, n_validation = round(len(window) * 0.7), round(len(window) * 0.15)
    train, validation, test = (
        window.iloc[:n_train], window.iloc[n_train : n_train + n_validation], window.iloc[n_train + n_validation :]
    )
    numeric = [c for c in FEATURES if c not in categorical]
    model = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), list(categorical)),
                        ("numeric", "passthrough", numeric),
                    ],
                    verbose_feature_names_out=False,
                ),
            ),
            # The encoder's columns come first in the transformed matrix.
            ("estimator", HistGradientBoostingRegressor(**estimator_params, categorical_features=[True] * len(categorical) + [False] * len(numeric))),
        ]
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if mlflow.get_experiment_by_name("bare-script") is None:
        # Artifacts beside the sqlite store, as tabml's dev profile does, not ./mlruns in the cwd.
        store = Path(tracking_uri.removeprefix("sqlite:///"))
        mlflow.create_experiment("bare-script", artifact_location=str(store.parent / "mlartifacts"))
    mlflow.set_experiment("bare-script")
    with mlflow.start_run(run_name=f"train {training_days[-1]}"):
        model.fit(train[FEATURES], train[TARGET])
        mlflow.log_params(estimator_params)
        mlflow.log_metrics({f"train_{k}": v for k, v in metrics(train[TARGET], model.predict(train[FEATURES])).items()})
        mlflow.log_metrics({f"validation_{k}": v for k, v in metrics(validation[TARGET], model.predict(validation[FEATURES])).items()})
        if refit_on_validation:
            fitted = pd.concat([train, validation], ignore_index=True)
            model = clone(model).fit(fitted[FEATURES], fitted[TARGET])
        test_metrics = metrics(test[TARGET], model.predict(test[FEATURES]))
        baseline = metrics(test[TARGET], np.full(len(test), train[TARGET].mean()))
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        mlflow.log_metrics({f"baseline_test_{k}": v for k, v in baseline.items()})
        example = train[FEATURES].head(5)
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=model_name,
            signature=infer_signature(example, model.predict(example)), input_example=example,
            pip_requirements=pip_requirements,
            # MLflow's default skops format refuses to load a HistGradientBoosting model unless
            # its tree types are trusted; the script built the model, so it trusts them.
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )
    seconds["train_evaluate_register"] = time.perf_counter() - start

    start = time.perf_counter()
    version = str(info.registered_model_version)
    if test_metrics["rmse"] <= gate[0] and test_metrics["r2"] >= gate[1]:
        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(model_name, "champion", version)
    to_score["prediction"] = model.predict(to_score[FEATURES])
    to_score["model_version"] = version
    output.parent.mkdir(parents=True, exist_ok=True)
    to_score.to_parquet(output, index=False)
    seconds["promote_and_score"] = time.perf_counter() - start
    return {
        "seconds": seconds,
        "window_rows": len(window),
        "scored_rows": len(to_score),
        "test_rmse": test_metrics["rmse"],
        "model_version": version,
    }


def score_file(model: Pipeline, features_file: Path, output: Path, feature_columns: list[str]) -> dict[str, Any]:
    """Bare batch scoring: read one parquet file, `model.predict` it whole, write the result."""
    start = time.perf_counter()
    frame = pd.read_parquet(features_file)
    read_seconds = time.perf_counter() - start
    frame["prediction"] = model.predict(frame[feature_columns])
    predict_seconds = time.perf_counter() - start - read_seconds
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(output, index=False)
    total = time.perf_counter() - start
    return {
        "rows": len(frame),
        "seconds": total,
        "read_seconds": read_seconds,
        "predict_seconds": predict_seconds,
        "write_seconds": total - read_seconds - predict_seconds,
    }
