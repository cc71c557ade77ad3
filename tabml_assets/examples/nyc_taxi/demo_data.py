"""A deterministic demo trip generator with the schema of the Databricks NYC-taxi sample.

Fares depend on distance, duration, hour of day and the pickup and dropoff zips, plus noise,
so a model has something real to learn. The same date always yields the same rows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

PICKUP = "tpep_pickup_datetime"
DROPOFF = "tpep_dropoff_datetime"
# The columns and dtypes of samples.nyctaxi.trips (timestamps naive UTC).
RAW_SCHEMA: dict[str, str] = {
    PICKUP: "datetime64[us]",
    DROPOFF: "datetime64[us]",
    "trip_distance": "float64",
    "fare_amount": "float64",
    "pickup_zip": "int64",
    "dropoff_zip": "int64",
}

# Manhattan, Brooklyn, Queens and airport zips seen in the sample; each carries a fare offset
# (airport and outer-borough surcharges) that the model can only learn from the zip itself.
DEMO_ZIPS: tuple[int, ...] = (
    10001, 10003, 10011, 10012, 10013, 10014, 10016, 10018, 10019, 10021,
    10022, 10023, 10024, 10025, 10028, 10036, 10065, 10075, 10110, 10119,
    10153, 10171, 10199, 10282, 11201, 11211, 11215, 11101, 11371, 11430,
)
_ZIP_WEIGHTS = np.array([6, 8, 7, 5, 5, 6, 7, 6, 8, 5, 7, 6, 5, 4, 4, 8, 4, 3, 2, 3,
                         2, 2, 2, 2, 3, 3, 2, 2, 2, 2], dtype=float)
_ZIP_WEIGHTS /= _ZIP_WEIGHTS.sum()
_ZIP_OFFSET = {z: o for z, o in zip(DEMO_ZIPS, np.random.default_rng(7).normal(0, 1.5, len(DEMO_ZIPS)), strict=True)}
_ZIP_OFFSET[11371] = 5.0  # LaGuardia
_ZIP_OFFSET[11430] = 8.0  # JFK
# Pickups per hour of day (UTC): quiet nights, morning and evening peaks.
_HOUR_WEIGHTS = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 5, 5,
                          5.5, 5.5, 5.5, 6, 6.5, 7, 7.5, 7, 6, 5.5, 5, 4])
_HOUR_WEIGHTS /= _HOUR_WEIGHTS.sum()


def _zip_offsets(zips: np.ndarray) -> np.ndarray:
    return pd.Series(zips, dtype="int64").map(_ZIP_OFFSET).to_numpy(dtype="float64")


def _speed_mph(hours: np.ndarray) -> np.ndarray:
    """Average speed by hour: slow in the rush hours, fast at night."""
    rush = ((hours >= 7) & (hours < 10)) | ((hours >= 16) & (hours < 19))
    night = (hours >= 22) | (hours < 5)
    return np.where(rush, 7.0, np.where(night, 16.0, 11.0))


def generate_demo_trips(day: dt.date, rows: int) -> pd.DataFrame:
    """Return `rows` taxi trips picked up on `day` (UTC), deterministic for the date."""
    if rows < 0:
        raise ValueError(f"rows: expected a non-negative count, found {rows}")
    rng = np.random.default_rng(day.toordinal())
    hours = rng.choice(24, size=rows, p=_HOUR_WEIGHTS)
    seconds = hours * 3600 + rng.integers(0, 3600, size=rows)
    pickup = pd.Timestamp(day) + pd.to_timedelta(np.sort(seconds), unit="s")
    hours = pickup.hour.to_numpy()
    distance = np.clip(rng.lognormal(mean=0.8, sigma=0.75, size=rows), 0.1, 60.0).round(2)
    pickup_zip = rng.choice(DEMO_ZIPS, size=rows, p=_ZIP_WEIGHTS)
    dropoff_zip = rng.choice(DEMO_ZIPS, size=rows, p=_ZIP_WEIGHTS)
    duration_min = distance / _speed_mph(hours) * 60 * rng.lognormal(0, 0.15, size=rows) + 1.0
    dropoff = pickup + pd.to_timedelta(duration_min * 60, unit="s").round("s")
    surcharge = np.where((hours >= 16) & (hours < 20), 1.0, 0.0) + np.where(
        (hours >= 20) | (hours < 6), 0.5, 0.0
    )
    zip_effect = _zip_offsets(pickup_zip) + 0.5 * _zip_offsets(dropoff_zip)
    fare = 2.5 + 1.6 * distance + 0.3 * duration_min + surcharge + zip_effect + rng.normal(0, 1.0, rows)
    frame = pd.DataFrame(
        {
            PICKUP: pickup,
            DROPOFF: dropoff,
            "trip_distance": distance,
            "fare_amount": np.clip(fare, 2.5, 999.0).round(2),
            "pickup_zip": pickup_zip,
            "dropoff_zip": dropoff_zip,
        }
    )
    return frame.astype(RAW_SCHEMA)
