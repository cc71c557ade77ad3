"""Data quality as pure functions: row rules from the dataset spec, table checks and population stability.

A raw row either passes every rule or is quarantined with the reasons it failed; nothing is
dropped silently. The rules are the dataset's: not-null (except nullable and label columns),
ranges, allowed values, cross-column comparisons, the event time inside the partition's day and
not in the future, and one row per unique key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabml_assets.ml.schema import raw_columns, raw_schema
from tabml_assets.spec import ColumnSpec, DatasetSpec
from tabml_assets.utc import utc_timestamp

REASON_COLUMN = "reason"
REASON_SEPARATOR = "; "
DUPLICATE_ROW = "duplicate row"
# Keys of the facts raw_data and its quarantine keep in their partition summaries.
RULE_COUNTS_FACT = "stored_rows_breaking_rules"
RULES_DIGEST_FACT = "rules_digest"
QUARANTINE_REASONS_FACT = "quarantine_reasons"
# Proportions below this floor would make PSI infinite for a bin one side never fills.
PSI_FLOOR = 1e-4
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


def null_reason(column: str) -> str:
    return f"null {column}"


def range_reason(column: str, spec: ColumnSpec) -> str:
    low = spec.greater_than if spec.greater_than is not None else spec.min
    high = spec.less_than if spec.less_than is not None else spec.max
    opening = "(" if spec.greater_than is not None or low is None else "["
    closing = ")" if spec.less_than is not None or high is None else "]"
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf" if high is None else f"{high:g}"
    return f"{column} outside {opening}{low_text}, {high_text}{closing}"


def allowed_reason(column: str) -> str:
    return f"{column} not an allowed value"


def future_reason(column: str) -> str:
    return f"{column} in the future"


def outside_day_reason(event_time: str) -> str:
    return f"{event_time} outside the partition's day"


def has_range(spec: ColumnSpec) -> bool:
    return any(v is not None for v in (spec.min, spec.max, spec.greater_than, spec.less_than))


def day_bounds(day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day)
    return start, start + pd.Timedelta(days=1)


def range_mask(values: pd.Series, spec: ColumnSpec) -> pd.Series:
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "fiu":
        numbers = values.to_numpy(dtype="float64")
    else:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    # Compared in numpy, where a missing value (NaN) is outside no bound.
    outside = np.zeros(len(numbers), dtype=bool)
    if spec.greater_than is not None:
        outside |= numbers <= spec.greater_than
    if spec.less_than is not None:
        outside |= numbers >= spec.less_than
    if spec.min is not None:
        outside |= numbers < spec.min
    if spec.max is not None:
        outside |= numbers > spec.max
    return pd.Series(outside, index=values.index)


def allowed_mask(values: pd.Series, allowed: list[object]) -> pd.Series:
    return (values.notna() & ~values.astype("object").isin(allowed)).astype(bool)


def range_rule_reasons(dataset: DatasetSpec) -> list[str]:
    """Every value rule's reason (the `raw_value_ranges` check counts these), in rule order."""
    reasons = [range_reason(c, s) for c, s in dataset.columns.items() if has_range(s)]
    reasons += [allowed_reason(c) for c, s in dataset.columns.items() if s.allowed is not None]
    reasons.append(outside_day_reason(dataset.event_time))
    reasons += [rule.reason for rule in dataset.rules]
    reasons += [future_reason(c) for c in future_columns(dataset)]
    return reasons


def rule_reasons(dataset: DatasetSpec) -> list[str]:
    """Every row rule's reason but the duplicate key's: the nulls, then the value rules."""
    return [null_reason(c) for c in raw_columns(dataset) if not dataset.is_nullable(c)] + range_rule_reasons(dataset)


def future_columns(dataset: DatasetSpec) -> list[str]:
    return [dataset.event_time] + [
        c for c, s in dataset.columns.items() if s.not_in_future and c != dataset.event_time
    ]


def compare(op: str, left: pd.Series, right: pd.Series) -> pd.Series:
    """`left <op> right` row by row; undefined where either side is missing.

    Two timestamp or two numeric columns compare as they are (vectorized); anything else as
    Python objects, which compares mixed types such as a string and a number by value.
    """
    kinds = [
        "datetime" if pd.api.types.is_datetime64_any_dtype(s)
        else "number" if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        else "object"
        for s in (left, right)
    ]
    if kinds[0] == kinds[1] != "object":
        return COMPARISONS[op](left, right)
    return COMPARISONS[op](left.astype("object"), right.astype("object"))


def rule_violations(
    frame: pd.DataFrame, dataset: DatasetSpec, day: dt.date, now: dt.datetime
) -> dict[str, pd.Series]:
    """Reason -> boolean mask of the rows of `frame` (raw rows for `day`) that break that rule.

    A rule on a value never fires where the value is null: the null rule (or, for a nullable
    or label column, nothing) already speaks for it.
    """
    index = frame.index
    violations: dict[str, pd.Series] = {}
    for column in raw_columns(dataset):
        if not dataset.is_nullable(column):
            violations[null_reason(column)] = frame[column].isna()
    for column, spec in dataset.columns.items():
        if has_range(spec):
            violations[range_reason(column, spec)] = range_mask(frame[column], spec)
        if spec.allowed is not None:
            violations[allowed_reason(column)] = allowed_mask(frame[column], list(spec.allowed))
    event = frame[dataset.event_time]
    start, end = day_bounds(day)
    violations[outside_day_reason(dataset.event_time)] = (event.notna() & ((event < start) | (event >= end))).astype(bool)
    for rule in dataset.rules:
        left, right = frame[rule.column], frame[rule.other]
        both = left.notna() & right.notna()
        holds = pd.Series(compare(rule.op, left, right), index=index).where(both, True)
        violations[rule.reason] = (both & ~holds.astype(bool)).astype(bool)
    cutoff = utc_timestamp(now).tz_localize(None)  # in the stored rows' naive UTC
    for column in future_columns(dataset):
        values = frame[column]
        violations[future_reason(column)] = (values.notna() & (values > cutoff)).astype(bool)
    return {
        reason: mask if mask.index.equals(index) else mask.reindex(index, fill_value=False)
        for reason, mask in violations.items()
    }


def duplicate_rows(frame: pd.DataFrame, dataset: DatasetSpec) -> pd.Series:
    """Rows repeating an earlier row's unique key (or, with no key, every raw value)."""
    if frame.empty:
        return pd.Series(False, index=frame.index)
    columns = dataset.unique_key or raw_columns(dataset)
    return frame[columns].duplicated(keep="first")


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's `columns`: how rows are keyed without keeping them."""
    return pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()


def repeated_key_rows(hashes: np.ndarray) -> list[np.ndarray]:
    """The row positions of each key hash that occurs more than once, each in row order.

    Most days repeat no key: a value sort (a tenth of an argsort's time on 10M rows) finds the
    repeated hashes, and only their rows are ordered by key.
    """
    ordered = np.sort(hashes)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(repeated):
        return []
    position = np.minimum(np.searchsorted(repeated, hashes), len(repeated) - 1)
    rows = np.flatnonzero(repeated[position] == hashes)
    # A stable sort keeps row order inside each key.
    by_key = rows[np.argsort(hashes[rows], kind="stable")]
    keys = hashes[by_key]
    return np.split(by_key, np.flatnonzero(keys[1:] != keys[:-1]) + 1)


class DuplicateTracker:
    """`duplicate_rows` across the batches of one day: a row repeating the key of any earlier
    row of the day, in an earlier batch or its own, is a duplicate.

    The keys seen are kept as sorted 64-bit hashes (8 bytes a row, not the rows). Two different
    keys share a hash with probability about n^2 / 2^65 (3e-6 for a 10M-row day): the row would
    be quarantined as a duplicate, never stored twice.
    """

    def __init__(self, dataset: DatasetSpec) -> None:
        self.columns = dataset.unique_key or raw_columns(dataset)
        self.seen = np.empty(0, dtype="uint64")

    def mark(self, frame: pd.DataFrame) -> pd.Series:
        """Which rows of `frame` (the day's next batch) repeat an earlier row's key."""
        if frame.empty:
            return pd.Series(False, index=frame.index)
        hashes = row_hashes(frame, self.columns)
        # Sorted lookups walk the seen keys in order, which keeps them in cache; the same sort
        # finds the batch's own repeats (equal neighbours), without a second hash table.
        order = np.argsort(hashes)
        ordered = hashes[order]
        repeated = np.zeros(len(hashes), dtype=bool)
        equal = ordered[1:] == ordered[:-1]
        if equal.any():
            repeated[repeats_within(order, ordered, equal)] = True
        if self.seen.size:
            where = np.searchsorted(self.seen, ordered)
            repeated[order[self.seen[where.clip(max=self.seen.size - 1)] == ordered]] = True
            self.seen = np.insert(self.seen, where, ordered)
        else:
            self.seen = ordered
        return pd.Series(repeated, index=frame.index)


def repeats_within(order: np.ndarray, ordered: np.ndarray, equal: np.ndarray) -> np.ndarray:
    """Rows (positions) whose hash an earlier row of the same batch has, from the batch's
    hashes `ordered` by `order` (an unstable sort) and `equal` (ordered[1:] == ordered[:-1])."""
    # Only rows in runs of equal hashes (rare) are ordered again, by hash then by position,
    # so the first row of each run is the earliest one and every later one repeats it.
    in_run = np.zeros(len(ordered), dtype=bool)
    in_run[1:] |= equal
    in_run[:-1] |= equal
    rows, keys = order[in_run], ordered[in_run]
    by_key_then_row = np.lexsort((rows, keys))
    rows, keys = rows[by_key_then_row], keys[by_key_then_row]
    return rows[1:][keys[1:] == keys[:-1]]


def duplicate_reason(dataset: DatasetSpec) -> str:
    return f"duplicate {'+'.join(dataset.unique_key)}" if dataset.unique_key else DUPLICATE_ROW


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
    # Rule reason -> valid rows that break it: zero by construction, counted from the same
    # masks so a stored partition's summary states what was checked on the rows it holds.
    kept_rule_counts: dict[str, int] = field(default_factory=dict)

    @property
    def reason_counts(self) -> dict[str, int]:
        return count_reasons(self.quarantined)


def validate_raw_rows(
    frame: pd.DataFrame,
    dataset: DatasetSpec,
    day: dt.date,
    now: dt.datetime,
    earlier_reasons: pd.Series | None = None,
    duplicates: DuplicateTracker | None = None,
) -> ValidatedRows:
    """Split raw rows for `day` into valid rows (the raw schema) and quarantined rows (+ `reason`).

    `earlier_reasons` carries problems found while reading (e.g. an unparseable value), one
    string per row. Columns beyond the dataset's (such as the source file) stay on quarantined rows.
    When `frame` is one batch of the day, `duplicates` (the day's tracker) finds the rows that
    repeat an earlier batch's.
    """
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)
    if earlier_reasons is not None and not earlier_reasons.index.equals(frame.index):
        earlier_reasons = earlier_reasons.reset_index(drop=True)
    masks = rule_violations(frame, dataset, day, now)
    masks[duplicate_reason(dataset)] = (
        duplicate_rows(frame, dataset) if duplicates is None else duplicates.mark(frame)
    )
    hits = {reason: mask.to_numpy(dtype=bool) for reason, mask in masks.items()}
    bad = np.zeros(len(frame), dtype=bool)
    for hit in hits.values():
        bad |= hit
    if earlier_reasons is not None:
        earlier = earlier_reasons.to_numpy(dtype=object)
        # A missing value is no problem, as "" is; only the (few) non-empty ones are looked at.
        written = np.flatnonzero(earlier != "")
        bad[written[pd.notna(earlier[written])]] = True
    # Reasons are joined for the quarantined rows only: most rows pass, and text per row is
    # what costs.
    bad_rows = np.flatnonzero(bad)
    reasons = join_reasons(
        {reason: pd.Series(hit[bad_rows]) for reason, hit in hits.items()},
        pd.RangeIndex(len(bad_rows)),
        None if earlier_reasons is None else earlier_reasons.iloc[bad_rows].reset_index(drop=True),
    )
    columns = raw_columns(dataset)
    kept = frame[columns] if not bad_rows.size else frame.loc[~bad, columns]
    # `kept` is a new frame: columns already in their stored dtype need no second copy.
    valid = kept.astype(raw_schema(dataset), copy=False)
    valid.index = pd.RangeIndex(len(valid))
    quarantined = frame.iloc[bad_rows].reset_index(drop=True)
    quarantined[REASON_COLUMN] = reasons.to_numpy()
    passed = ~bad
    kept_counts = {reason: int((hit & passed).sum()) for reason, hit in hits.items()}
    return ValidatedRows(valid=valid, quarantined=quarantined, kept_rule_counts=kept_counts)


def rules_digest(dataset: DatasetSpec) -> str:
    """A fingerprint of the dataset spec the rules come from: counts made under other rules
    (the spec edited since a day was ingested) are not reused."""
    return hashlib.sha256(dataset.model_dump_json().encode()).hexdigest()[:16]


def count_reasons(quarantined: pd.DataFrame) -> dict[str, int]:
    """How many quarantined rows carry each reason (a row with two reasons counts for both)."""
    if quarantined.empty or REASON_COLUMN not in quarantined.columns:
        return {}
    counter: Counter[str] = Counter()
    for reasons in quarantined[REASON_COLUMN]:
        counter.update(str(reasons).split(REASON_SEPARATOR))
    return dict(counter.most_common())


def schema_problems(frame: pd.DataFrame | Mapping[str, str], schema: Mapping[str, str]) -> list[str]:
    """Missing columns, unexpected columns and wrong dtypes, each as one readable line.

    `frame` is the rows, or their column -> dtype (a stored partition's summary).
    """
    dtypes = {str(c): str(t) for c, t in frame.dtypes.items()} if isinstance(frame, pd.DataFrame) else dict(frame)
    problems = [f"missing column {c!r} (expected {t})" for c, t in schema.items() if c not in dtypes]
    problems += [f"unexpected column {c!r}" for c in dtypes if c not in schema]
    problems += [
        f"column {c!r}: expected {t}, found {dtypes[c]}"
        for c, t in schema.items()
        if c in dtypes and dtypes[c] != t
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
    # Bins [edge_i, edge_i+1), counted by np.histogram: it sorts the values and searches the
    # few edges in them, 6x faster on 10M values than searching each value in the edges.
    bounds = np.r_[-np.inf, edges, np.inf]
    expected = np.histogram(reference, bounds)[0]
    observed = np.histogram(actual, bounds)[0]
    expected_share = np.maximum(expected / reference.size, PSI_FLOOR)
    observed_share = np.maximum(observed / actual.size, PSI_FLOOR)
    return float(np.sum((observed_share - expected_share) * np.log(observed_share / expected_share)))


def categorical_population_stability_index(reference: pd.Series, actual: pd.Series) -> float:
    """PSI of the category shares of `actual` against `reference` (nulls are a category).

    NaN when either side is empty. Categories only one side has count with the PSI floor.
    """
    if len(reference) == 0 or len(actual) == 0:
        return float("nan")
    expected = reference.fillna("<null>").value_counts(normalize=True)
    observed = actual.fillna("<null>").value_counts(normalize=True)
    categories = expected.index.union(observed.index)
    expected_share = np.maximum(expected.reindex(categories, fill_value=0.0).to_numpy(), PSI_FLOOR)
    observed_share = np.maximum(observed.reindex(categories, fill_value=0.0).to_numpy(), PSI_FLOOR)
    return float(np.sum((observed_share - expected_share) * np.log(observed_share / expected_share)))
