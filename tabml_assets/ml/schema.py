"""The raw trip schema shared by every data source: the Databricks NYC-taxi sample's columns."""

from __future__ import annotations

PICKUP = "tpep_pickup_datetime"
DROPOFF = "tpep_dropoff_datetime"

# Column -> pandas dtype every source must deliver. Timestamps are timezone-naive UTC, as in
# samples.nyctaxi.trips.
RAW_SCHEMA: dict[str, str] = {
    PICKUP: "datetime64[us]",
    DROPOFF: "datetime64[us]",
    "trip_distance": "float64",
    "fare_amount": "float64",
    "pickup_zip": "int64",
    "dropoff_zip": "int64",
}
RAW_COLUMNS: list[str] = list(RAW_SCHEMA)
