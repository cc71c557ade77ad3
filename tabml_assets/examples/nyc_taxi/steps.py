"""The NYC taxi fare model's own steps: trip features, and the demo trips `make run` lands.

This is the code a team writes for its dataset; tabml runs it. `build_features` is row-level
(each batch of raw trips -> the same trips with derived columns), so it streams through
partitions of any size and runs unchanged on Spark.
"""

from __future__ import annotations

import pandas as pd

from .demo_data import DROPOFF, PICKUP, generate_demo_trips


def build_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Pickup hour and weekday and trip duration, beside the raw trip columns."""
    # raw_data stores the spec's datetime columns as datetime64 already: parsing them again
    # (pd.to_datetime) would only copy them and cost more than the features themselves.
    pickup, dropoff = raw[PICKUP], raw[DROPOFF]
    return raw.assign(
        trip_duration_minutes=(dropoff - pickup).dt.total_seconds() / 60.0,
        pickup_hour=pickup.dt.hour.astype("int64"),
        pickup_weekday=pickup.dt.weekday.astype("int64"),
    )


demo_rows = generate_demo_trips
