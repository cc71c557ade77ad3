"""raw_data: one UTC day of taxi trips from the deployment's trip source."""


import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    asset,
)

from tabml_assets.assets.common import (
    OWNERS,
    daily_partitions,
    partition_day,
    partition_keys,
    table_metadata,
)
from tabml_assets.resources.data_sources import TripSource
from tabml_assets.spec import LoadedSpec

# A backfill of many days runs in a few bounded runs instead of one run per day.
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=31)


def build_raw_data_asset(spec: LoadedSpec) -> AssetsDefinition:
    @asset(
        name="raw_data",
        group_name="ingestion",
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        partitions_def=daily_partitions(spec.pipeline),
        backfill_policy=BACKFILL_POLICY,
        required_resource_keys={"step_launcher", "trip_source"},
    )
    def raw_data(
        context: AssetExecutionContext
    ) -> Output[dict[str, pd.DataFrame]]:
        """Raw taxi trips for each UTC day, as delivered by the trip source."""
        trip_source: TripSource = context.resources.trip_source
        frames = {key: trip_source.read_day(partition_day(key)) for key in partition_keys(context)}
        metadata = table_metadata(frames)
        metadata["source"] = MetadataValue.text(trip_source.describe())
        return Output(frames, metadata=metadata)

    return raw_data
