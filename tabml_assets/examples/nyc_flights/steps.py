"""The NYC flight-delay model's own steps: the late label, schedule features, and the real 2013
flights the demo source serves re-dated.

This is the code a team writes for its dataset; tabml runs it. `build_features` is row-level
(each batch of raw flights -> the same flights with derived columns), so it streams through
partitions of any size. Every feature comes from the schedule, known before the flight departs.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from .flight_records import FlightRecords

# A flight is late when it arrives more than this many minutes after its scheduled time
# (the U.S. DOT's on-time threshold).
LATE_AFTER_MINUTES = 15
MINUTES_PER_DAY = 24 * 60

# The demo source calls `demo_rows` as a plain function, so the records it serves from live
# here: read on the first call, once per process.
FLIGHT_RECORDS = FlightRecords()


def clock_minutes(hhmm: pd.Series) -> pd.Series:
    """A clock time written as hhmm (e.g. 1545) -> minutes after midnight (945)."""
    values = hhmm.astype("int64")
    return values // 100 * 60 + values % 100


def late_label(arrival_delay: pd.Series) -> pd.Series:
    """True when the arrival delay exceeds 15 minutes; null when unknown (cancelled, diverted)."""
    return (arrival_delay.astype("Float64") > LATE_AFTER_MINUTES).astype("boolean")


def build_features(raw: pd.DataFrame) -> pd.DataFrame:
    """The late label, the scheduled departure hour and clock span, beside the raw columns."""
    departure = clock_minutes(raw["sched_dep_time"])
    arrival = clock_minutes(raw["sched_arr_time"])
    return raw.assign(
        late=late_label(raw["arr_delay"]),
        sched_dep_hour=(departure // 60).astype("int64"),
        # The arrival is on the destination's clock, so this includes the time-zone difference;
        # with `dest` beside it the model separates the two. Overnight flights wrap at midnight.
        sched_clock_span_minutes=((arrival - departure) % MINUTES_PER_DAY).astype("int64"),
    )


def demo_rows(day: dt.date, rows: int) -> pd.DataFrame:
    """At most `rows` real 2013 flights re-dated to depart on `day` (UTC), deterministic for it."""
    return FLIGHT_RECORDS.utc_day(day, rows)
