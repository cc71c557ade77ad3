"""features: model-ready rows engineered from raw_data, one UTC day per partition."""


from functools import partial

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tabml_assets.assets.common import OWNERS, daily_partitions, partition_keys
from tabml_assets.assets.raw import BACKFILL_POLICY
from tabml_assets.ml.features import FeatureTable, build_features
from tabml_assets.ml.realized import identity_columns
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import (
    PartitionStore,
    SummaryColumns,
    written_metadata,
)
from tabml_assets.spec import LoadedSpec


def engine_of(spark: SparkSessionResource | None, store: PartitionStore) -> str:
    if spark is None:
        return f"pandas, streamed in batches of {store.stream_batch_rows} rows"
    return f"{spark.describe()}, mapInPandas"


def build_features_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline
    keys = spec.keys
    event_time = pipeline.event_time

    @asset(
        key=keys.features,
        group_name=keys.group("features"),
        kinds={"pandas", "scikitlearn", "parquet"},
        owners=OWNERS,
        code_version="1",
        partitions_def=daily_partitions(pipeline),
        backfill_policy=BACKFILL_POLICY,
        deps=[keys.raw_data],
        required_resource_keys={"step_launcher", "partition_store", "spark"},
    )
    def features(context: AssetExecutionContext) -> MaterializeResult:
        """Model-ready rows from the project's steps: the event time, the model inputs and the target where known."""
        # Streamed through the store, not loaded by the IO manager: a day may be larger than memory.
        store: PartitionStore = context.resources.partition_store
        spark: SparkSessionResource | None = context.resources.spark
        session = spark.get_session() if spark is not None else None
        engineer = partial(build_features, table=FeatureTable.of(pipeline), derive=spec.steps.build_features)
        written = {
            key: store.transform_partition(
                keys.raw_data, keys.features, key, engineer, spark=session,
                # Repeated identities counted once here spare the realized-accuracy check
                # reading and hashing them on every scored day.
                summary=SummaryColumns(ranges=(event_time,), repeats_on=tuple(identity_columns(pipeline))),
            )
            for key in partition_keys(context)
        }
        metadata = written_metadata(written, time_column=event_time, time_label="event_time")
        metadata["engine"] = MetadataValue.text(engine_of(spark, store))
        return MaterializeResult(metadata=metadata)

    return features
