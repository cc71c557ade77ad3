"""Data quality as pure functions: row rules for raw trips, table checks and population stability.

A raw row either passes every rule or is quarantined with the reasons it failed; nothing is
dropped silently. The value ranges are the Databricks template's own filter
(0 < trip_distance < 400, 0 < fare_amount < 1000).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabml_assets.ml.schema import DROPOFF, PICKUP, RAW_COLUMNS, RAW_SCHEMA

REASON_COLUMN = "reason"
REASON_SEPARATOR = "; "
# Exclusive bounds, as in the template's filter.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "trip_distance": (0.0, 400.0),
    "fare_amount": (0.0, 1000.0),
}
DUPLICATE_ROW = "duplicate row"
PICKUP_OUTSIDE_DAY = "pickup outside the partition's day"
DROPOFF_BEFORE_PICKUP = "dropoff before pickup"
# Proportions below this floor would make PSI infinite for a bin one side never fills.
PSI_FLOOR = 1e-4


def null_reason(column: str) -> str:
    return f"null {column}"


def range_reason(column: str) -> str:
    low, high = VALUE_RANGES[column]
    return f"{column} outside ({low:g}, {high:g})"


def future_reason(column: str) -> str:
    return f"{column} in the future"


def day_bounds(day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day)
    return start, start + pd.Timedelta(days=1)


def naive_utc(moment: dt.datetime) -> pd.Timestamp:
    """`moment` as a timezone-naive UTC timestamp, the convention of RAW_SCHEMA."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def rule_violations(frame: pd.DataFrame, day: dt.date, now: dt.datetime) -> dict[str, pd.Series]:
    """Reason -> boolean mask of the rows of `frame` (raw trips for `day`) that break that rule.

    A rule on a value never fires where the value is null: the null rule already names it.
    """
    index = frame.index
    violations: dict[str, pd.Series] = {}
    for column in RAW_COLUMNS:
        violations[null_reason(column)] = frame[column].isna()
    for column, (low, high) in VALUE_RANGES.items():
        values = frame[column].astype("Float64")
        violations[range_reason(column)] = ((values <= low) | (values >= high)).fillna(False).astype(bool)
    pickup = frame[PICKUP]
    dropoff = frame[DROPOFF]
    start, end = day_bounds(day)
    violations[PICKUP_OUTSIDE_DAY] = (pickup.notna() & ((pickup < start) | (pickup >= end))).astype(bool)
    violations[DROPOFF_BEFORE_PICKUP] = (pickup.notna() & dropoff.notna() & (dropoff < pickup)).astype(bool)
    cutoff = naive_utc(now)
    violations[future_reason(PICKUP)] = (pickup.notna() & (pickup > cutoff)).astype(bool)
    violations[future_reason(DROPOFF)] = (dropoff.notna() & (dropoff > cutoff)).astype(bool)
    return {reason: mask.reindex(index, fill_value=False) for reason, mask in violations.items()}


def duplicate_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows identical in every raw column to an earlier row (the first copy is kept)."""
    if frame.empty:
        return pd.Series(False, index=frame.index)
    return frame[RAW_COLUMNS].duplicated(keep="first")


def join_reasons(masks: Mapping[str, pd.Series], index: pd.Index, earlier: pd.Series | None = None) -> pd.Series:
    """One string per row: every reason whose mask is true, in rule order ('' when none)."""
    reasons = pd.Series("", index=index, dtype="object") if earlier is None else earlier.reindex(index).fillna("")
    for reason, mask in masks.items():
        hit = mask.to_numpy(dtype=bool)
        if hit.any():
            current = reasons[hit]
            reasons[hit] = np.where(current == "", reason, current + REASON_SEPARATOR + reason)
    return reasons


@dataclass(frozen=True)
class ValidatedRows:
    """Raw rows split into those that passed every rule and those quarantined with a reason."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def reason_counts(self) -> dict[str, int]:
        return count_reasons(self.quarantined)


def validate_raw_rows(
    frame: pd.DataFrame,
    day: dt.date,
    now: dt.datetime,
    earlier_reasons: pd.Series | None = None,
) -> ValidatedRows:
    """Split raw trips for `day` into valid rows (RAW_SCHEMA) and quarantined rows (+ `reason`).

    `earlier_reasons` carries problems found while reading (e.g. an unparseable value), one
    string per row. Columns beyond RAW_COLUMNS (such as the source file) stay on quarantined rows.
    """
    frame = frame.reset_index(drop=True)
    if earlier_reasons is not None:
        earlier_reasons = earlier_reasons.reset_index(drop=True)
    masks = rule_violations(frame, day, now)
    masks[DUPLICATE_ROW] = duplicate_rows(frame)
    reasons = join_reasons(masks, frame.index, earlier_reasons)
    bad = reasons != ""
    valid = frame.loc[~bad, RAW_COLUMNS].astype(RAW_SCHEMA).reset_index(drop=True)
    quarantined = frame.loc[bad].copy()
    quarantined[REASON_COLUMN] = reasons[bad]
    return ValidatedRows(valid=valid, quarantined=quarantined.reset_index(drop=True))


def count_reasons(quarantined: pd.DataFrame) -> dict[str, int]:
    """How many quarantined rows carry each reason (a row with two reasons counts for both)."""
    if quarantined.empty or REASON_COLUMN not in quarantined.columns:
        return {}
    counter: Counter[str] = Counter()
    for reasons in quarantined[REASON_COLUMN]:
        counter.update(str(reasons).split(REASON_SEPARATOR))
    return dict(counter.most_common())


def schema_problems(frame: pd.DataFrame, schema: Mapping[str, str]) -> list[str]:
    """Missing columns, unexpected columns and wrong dtypes, each as one readable line."""
    problems = [f"missing column {c!r} (expected {t})" for c, t in schema.items() if c not in frame.columns]
    problems += [f"unexpected column {c!r}" for c in frame.columns if c not in schema]
    problems += [
        f"column {c!r}: expected {t}, found {frame[c].dtype}"
        for c, t in schema.items()
        if c in frame.columns and str(frame[c].dtype) != t
    ]
    return problems


def null_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(c): int(n) for c, n in frame.isna().sum().items()}


def non_finite_counts(frame: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """NaN, +inf and -inf per numeric column (a missing column is reported by the column check)."""
    counts: dict[str, int] = {}
    for column in columns:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        counts[column] = int((~np.isfinite(values)).sum())
    return counts


def population_stability_index(reference: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of `actual` against `reference`, on the reference's quantile bins.

    0 means identical distributions; the usual reading is < 0.1 stable, 0.1-0.25 a moderate
    shift, > 0.25 a large one. NaN when either side has no finite values.
    """
    reference = np.asarray(reference, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    reference = reference[np.isfinite(reference)]
    actual = actual[np.isfinite(actual)]
    if reference.size == 0 or actual.size == 0:
        return float("nan")
    # Quantile edges adapt to skewed features; discrete ones (hours) collapse to unique edges.
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    observed = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=edges.size + 1)
    expected_share = np.maximum(expected / reference.size, PSI_FLOOR)
    observed_share = np.maximum(observed / actual.size, PSI_FLOOR)
    return float(np.sum((observed_share - expected_share) * np.log(observed_share / expected_share)))
