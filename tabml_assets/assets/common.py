"""Pieces every asset module shares: partitions, per-day splitting and table metadata."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    Failure,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from tabml_assets.spec import PipelineSpec

OWNERS = ["team:ml-platform"]
PREVIEW_ROWS = 5
DAY_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def daily_partitions(spec: PipelineSpec) -> DailyPartitionsDefinition:
    """UTC days from the spec's start date up to the day that just closed."""
    return DailyPartitionsDefinition(start_date=spec.partitions.start_date.isoformat(), timezone="UTC")


def partition_day(key: str) -> dt.date:
    return dt.date.fromisoformat(key)


def partition_range_problem(
    first: str, last: str, start: dt.date, last_closed: dt.date | None
) -> str | None:
    """Why the requested keys `first`..`last` are not days of the daily partitions, or None.

    A run can be launched with any `dagster/partition` tag (the UI, GraphQL, a typo in a
    backfill); refusing it here, before any read or write, keeps a future day from leaving
    stray files and a day before the start from failing deep inside Dagster.
    """
    valid = (
        f"the daily partitions run from {start} to {last_closed} (the latest UTC day that has closed)"
        if last_closed is not None
        else f"the first partition, {start}, has not closed yet"
    )
    nothing = f"; {valid}. Nothing was run or written"
    for key in dict.fromkeys((first, last)):
        if not DAY_KEY.match(key):
            return f"partition key {key!r}: expected a day as YYYY-MM-DD{nothing}"
        try:
            day = dt.date.fromisoformat(key)
        except ValueError:
            return f"partition key {key!r} is not a calendar day{nothing}"
        if day < start:
            return f"partition key {key} is before the first partition {start}{nothing}"
        if last_closed is None or day > last_closed:
            closing = (last_closed or start - dt.timedelta(days=1)) + dt.timedelta(days=1)
            when = "has not closed yet" if day == closing else "is in the future"
            return f"partition key {key} {when}{nothing}"
    return None


def partition_keys(context: AssetExecutionContext) -> list[str]:
    """The partition keys this step materializes (one, or a range in a single-run backfill),
    refused before any work, and never retried, when they are not days of the partitions."""
    partitions = context.assets_def.partitions_def
    if isinstance(partitions, DailyPartitionsDefinition):
        # The range comes from the run's tags as they are; `partition_keys` would first fail
        # inside Dagster for a key before the start.
        requested = context.partition_key_range
        last = partitions.get_last_partition_key()
        last_closed = dt.date.fromisoformat(last) if last else None
        problem = partition_range_problem(requested.start, requested.end, partitions.start.date(), last_closed)
        if problem is not None:
            raise Failure(description=problem, allow_retries=False)
    return list(context.partition_keys)


def table_metadata(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, time_column: str) -> dict[str, Any]:
    """Row count, column schema, a preview of the first rows and the event times they cover."""
    if isinstance(frames, pd.DataFrame):
        frames = {"": frames}
    non_empty = [f for f in frames.values() if len(f)]
    first = non_empty[0] if non_empty else next(iter(frames.values()))
    total = int(sum(len(f) for f in frames.values()))
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(total),
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in first.dtypes.items()])
        ),
        "preview": MetadataValue.md(first.head(PREVIEW_ROWS).to_markdown(index=False)),
    }
    if len(frames) > 1:
        metadata["rows_per_partition"] = MetadataValue.json({k: len(v) for k, v in frames.items()})
    metadata.update(data_time_window(non_empty, time_column))
    return metadata


def data_time_window(frames: list[pd.DataFrame], column: str) -> dict[str, Any]:
    """Earliest and latest event time in the data (UTC): what time the rows really cover."""
    times = [pd.to_datetime(f[column]) for f in frames if column in f.columns and f[column].notna().any()]
    if not times:
        return {}
    earliest, latest = min(t.min() for t in times), max(t.max() for t in times)
    return {
        "earliest_event_time": MetadataValue.timestamp(as_utc(earliest)),
        "latest_event_time": MetadataValue.timestamp(as_utc(latest)),
    }


def as_utc(moment: pd.Timestamp) -> dt.datetime:
    """Stored timestamps are timezone-naive UTC; make that explicit."""
    return (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")).to_pydatetime()
