"""A Unity Catalog table source for staging and prod, read with Spark on the cluster."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from tabml_assets.ml.schema import PICKUP, RAW_COLUMNS, RAW_SCHEMA
from tabml_assets.resources.data_sources import TripSource


class DatabricksTableSource(TripSource):
    """Rows of a Unity Catalog table (default samples.nyctaxi.trips) for one UTC day."""

    table: str = "samples.nyctaxi.trips"

    def read_day(self, day: dt.date) -> pd.DataFrame:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F

        spark = SparkSession.builder.getOrCreate()
        start = dt.datetime.combine(day, dt.time())
        frame = (
            spark.table(self.table)
            .where((F.col(PICKUP) >= F.lit(start)) & (F.col(PICKUP) < F.lit(start + dt.timedelta(days=1))))
            .select(*RAW_COLUMNS)
            .toPandas()
        )
        return frame.astype(RAW_SCHEMA)

    def describe(self) -> str:
        return f"Databricks table {self.table}"
