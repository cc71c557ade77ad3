"""Pure data-quality functions: raw row rules, quarantine reasons, table checks and PSI."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tabml_assets.ml.quality import (
    DUPLICATE_ROW,
    REASON_COLUMN,
    DuplicateTracker,
    compare,
    count_reasons,
    duplicate_rows,
    non_finite_counts,
    null_counts,
    outside_day_reason,
    population_stability_index,
    rule_violations,
    schema_problems,
    validate_raw_rows,
)
from tabml_assets.ml.schema import raw_schema
from tabml_assets.spec import load_spec

DAY = dt.date(2026, 3, 5)
NOW = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
# The rules under test are the nyc_taxi example's, as its pipeline.yaml declares them.
SPEC = load_spec("test")
DATASET = SPEC.pipeline.dataset
PICKUP = "tpep_pickup_datetime"
DROPOFF = "tpep_dropoff_datetime"
RAW_SCHEMA = raw_schema(DATASET)
PICKUP_OUTSIDE_DAY = outside_day_reason(PICKUP)


def generate_demo_trips(day: dt.date, rows: int) -> pd.DataFrame:
    assert SPEC.steps.demo_rows is not None
    return SPEC.steps.demo_rows(day, rows)


def trips(**overrides: list) -> pd.DataFrame:
    """Three valid trips on DAY, with columns overridden row by row."""
    frame = pd.DataFrame(
        {
            PICKUP: pd.to_datetime(["2026-03-05 08:00", "2026-03-05 12:00", "2026-03-05 23:50"]),
            DROPOFF: pd.to_datetime(["2026-03-05 08:20", "2026-03-05 12:10", "2026-03-06 00:10"]),
            "trip_distance": [2.5, 1.0, 7.0],
            "fare_amount": [12.0, 7.5, 25.0],
            "pickup_zip": [10001, 10003, 11430],
            "dropoff_zip": [10011, 10012, 10001],
        }
    ).astype(RAW_SCHEMA)
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_valid_rows_pass_untouched() -> None:
    result = validate_raw_rows(trips(), DATASET, DAY, NOW)
    assert len(result.valid) == 3 and result.quarantined.empty
    assert dict(result.valid.dtypes.astype(str)) == RAW_SCHEMA
    # A trip crossing midnight belongs to its pickup day.
    assert result.valid[DROPOFF].iloc[2] == pd.Timestamp("2026-03-06 00:10")


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("trip_distance", [-1.0, 0.0, 400.0], "trip_distance outside (0, 400)"),
        ("fare_amount", [0.0, 1000.0, -3.0], "fare_amount outside (0, 1000)"),
    ],
)
def test_template_value_ranges_are_exclusive(column: str, values: list, reason: str) -> None:
    result = validate_raw_rows(trips(**{column: values}), DATASET, DAY, NOW)
    assert result.valid.empty
    assert result.reason_counts == {reason: 3}


def test_every_rule_names_its_reason() -> None:
    frame = trips(
        **{
            PICKUP: pd.to_datetime(["2026-03-04 23:00", "2026-03-05 12:00", "2099-01-01 00:00"]),
            DROPOFF: pd.to_datetime(["2026-03-04 23:30", "2026-03-05 11:00", "2099-01-01 00:10"]),
        }
    )
    result = validate_raw_rows(frame, DATASET, DAY, NOW)
    reasons = list(result.quarantined[REASON_COLUMN])
    assert reasons == [
        PICKUP_OUTSIDE_DAY,
        "dropoff before pickup",
        f"{PICKUP_OUTSIDE_DAY}; {PICKUP} in the future; {DROPOFF} in the future",
    ]


def test_nulls_are_reasons_not_crashes() -> None:
    frame = trips().astype({"pickup_zip": "Int64"})
    frame.loc[0, "pickup_zip"] = pd.NA
    frame.loc[1, "fare_amount"] = np.nan
    result = validate_raw_rows(frame, DATASET, DAY, NOW)
    # A null label is no reason: fare_amount is a label column, and an unlabelled trip is a
    # row to score. It is kept, with its fare still null.
    assert list(result.quarantined[REASON_COLUMN]) == ["null pickup_zip"]
    assert result.valid["pickup_zip"].dtype == "int64" and len(result.valid) == 2
    assert dict(result.valid.dtypes.astype(str)) == RAW_SCHEMA
    assert result.valid["fare_amount"].isna().tolist() == [True, False]
    assert result.valid[PICKUP].tolist() == list(pd.to_datetime(["2026-03-05 12:00", "2026-03-05 23:50"]))


def test_duplicates_keep_the_first_copy_and_read_problems_are_carried() -> None:
    frame = pd.concat([trips(), trips().iloc[[0]]], ignore_index=True)
    earlier = pd.Series(["", "unparseable trip_distance", "", ""])
    result = validate_raw_rows(frame, DATASET, DAY, NOW, earlier)
    assert list(result.quarantined[REASON_COLUMN]) == ["unparseable trip_distance", DUPLICATE_ROW]
    assert len(result.valid) == 2


def test_duplicates_across_batches_are_those_of_the_whole_day() -> None:
    """Batch by batch with one tracker, the day's duplicates are exactly the whole frame's:
    a copy of a row three batches back, a copy within a batch, and null keys alike."""
    day = generate_demo_trips(DAY, 40).astype({"fare_amount": "Float64"})
    day.loc[5, "fare_amount"] = pd.NA
    day.loc[[30, 11, 33]] = day.loc[[2, 10, 5]].to_numpy()
    whole = duplicate_rows(day, DATASET)
    assert sorted(day.index[whole]) == [11, 30, 33]
    tracker = DuplicateTracker(DATASET)
    batched = pd.concat([tracker.mark(day.iloc[start : start + 7]) for start in range(0, len(day), 7)])
    pd.testing.assert_series_equal(batched, whole, check_names=False)
    # Through validation: the later copies are quarantined, each once.
    tracker = DuplicateTracker(DATASET)
    quarantined = pd.concat(
        [validate_raw_rows(day.iloc[s : s + 7], DATASET, DAY, NOW, duplicates=tracker).quarantined for s in range(0, 40, 7)]
    )
    assert list(quarantined[REASON_COLUMN]) == [DUPLICATE_ROW] * 3


def test_a_cross_column_rule_compares_timestamps_and_numbers_as_they_are() -> None:
    """The vectorized comparison gives the object comparison's verdicts, nulls never failing."""
    frame = trips(**{DROPOFF: pd.to_datetime(["2026-03-05 07:00", None, "2026-03-06 00:10"])})
    violations = rule_violations(frame, DATASET, DAY, NOW)["dropoff before pickup"]
    assert violations.tolist() == [True, False, False]
    assert compare(">=", pd.Series([1, None, 3], dtype="Int64"), pd.Series([2.0, 1.0, 3.0])).tolist()[::2] == [False, True]
    assert compare("==", pd.Series(["1", "b"], dtype="object"), pd.Series([1, 2])).tolist() == [False, False]


def test_count_reasons_counts_each_reason_of_a_row() -> None:
    quarantined = pd.DataFrame({REASON_COLUMN: ["a; b", "a", "b; c"]})
    assert count_reasons(quarantined) == {"a": 2, "b": 2, "c": 1}
    assert count_reasons(pd.DataFrame()) == {}


def test_schema_problems_and_counts() -> None:
    frame = trips().astype({"pickup_zip": "float64"}).drop(columns=["fare_amount"])
    frame["extra"] = 1
    assert schema_problems(frame, RAW_SCHEMA) == [
        "missing column 'fare_amount' (expected float64)",
        "unexpected column 'extra'",
        "column 'pickup_zip': expected int64, found float64",
    ]
    assert schema_problems(trips(), RAW_SCHEMA) == []
    assert null_counts(pd.DataFrame({"a": [1, None], "b": [1, 2]})) == {"a": 1, "b": 0}
    values = pd.DataFrame({"x": [1.0, np.inf, np.nan, -np.inf], "y": [1, 2, 3, 4]})
    assert non_finite_counts(values, ["x", "y", "absent"]) == {"x": 3, "y": 0}


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    reference = generate_demo_trips(DAY, 3000)["trip_distance"].to_numpy()
    same = generate_demo_trips(DAY + dt.timedelta(days=1), 3000)["trip_distance"].to_numpy()
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(reference, same) < 0.05
    # Distances in kilometres instead of miles: a classic upstream unit change.
    assert population_stability_index(reference, same * 1.609) > 0.25


def test_psi_handles_discrete_values_and_empty_sides() -> None:
    hours = np.repeat(np.arange(24), 10)
    assert population_stability_index(hours, hours) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(hours, np.full(50, 3)) > 1.0
    assert np.isnan(population_stability_index(np.array([]), hours))
    assert np.isnan(population_stability_index(hours, np.array([np.nan])))
