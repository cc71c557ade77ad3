"""batch_predictions: each day's feature rows scored by the registry's current champion."""


import datetime as dt
from functools import partial
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tabml_assets.assets.common import OWNERS, daily_partitions, partition_keys
from tabml_assets.assets.features import engine_of
from tabml_assets.assets.raw import BACKFILL_POLICY
from tabml_assets.ml.scoring import (
    PREDICTION_COLUMN,
    PROBABILITY_COLUMN,
    probability_column,
    score_frame,
)
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import PartitionStore, SummaryColumns, written_metadata
from tabml_assets.spec import LoadedSpec


def summed_columns(model: Any, task: str) -> tuple[str, ...]:
    """Columns whose mean the materialization reports: the prediction, or each class's probability."""
    if task == "regression":
        return (PREDICTION_COLUMN,)
    columns = tuple(probability_column(label) for label in model.classes_)
    return (PROBABILITY_COLUMN, *columns) if task == "binary" else columns


def build_batch_predictions_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline
    keys = spec.keys
    event_time = pipeline.event_time

    @asset(
        key=keys.batch_predictions,
        group_name=keys.group("inference"),
        kinds={"pandas", "mlflow", "parquet"},
        owners=OWNERS,
        code_version="1",
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        backfill_policy=BACKFILL_POLICY,
        # Scoring uses whatever is champion now; the dep on champion_model orders a run that
        # trains, promotes and scores one day (end_to_end_job) so it scores with the new champion.
        deps=[keys.features, keys.champion_model],
        required_resource_keys={"step_launcher", keys.registry_resource, "partition_store", "spark"},
    )
    @transient_errors_only
    def batch_predictions(context: AssetExecutionContext) -> MaterializeResult:
        """Each feature row scored by `models:/<name>@champion` (value, or label and class probabilities), with the model version."""
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        champion = model_registry.version_for_alias(CHAMPION)
        if champion is None:
            raise Failure(
                description=(
                    f"batch_predictions: registered model {model_registry.model_name!r} has no "
                    f"'{CHAMPION}' alias yet; materialize trained_model, evaluation_report and "
                    f"champion_model of {spec.name} first"
                ),
                allow_retries=False,
            )
        store: PartitionStore = context.resources.partition_store
        spark: SparkSessionResource | None = context.resources.spark
        session = spark.get_session() if spark is not None else None
        # One timestamp for the whole run, so every batch (and executor) stamps the same value.
        score = partial(
            score_frame,
            feature_columns=pipeline.feature_columns,
            model_name=champion.name,
            model_version=champion.version,
            scored_at=dt.datetime.now(dt.UTC),
            task=pipeline.task,
            positive_class=pipeline.target.positive_class,
        )
        model = model_registry.load_model(champion)
        summed = summed_columns(model, pipeline.task)
        written = {
            key: store.transform_partition(
                keys.features, keys.batch_predictions, key, score,
                shared={"model": model},
                spark=session,
                summary=SummaryColumns(sums=summed, ranges=(event_time,)),
            )
            for key in partition_keys(context)
        }
        rows = sum(w.rows for w in written.values())
        means = {c: sum(w.column_sums[c] for w in written.values()) / rows if rows else 0.0 for c in summed}
        metadata = written_metadata(written, time_column=event_time, time_label="event_time")
        metadata.update({f"mean_{c}": MetadataValue.float(v) for c, v in means.items()})
        metadata.update(
            {
                "model_name": champion.name,
                "model_version": champion.version,
                "mlflow_run_id": champion.run_id,
                "model_uri": MetadataValue.text(f"models:/{champion.name}@{CHAMPION} (version {champion.version})"),
                "engine": MetadataValue.text(engine_of(spark, store)),
            }
        )
        return MaterializeResult(metadata=metadata)

    return batch_predictions
