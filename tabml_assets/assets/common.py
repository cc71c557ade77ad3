"""Pieces every asset module shares: owners, the daily partitions and a run's partition keys."""

from __future__ import annotations

import datetime as dt
import re

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    Failure,
)

from tabml_assets.spec import PipelineSpec

OWNERS = ["team:ml-platform"]
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
