"""A Unity Catalog table source for staging and prod, read with Spark on the cluster."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pandas as pd

from tabml_assets.ml.schema import raw_columns
from tabml_assets.resources.data_sources import DataSource, UnreadableFileError
from tabml_assets.spec import DatasetSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession


class MissingColumnsError(UnreadableFileError):
    """A table without the dataset's columns; names the table and what it has instead."""


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day, timezone-aware so Spark never reads them in local time."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def rows_of_day(table: SparkDataFrame, dataset: DatasetSpec, day: dt.date, source: str) -> SparkDataFrame:
    """The dataset's columns of the rows whose event time falls on `day` (UTC), in event-time order.

    Label columns the table lacks are left for ingestion to fill with nulls (unlabeled rows).
    """
    from pyspark.sql import functions as F

    columns = raw_columns(dataset)
    missing = [c for c in columns if c not in table.columns and c not in dataset.label_columns]
    if missing:
        raise MissingColumnsError(
            f"{source}: missing column(s) {missing}; expected the dataset's columns "
            f"{columns}, found {table.columns}"
        )
    present = [c for c in columns if c in table.columns]
    event = dataset.event_time
    start, end = day_bounds(day)
    return (
        table.where((F.col(event) >= F.lit(start)) & (F.col(event) < F.lit(end)))
        .select(*present)
        .orderBy(event, *[c for c in present if c != event])
    )


def mark_instants_utc(frame: pd.DataFrame, instant_columns: list[str]) -> pd.DataFrame:
    """TIMESTAMP columns (instants, rendered in UTC) as UTC-aware; TIMESTAMP_NTZ stay wall-clock.

    Ingestion reads naive timestamps in the dataset's time zone, which is right for wall-clock
    values and wrong for instants that Spark already rendered in UTC.
    """
    for column in instant_columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values) and values.dt.tz is None:
            frame[column] = values.dt.tz_localize("UTC")
    return frame


class DatabricksTableSource(DataSource):
    """Rows of a Unity Catalog table for one UTC day.

    Runs where Spark runs: on Databricks the cluster's session, elsewhere a local session.
    `table` may be any name `spark.table` resolves, such as `catalog.schema.table` or a
    path-addressed table (`delta.`/path``, `parquet.`/path``).
    """

    table: str

    def read_day(self, day: dt.date) -> pd.DataFrame:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        return self.read_day_with(spark, day)

    def read_day_with(self, spark: SparkSession, day: dt.date) -> pd.DataFrame:
        from pyspark.sql.types import TimestampType

        """`read_day` on a given session: timestamps come back as naive UTC."""
        # A TIMESTAMP column stores an instant: Spark renders it in the session
        # time zone, so the day filter and toPandas only mean UTC when the session says UTC.
        previous_zone = spark.conf.get("spark.sql.session.timeZone")
        # get() without a default returns the built-in default (the JVM zone) or raises; never None.
        assert previous_zone is not None
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        try:
            rows = rows_of_day(spark.table(self.table), self.dataset, day, f"table {self.table}")
            frame = rows.toPandas()
            frame = mark_instants_utc(frame, [f.name for f in rows.schema.fields if isinstance(f.dataType, TimestampType)])
        finally:
            spark.conf.set("spark.sql.session.timeZone", previous_zone)
        # Ingestion types every column by the spec (the same coercion as a landed file).
        return frame.reset_index(drop=True)

    def describe(self) -> str:
        return f"Databricks table {self.table}"
