"""A Unity Catalog table source for staging and prod, read with Spark on the cluster."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd

from tabml_assets.ml.schema import PICKUP, RAW_COLUMNS, RAW_SCHEMA
from tabml_assets.resources.data_sources import TripSource, UnreadableFileError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession


class MissingColumnsError(UnreadableFileError):
    """A table without the raw trip columns; names the table and what it has instead."""


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day, timezone-aware so Spark never reads them in local time."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def trips_of_day(table: SparkDataFrame, day: dt.date, source: str) -> SparkDataFrame:
    """The raw trip columns of the rows picked up on `day` (UTC), in pickup order."""
    from pyspark.sql import functions as F

    missing = [c for c in RAW_COLUMNS if c not in table.columns]
    if missing:
        raise MissingColumnsError(
            f"{source}: missing column(s) {missing}; expected the columns of "
            f"samples.nyctaxi.trips {RAW_COLUMNS}, found {table.columns}"
        )
    start, end = day_bounds(day)
    return (
        table.where((F.col(PICKUP) >= F.lit(start)) & (F.col(PICKUP) < F.lit(end)))
        .select(*RAW_COLUMNS)
        .orderBy(PICKUP, *RAW_COLUMNS[1:])
    )


class DatabricksTableSource(TripSource):
    """Rows of a Unity Catalog table (default samples.nyctaxi.trips) for one UTC day.

    Runs where Spark runs: on Databricks the cluster's session, elsewhere a local session.
    `table` may be any name `spark.table` resolves, such as `catalog.schema.table` or a
    path-addressed table (`delta.`/path``, `parquet.`/path``).
    """

    table: str = "samples.nyctaxi.trips"

    def read_day(self, day: dt.date) -> pd.DataFrame:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        return self.read_day_with(spark, day)

    def read_day_with(self, spark: SparkSession, day: dt.date) -> pd.DataFrame:
        """`read_day` on a given session: timestamps come back as naive UTC, like the demo."""
        # samples.nyctaxi.trips stores TIMESTAMP (an instant): Spark renders it in the session
        # time zone, so the day filter and toPandas only mean UTC when the session says UTC.
        previous_zone = spark.conf.get("spark.sql.session.timeZone")
        # get() without a default returns the built-in default (the JVM zone) or raises; never None.
        assert previous_zone is not None
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        try:
            frame = trips_of_day(spark.table(self.table), day, f"table {self.table}").toPandas()
        finally:
            spark.conf.set("spark.sql.session.timeZone", previous_zone)
        return frame.astype(RAW_SCHEMA).reset_index(drop=True)

    def describe(self) -> str:
        return f"Databricks table {self.table}"
