"""Pure functions on tiny frames: the taxi example's demo data and features, splitting,
fitting, metrics and the promotion gate, with negative cases."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tabml_assets.ml.estimators import make_estimator
from tabml_assets.ml.evaluation import evaluate_gate, gate_check_names
from tabml_assets.ml.features import FeatureTable, MissingColumnsError, build_features
from tabml_assets.ml.metrics import regression_metrics
from tabml_assets.ml.schema import raw_schema
from tabml_assets.ml.training import fit_model, split_chronologically
from tabml_assets.spec import (
    EstimatorSpec,
    LoadedSpec,
    SplitSpec,
    Threshold,
    ValidationSpec,
    load_spec,
)

DAY = dt.date(2026, 1, 5)
PICKUP = "tpep_pickup_datetime"


@pytest.fixture(scope="module")
def taxi(tmp_path_factory: pytest.TempPathFactory) -> LoadedSpec:
    """The nyc_taxi example of the test deployment: its spec, its demo rows and its steps."""
    return load_spec("test", tabml_home=tmp_path_factory.mktemp("ml_home"))


def demo_trips(spec: LoadedSpec, day: dt.date, rows: int) -> pd.DataFrame:
    assert spec.steps.demo_rows is not None
    return spec.steps.demo_rows(day, rows)


def taxi_features(spec: LoadedSpec, raw: pd.DataFrame) -> pd.DataFrame:
    """The features asset's transform: the example's steps.build_features inside tabml's table."""
    return build_features(raw, FeatureTable.of(spec.pipeline), derive=spec.steps.build_features)


def three_trips() -> pd.DataFrame:
    return pd.DataFrame(
        {
            PICKUP: pd.to_datetime(["2026-01-05 08:00", "2026-01-05 12:30", "2026-01-05 23:59"]),
            "tpep_dropoff_datetime": pd.to_datetime(["2026-01-05 08:20", "2026-01-05 12:40", "2026-01-06 00:09"]),
            "trip_distance": [3.0, 1.0, 2.5],
            "fare_amount": [14.0, 6.5, 11.0],
            "pickup_zip": [10001, 10003, 11430],
            "dropoff_zip": [10011, 10001, 10001],
        }
    )


def test_demo_trips_are_deterministic_and_typed(taxi: LoadedSpec) -> None:
    first = demo_trips(taxi, DAY, 300)
    pd.testing.assert_frame_equal(first, demo_trips(taxi, DAY, 300))
    assert not first.equals(demo_trips(taxi, DAY + dt.timedelta(days=1), 300))
    assert dict(first.dtypes.astype(str)) == raw_schema(taxi.pipeline.dataset)
    assert (first[PICKUP].dt.date == DAY).all()
    assert (first["tpep_dropoff_datetime"] > first[PICKUP]).all()
    assert first["trip_distance"].between(0, 400, inclusive="neither").all()
    # Fares really depend on distance: something for a model to learn.
    assert np.corrcoef(first["trip_distance"], first["fare_amount"])[0, 1] > 0.7


def test_demo_trips_for_zero_rows_and_negative_rows(taxi: LoadedSpec) -> None:
    assert len(demo_trips(taxi, DAY, 0)) == 0
    with pytest.raises(ValueError, match="rows: expected a non-negative count, found -1"):
        demo_trips(taxi, DAY, -1)


def test_features_from_three_trips(taxi: LoadedSpec) -> None:
    features = taxi_features(taxi, three_trips())
    assert features["pickup_hour"].tolist() == [8, 12, 23]
    assert features["pickup_weekday"].tolist() == [0, 0, 0]  # 2026-01-05 is a Monday
    assert features["trip_duration_minutes"].tolist() == [20.0, 10.0, 10.0]
    assert features["fare_amount"].tolist() == [14.0, 6.5, 11.0]


def test_features_name_missing_columns(taxi: LoadedSpec) -> None:
    with pytest.raises(MissingColumnsError) as error:
        taxi_features(taxi, three_trips().drop(columns=["pickup_zip"]))
    assert "missing columns ['pickup_zip']" in str(error.value)
    assert "found [" in str(error.value)


def test_chronological_split_keeps_time_order(taxi: LoadedSpec) -> None:
    frame = taxi_features(taxi, demo_trips(taxi, DAY, 100)).sample(frac=1, random_state=0)
    splits = split_chronologically(frame, SplitSpec(train=0.6, validation=0.2, test=0.2), PICKUP)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (60, 20, 20)
    assert splits.train[PICKUP].max() <= splits.validation[PICKUP].min()
    assert splits.validation[PICKUP].max() <= splits.test[PICKUP].min()


def test_split_needs_rows() -> None:
    with pytest.raises(ValueError, match="expected at least 3 labelled rows to split, found 2"):
        split_chronologically(three_trips().head(2), SplitSpec(train=0.7, validation=0.15, test=0.15), PICKUP)


def test_fit_beats_the_naive_baseline_and_handles_unseen_zips(taxi: LoadedSpec) -> None:
    spec = taxi.pipeline
    frame = pd.concat([taxi_features(taxi, demo_trips(taxi, DAY + dt.timedelta(days=i), 500)) for i in range(3)])
    splits = split_chronologically(frame, spec.split, spec.event_time)
    fit = fit_model(splits, spec, taxi.steps)
    baseline = regression_metrics(splits.validation["fare_amount"], np.full(len(splits.validation), splits.train["fare_amount"].mean()))
    assert fit.validation_metrics["rmse"] < 0.6 * baseline["rmse"]
    unseen = splits.test.head(3).assign(pickup_zip=99999)
    assert np.isfinite(fit.model.predict(unseen[spec.feature_columns])).all()


def test_registered_model_is_refit_on_train_and_validation(taxi: LoadedSpec) -> None:
    spec = taxi.pipeline
    frame = pd.concat([taxi_features(taxi, demo_trips(taxi, DAY + dt.timedelta(days=i), 300)) for i in range(3)])
    splits = split_chronologically(frame, spec.split, spec.event_time)
    refit = fit_model(splits, spec, taxi.steps)
    assert refit.fitted_rows == len(splits.train) + len(splits.validation)
    assert refit.model.named_steps["estimator"].n_features_in_ == len(spec.feature_columns)
    train_only_spec = spec.model_copy(update={"split": spec.split.model_copy(update={"refit_on_validation": False})})
    train_only = fit_model(splits, train_only_spec, taxi.steps)
    assert train_only.fitted_rows == len(splits.train)
    # Validation metrics come from the train-only fit either way: an honest holdout.
    assert refit.validation_metrics == train_only.validation_metrics
    inputs = splits.test[spec.feature_columns]
    assert not np.allclose(refit.model.predict(inputs), train_only.model.predict(inputs))


def test_linear_estimator_one_hot_encodes_zips(taxi: LoadedSpec) -> None:
    # The shipped example keeps its zips numeric; declared categorical, a linear model one-hot
    # encodes them.
    features = taxi.pipeline.features.model_copy(update={"categorical": ["pickup_zip", "dropoff_zip"]})
    spec = taxi.pipeline.model_copy(
        update={
            "estimator": EstimatorSpec.model_validate({"class": "Ridge", "params": {"alpha": 1.0}}),
            "features": features,
        }
    )
    frame = taxi_features(taxi, demo_trips(taxi, DAY, 400))
    fit = fit_model(split_chronologically(frame, spec.split, spec.event_time), spec, taxi.steps)
    assert "OneHotEncoder" in repr(fit.model.named_steps["preprocess"])


def test_make_estimator_rejects_bad_params() -> None:
    with pytest.raises(ValueError, match=r"estimator\.params for Ridge"):
        make_estimator(EstimatorSpec.model_validate({"class": "Ridge", "params": {"depth": 3}}), "regression", None)


def test_metrics_on_known_values() -> None:
    metrics = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["mape"] == pytest.approx((0 + 50 + 50) / 3)
    with pytest.raises(ValueError, match="expected equal lengths"):
        regression_metrics(np.array([1.0]), np.array([1.0, 2.0]))


def test_gate_names_metric_value_and_threshold() -> None:
    validation = ValidationSpec(criteria={"rmse": Threshold(max=2.0), "r2": Threshold(min=0.9)}, min_improvement_over_champion_pct=10)
    results = evaluate_gate(validation, "rmse", {"rmse": 3.0, "r2": 0.95, "mae": 1, "mape": 1}, {"rmse": 3.2, "r2": 0.9, "mae": 1, "mape": 1})
    assert [r.check_name for r in results] == gate_check_names(validation) == [
        "rmse_max", "r2_min", "no_worse_than_champion", "beats_champion",
    ]
    by_name = {r.check_name: r for r in results}
    # The default comparison: 3.0 is no worse than the champion's 3.2.
    assert by_name["no_worse_than_champion"].passed and by_name["no_worse_than_champion"].threshold == pytest.approx(3.2)
    assert not by_name["rmse_max"].passed and by_name["rmse_max"].description == "FAILED: rmse = 3, required <= 2"
    assert by_name["r2_min"].passed
    # 3.0 is better than 3.2 but not by 10 % (needs <= 2.88).
    assert not by_name["beats_champion"].passed and by_name["beats_champion"].threshold == pytest.approx(2.88)
