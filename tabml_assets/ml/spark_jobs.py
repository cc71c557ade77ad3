"""Run tabml's pandas batch functions on Spark: the same function, applied with `mapInPandas`.

Features and scoring are plain pandas functions (`build_features`, `score_frame`). On Spark
each executor applies them to Arrow batches of its input split, so a partition larger than
the driver's memory never passes through the driver; a fitted model is broadcast once per
executor instead of shipped with every task.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType


def ship_project_code_by_value() -> None:
    """Pickle the projects' steps modules by value, so executors need not import them.

    Steps modules are imported from project folders as `tabml_projects.<project>.*`, a name
    Spark's Python workers cannot import; pickled by value, a project's `build_features`
    travels inside the task like any closure.
    """
    from pyspark import cloudpickle

    from tabml_assets.steps import PROJECTS_PACKAGE

    for name, module in list(sys.modules.items()):
        if name.startswith(f"{PROJECTS_PACKAGE}.") and name.count(".") == 1:
            cloudpickle.register_pickle_by_value(module)


def spark_schema_of(schema: pa.Schema) -> StructType:
    """The Spark schema of an arrow schema; naive timestamps stay naive (TIMESTAMP_NTZ)."""
    return from_arrow_schema(schema, prefer_timestamp_ntz=True)


def is_spark_connect(session: SparkSession) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


@dataclass(frozen=True)
class SharedObjects:
    """What the pickled batch function carries: a broadcast handle, or the objects themselves."""

    broadcast: Broadcast | None = None
    values: Mapping[str, Any] | None = None

    def get(self) -> Mapping[str, Any]:
        if self.broadcast is not None:
            return self.broadcast.value
        return self.values or {}


@contextmanager
def shared_with_executors(session: SparkSession, shared: Mapping[str, Any]) -> Iterator[SharedObjects]:
    """`shared` for executors: a broadcast (sent once per executor) where the session allows.

    Spark Connect sessions (Databricks shared clusters, serverless) have no SparkContext to
    broadcast with; there the objects travel inside the pickled function instead.
    """
    if not shared or is_spark_connect(session):
        yield SharedObjects(values=dict(shared))
        return
    broadcast = session.sparkContext.broadcast(dict(shared))
    try:
        yield SharedObjects(broadcast=broadcast)
    finally:
        broadcast.destroy()


def map_parquet_with_spark(
    session: SparkSession,
    source: str,
    output_dir: str,
    transform: Callable[..., pd.DataFrame],
    shared: Mapping[str, Any],
    output_schema: pa.Schema,
) -> None:
    """Write `transform(batch, **shared)` of every batch of the parquet at `source` to `output_dir`.

    No shuffle: each task transforms and writes its own input split, so part files in task
    order hold the rows in the input's order.
    """
    spark_schema = spark_schema_of(output_schema)
    columns = output_schema.names
    ship_project_code_by_value()
    with shared_with_executors(session, shared) as objects:

        def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            kwargs = objects.get()
            for batch in batches:
                yield transform(batch, **kwargs)[columns]

        (
            session.read.parquet(source)
            .mapInPandas(apply, spark_schema)
            .write.mode("overwrite")
            .parquet(output_dir)
        )
