"""features: model-ready rows engineered from raw_data, one UTC day per partition."""


import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Output, asset

from tabml_assets.assets.common import (
    OWNERS,
    daily_partitions,
    partition_keys,
    split_by_day,
    table_metadata,
)
from tabml_assets.assets.raw import BACKFILL_POLICY
from tabml_assets.ml.features import build_features
from tabml_assets.spec import LoadedSpec


def build_features_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline

    @asset(
        name="features",
        group_name="features",
        kinds={"pandas", "scikitlearn", "parquet"},
        owners=OWNERS,
        code_version="1",
        partitions_def=daily_partitions(pipeline),
        backfill_policy=BACKFILL_POLICY,
        required_resource_keys={"step_launcher"},
    )
    def features(
        context: AssetExecutionContext, raw_data: pd.DataFrame
    ) -> Output[dict[str, pd.DataFrame]]:
        """Pickup hour and weekday, trip duration, distance and zips, with the target."""
        engineered = build_features(raw_data, pipeline.target_column)
        frames = split_by_day(engineered, partition_keys(context))
        return Output(frames, metadata=table_metadata(frames))

    return features
