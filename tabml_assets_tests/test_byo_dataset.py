"""Bring your own dataset: a project tabml has never seen, built in a temporary folder, runs
raw -> batch_predictions end to end with no file under tabml_assets/ changed; and every kind of
bad project spec is refused at load with the file, the key, what was expected and what was found.

The dataset is a bike-rental log: other column names and dtypes than the examples, a string
categorical, a boolean, its own event-time column in a non-UTC zone, a label derived in the
project's own steps, and a scoring day whose file has no label column at all.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetCheckKey, AssetSelection, DagsterInstance, Definitions, define_asset_job

from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_partition_store
from tabml_assets.seed import run_selection
from tabml_assets.spec import SpecError, load_deployment

STATIONS = ("Alexanderplatz", "Zoo", "Ostkreuz", "Tempelhof", "Mauerpark", "Wannsee")
# The stations' effect on ride length: only learnable from the string categorical itself.
STATION_MINUTES = {"Alexanderplatz": 4.0, "Zoo": 9.0, "Ostkreuz": 2.0, "Tempelhof": 14.0, "Mauerpark": 6.0, "Wannsee": 25.0}
FIRST_DAY = dt.date(2026, 5, 1)
TRAINING_DAYS = 4

STEPS = '''
"""A bike-sharing team's own steps: ride features and the label, derived from raw rentals."""

import pandas as pd

from tabml_assets.steps import Metric


def build_features(raw: pd.DataFrame) -> pd.DataFrame:
    rented = pd.to_datetime(raw["rented_at"])
    returned = pd.to_datetime(raw["returned_at"])
    return raw.assign(
        hour_of_rental=rented.dt.hour.astype("int64"),
        # The label: ride minutes, unknown (null) until the bike is returned.
        ride_minutes=(returned - rented).dt.total_seconds() / 60.0,
    )


def median_absolute_error(y_true, y_pred):
    import numpy as np

    return float(np.median(np.abs(np.asarray(y_pred) - np.asarray(y_true))))


METRICS = [Metric("median_ae", median_absolute_error, greater_is_better=False)]


from sklearn.base import BaseEstimator, RegressorMixin


class StationAwareRegressor(RegressorMixin, BaseEstimator):
    """The team's own estimator: gradient boosting on the log of the ride length."""

    def __init__(self, max_iter=80):
        self.max_iter = max_iter

    def fit(self, X, y):
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model_ = HistGradientBoostingRegressor(max_iter=self.max_iter, random_state=0)
        self.model_.fit(X, np.log(y))
        return self

    def predict(self, X):
        import numpy as np

        return np.exp(self.model_.predict(X))


def build_estimator(max_iter=80):
    return StationAwareRegressor(max_iter=max_iter)
'''


def pipeline_spec(**overrides: object) -> dict:
    spec: dict = {
        "name": "bike_rides",
        "description": "Minutes of a bike rental, from the station, the weather and the hour.",
        "steps": "steps.py",
        "dataset": {
            "event_time": "rented_at",
            "timezone": "Europe/Berlin",
            "columns": {
                "rented_at": {"type": "datetime"},
                "returned_at": {"type": "datetime", "nullable": True},
                "station": {"type": "string", "allowed": list(STATIONS)},
                "temperature_c": {"type": "float", "min": -30, "max": 45},
                "is_holiday": {"type": "boolean"},
                "rider_age": {"type": "integer", "greater_than": 0, "less_than": 120},
            },
            "label_columns": ["returned_at"],
            "unique_key": ["rented_at", "station"],
            "rules": [{"name": "returned before rented", "column": "returned_at", "op": ">=", "other": "rented_at"}],
        },
        "features": {
            "derived": {"hour_of_rental": "integer", "ride_minutes": "float"},
            "columns": ["station", "temperature_c", "is_holiday", "rider_age", "hour_of_rental"],
            "categorical": ["station"],
        },
        "target": {"column": "ride_minutes", "task": "regression"},
        "partitions": {"start_date": FIRST_DAY.isoformat()},
        "split": {"train": 0.7, "validation": 0.1, "test": 0.2},
        "training_window_days": TRAINING_DAYS,
        "estimator": {"class": "HistGradientBoostingRegressor", "params": {"max_iter": 80, "random_state": 0}},
        "primary_metric": "median_ae",
        "validation": {"run_mode": "enabled", "criteria": {"r2": {"min": 0.5}, "median_ae": {"max": 5.0}}},
        "data_quality": {"drift_columns": ["temperature_c", "station"]},
    }
    spec.update(overrides)
    return spec


def rentals(day: dt.date, rows: int, labelled: bool = True) -> pd.DataFrame:
    """Rentals of one Berlin day, as the team's system exports them (local wall-clock strings)."""
    rng = np.random.default_rng(day.toordinal())
    # Between 03:00 and 23:00 local time: inside the UTC day in summer (UTC+2) for a 1..21 window.
    # Distinct minutes: (rented_at, station) is the dataset's unique key.
    minutes_after_3am = np.sort(rng.choice(20 * 60, size=rows, replace=False))
    rented = pd.Timestamp(day) + pd.Timedelta(hours=3) + pd.to_timedelta(minutes_after_3am, unit="min")
    station = rng.choice(STATIONS, size=rows)
    temperature = rng.normal(18, 6, size=rows).round(1)
    holiday = rng.random(rows) < 0.2
    age = rng.integers(16, 80, size=rows)
    minutes = (
        np.array([STATION_MINUTES[s] for s in station]) + 0.6 * np.clip(temperature, 0, None)
        + np.where(holiday, 8.0, 0.0) + rng.normal(0, 1.5, size=rows)
    ).clip(1, None)
    frame = pd.DataFrame(
        {
            "rented_at": rented.strftime("%Y-%m-%d %H:%M:%S"),
            "station": station,
            "temperature_c": temperature,
            "is_holiday": np.where(holiday, "yes", "no"),
            "rider_age": age,
        }
    )
    if labelled:
        frame["returned_at"] = (rented + pd.to_timedelta(minutes, unit="min")).strftime("%Y-%m-%d %H:%M:%S")
    return frame


def write_project(root: Path, spec: dict, steps: str = STEPS) -> Path:
    """conf/profiles/dev.yaml listing ../bike_rides, and the project folder beside it."""
    project = root / "bike_rides"
    project.mkdir(parents=True)
    (project / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (project / "steps.py").write_text(textwrap.dedent(steps))
    profiles = root / "conf" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "dev.yaml").write_text(
        yaml.safe_dump(
            {
                "projects": ["../bike_rides"],
                "data_source": {"kind": "landing_folder", "landing_folder": "landing"},
                "storage": {"root": "data", "artifacts": "artifacts"},
                "mlflow": {
                    "tracking_uri": "sqlite:///{tabml_home}/mlflow.db",
                    "registry_uri": "sqlite:///{tabml_home}/mlflow.db",
                    "artifact_location": "{tabml_home}/mlartifacts",
                    "experiment_name": "byo-{project}",
                    "model_name": "byo_{project}",
                },
            }
        )
    )
    return root / "conf"


@pytest.mark.parametrize(
    "estimator",
    [
        pytest.param(None, id="HistGradientBoostingRegressor"),
        pytest.param({"class": "LGBMRegressor", "params": {"n_estimators": 80, "verbose": -1}}, id="LGBMRegressor", marks=pytest.mark.slow),
        pytest.param({"class": "XGBRegressor", "params": {"n_estimators": 80}}, id="XGBRegressor", marks=pytest.mark.slow),
        pytest.param({"class": "steps:build_estimator", "params": {"max_iter": 60}}, id="own-estimator", marks=pytest.mark.slow),
    ],
)
def test_a_dataset_tabml_has_never_seen_runs_end_to_end(
    tmp_path: Path, tabml_home: Path, instance: DagsterInstance, estimator: dict | None
) -> None:
    conf = write_project(tmp_path, pipeline_spec(**({"estimator": estimator} if estimator else {})))
    deployment = load_deployment("dev", conf_dir=conf, tabml_home=tabml_home)
    spec = deployment.project("bike_rides")
    landing = spec.landing_folder()
    landing.mkdir(parents=True)
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(TRAINING_DAYS + 1)]
    for day in days[:-1]:
        rentals(day, 300).to_csv(landing / f"rentals_{day}.csv", index=False)
    # The day to score: rentals still out, so the export has no return column at all.
    scoring_day = days[-1]
    rentals(scoring_day, 120, labelled=False).to_csv(landing / f"rentals_{scoring_day}.csv", index=False)
    defs = build_definitions(deployment)
    keys = spec.keys

    run_selection(defs, instance, keys.assets("raw_data", "features"), partition_range=(days[0].isoformat(), scoring_day.isoformat()))
    training_day = days[-2].isoformat()
    run_selection(defs, instance, keys.assets("trained_model", "evaluation_report", "champion_model"), partition_key=training_day)
    run_selection(defs, instance, keys.assets("batch_predictions"), partition_key=scoring_day.isoformat())

    store = build_partition_store(spec)
    raw = store.read_frame(keys.raw_data, days[0].isoformat())
    # Strings stay strings, "yes"/"no" became booleans, Berlin wall-clock times are stored in UTC.
    assert raw["station"].map(type).eq(str).all()
    assert raw["is_holiday"].dtype == bool
    first_local = pd.Timestamp(rentals(days[0], 300)["rented_at"].iloc[0])
    assert raw["rented_at"].iloc[0] == first_local - pd.Timedelta(hours=2)

    report = store.read_record(keys.evaluation_report, training_day)
    challenger, baseline = report["challenger"]["metrics"], report["baseline"]["metrics"]
    assert challenger["rmse"] < 0.5 * baseline["rmse"], report
    assert challenger["median_ae"] < baseline["median_ae"]
    assert report["gate_passed"] is True

    scored = store.read_frame(keys.batch_predictions, scoring_day.isoformat())
    assert len(scored) == 120
    assert scored["ride_minutes"].isna().all()  # no label yet, scored all the same
    assert np.isfinite(scored["prediction"]).all()
    # Once the bikes are back, the realized minutes show the predictions were good.
    returned = rentals(scoring_day, 120)
    realized = (pd.to_datetime(returned["returned_at"]) - pd.to_datetime(returned["rented_at"])).dt.total_seconds() / 60
    errors = scored["prediction"].to_numpy() - realized.to_numpy()
    assert np.sqrt(np.mean(errors**2)) < 0.5 * realized.std()

    # The labels arrive: the day is re-exported with its return times and re-ingested. Its
    # stored predictions are then scored against them, and the day counts for training.
    returned.to_csv(landing / f"rentals_{scoring_day}.csv", index=False)
    run_selection(defs, instance, keys.assets("raw_data", "features"), partition_key=scoring_day.isoformat())
    check = AssetCheckKey(keys.batch_predictions, "predictions_realized_accuracy")
    with_check_job = Definitions.merge(
        defs, Definitions(jobs=[define_asset_job("realized_check", selection=AssetSelection.checks(check))])
    )
    # A check-only job has no assets to derive partitions from: the run names its day by tag.
    with_check_job.resolve_job_def("realized_check").execute_in_process(
        tags={"dagster/partition": scoring_day.isoformat()}, instance=instance
    )
    [record] = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.metadata["labelled_rows"].value == evaluation.metadata["scored_rows"].value == 120
    # Re-ingested since scored: the labels come from the features, matched by row identity.
    assert evaluation.metadata["read_from"].value == "batch_predictions matched to features"
    assert evaluation.metadata["realized_rmse"].value == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-6)


def load_error(tmp_path: Path, spec: dict, steps: str = STEPS) -> str:
    conf = write_project(tmp_path, spec, steps)
    with pytest.raises(SpecError) as error:
        load_deployment("dev", conf_dir=conf, tabml_home=tmp_path / "home")
    return str(error.value)


def test_a_feature_that_is_not_in_the_dataset_is_refused(tmp_path: Path) -> None:
    spec = pipeline_spec()
    spec["features"]["columns"].append("wind_speed")
    message = load_error(tmp_path, spec)
    assert str(tmp_path / "bike_rides" / "pipeline.yaml") in message
    assert "features.columns" in message and "'wind_speed'" in message
    assert "'temperature_c'" in message  # the columns that exist


def test_a_target_whose_type_does_not_fit_the_task_is_refused(tmp_path: Path) -> None:
    spec = pipeline_spec(target={"column": "station", "task": "regression"})
    spec["features"]["columns"].remove("station")
    spec["features"]["categorical"] = []
    spec["data_quality"] = {"drift_columns": ["temperature_c"]}
    message = load_error(tmp_path, spec)
    assert "pipeline.yaml" in message and "target.column" in message
    assert "float or integer" in message and "'string'" in message


def test_a_steps_module_outside_the_project_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text("raise SystemExit('must never be imported')\n")
    message = load_error(tmp_path, pipeline_spec(steps="../elsewhere.py"))
    assert "pipeline.yaml" in message and "key `steps`" in message
    assert "inside the project folder" in message and "'../elsewhere.py'" in message


def test_an_unknown_estimator_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, pipeline_spec(estimator={"class": "DeepForestRegressor"}))
    assert "estimator.class" in message and "'DeepForestRegressor'" in message
    assert "HistGradientBoostingRegressor" in message  # what is allowed


def test_a_classifier_for_a_regression_target_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, pipeline_spec(estimator={"class": "LGBMClassifier"}))
    assert "estimator.class" in message and "regressor" in message and "'LGBMClassifier'" in message


def test_a_custom_metric_that_is_not_callable_is_refused(tmp_path: Path) -> None:
    steps = STEPS.replace(
        'METRICS = [Metric("median_ae", median_absolute_error, greater_is_better=False)]',
        'METRICS = [Metric("median_ae", 42, greater_is_better=False)]',
    )
    message = load_error(tmp_path, pipeline_spec(), steps)
    assert str(tmp_path / "bike_rides" / "steps.py") in message
    assert "METRICS[0]" in message and "callable" in message and "42" in message


def test_an_unknown_primary_metric_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, pipeline_spec(primary_metric="mean_ae"))
    assert "primary_metric" in message and "'mean_ae'" in message and "median_ae" in message


def test_a_steps_estimator_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, pipeline_spec(estimator={"class": "steps:make_model"}))
    assert "estimator.class" in message and "'make_model'" in message and "steps.py" in message


def test_dagster_definitions_validate_names_the_missing_column(tmp_path: Path) -> None:
    spec = pipeline_spec()
    spec["features"]["categorical"].append("bike_type")
    spec["features"]["columns"].append("bike_type")
    conf = write_project(tmp_path, spec)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "tabml_assets.definitions"],
        capture_output=True, text=True, timeout=120,
        env={
            "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
            "TABML_CONF_DIR": str(conf), "TABML_HOME": str(tmp_path / "home"), "TABML_DEPLOYMENT": "dev",
        },
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "features.columns" in output and "'bike_type'" in output and "pipeline.yaml" in output
