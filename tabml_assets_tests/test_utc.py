"""The time conventions: naive timestamps are UTC, partitions are UTC days."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from dagster import MetadataValue

from tabml_assets.utc import days_between, utc_timestamp


def test_naive_moments_are_taken_as_utc_and_aware_ones_converted() -> None:
    assert utc_timestamp(pd.Timestamp("2026-03-05 10:00")) == pd.Timestamp("2026-03-05 10:00", tz="UTC")
    new_york = dt.datetime(2026, 3, 5, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert utc_timestamp(new_york) == pd.Timestamp("2026-03-05 10:00", tz="UTC")
    assert utc_timestamp(np.datetime64("2026-03-05T10:00")).tzinfo is not None
    # The stored rows' form, and what Dagster's timestamp metadata takes.
    assert utc_timestamp(new_york).tz_localize(None) == pd.Timestamp("2026-03-05 10:00")
    assert MetadataValue.timestamp(utc_timestamp("2026-03-05 10:00")).value == 1772704800.0


def test_days_between_includes_both_ends() -> None:
    assert days_between("2026-02-27", dt.date(2026, 3, 1)) == [
        dt.date(2026, 2, 27), dt.date(2026, 2, 28), dt.date(2026, 3, 1),
    ]
    assert days_between("2026-03-05", "2026-03-05") == [dt.date(2026, 3, 5)]
    assert days_between("2026-03-05", "2026-03-04") == []
