"""batch_predictions: each day's feature rows scored by the registry's current champion."""


import datetime as dt

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Failure, MetadataValue, Output, asset

from tabml_assets.assets.common import (
    OWNERS,
    daily_partitions,
    partition_keys,
    split_by_day,
    table_metadata,
)
from tabml_assets.assets.raw import BACKFILL_POLICY
from tabml_assets.ml.scoring import PREDICTION_COLUMN, score_frame
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry
from tabml_assets.spec import LoadedSpec


def build_batch_predictions_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline

    @asset(
        name="batch_predictions",
        group_name="inference",
        kinds={"pandas", "mlflow", "parquet"},
        owners=OWNERS,
        code_version="1",
        partitions_def=daily_partitions(pipeline),
        backfill_policy=BACKFILL_POLICY,
        required_resource_keys={"step_launcher", "model_registry"},
    )
    def batch_predictions(
        context: AssetExecutionContext, features: pd.DataFrame
    ) -> Output[dict[str, pd.DataFrame]]:
        """Each feature row scored by `models:/<name>@champion`, with the model version that scored it."""
        model_registry: ModelRegistry = context.resources.model_registry
        champion = model_registry.version_for_alias(CHAMPION)
        if champion is None:
            raise Failure(
                description=(
                    f"batch_predictions: registered model {model_registry.model_name!r} has no "
                    f"'{CHAMPION}' alias yet; materialize trained_model, evaluation_report and "
                    "champion_model first"
                )
            )
        model = model_registry.load_model(champion)
        scored = score_frame(
            features, model, pipeline.feature_columns, champion.name, champion.version,
            dt.datetime.now(dt.UTC),
        )
        frames = split_by_day(scored, partition_keys(context))
        metadata = table_metadata(frames)
        metadata.update(
            {
                "model_name": champion.name,
                "model_version": champion.version,
                "mlflow_run_id": champion.run_id,
                "model_uri": MetadataValue.text(f"models:/{champion.name}@{CHAMPION} (version {champion.version})"),
                "mean_prediction": MetadataValue.float(float(scored[PREDICTION_COLUMN].mean()) if len(scored) else 0.0),
            }
        )
        return Output(frames, metadata=metadata)

    return batch_predictions
