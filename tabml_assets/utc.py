"""The time conventions of tabml: stored timestamps are timezone-naive UTC, and every partition
is one UTC day named by its ISO date."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd


def utc_timestamp(moment: Any) -> pd.Timestamp:
    """`moment` (a datetime, Timestamp, numpy datetime or ISO string) as an aware UTC Timestamp;
    a naive one is UTC already, as stored rows are. Being a datetime, it is what
    `MetadataValue.timestamp` takes; `.tz_localize(None)` gives the stored rows' naive form."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def days_between(first: dt.date | str, last: dt.date | str) -> list[dt.date]:
    """Every day from `first` to `last`, both included (none when `last` is before `first`)."""
    start = first if isinstance(first, dt.date) else dt.date.fromisoformat(first)
    end = last if isinstance(last, dt.date) else dt.date.fromisoformat(last)
    return [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]
