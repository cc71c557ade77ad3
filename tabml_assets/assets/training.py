"""trained_model: fit the spec's estimator on a rolling window of feature partitions, in MLflow."""


import hashlib
import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from tabml_assets.assets.common import OWNERS, daily_partitions
from tabml_assets.ml.records import TrainedModel, TrainingRows
from tabml_assets.ml.spark_training import fit_window_on_spark, is_spark_estimator
from tabml_assets.ml.training import estimator_params, fit_window
from tabml_assets.resources.model_registry import CHALLENGER, ModelRegistry
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import LOAD_AS_FILES, PartitionFiles, PartitionStore
from tabml_assets.spec import LoadedSpec

if TYPE_CHECKING:
    from mlflow.data.meta_dataset import MetaDataset

CODE_VERSION = "1"


def training_window_input(spec: LoadedSpec, as_files: bool = False) -> AssetIn:
    """The last N daily feature partitions, ending with the model's own partition (as their
    files with `as_files`, for a Spark fit that reads them itself)."""
    pipeline = spec.pipeline
    return AssetIn(
        key=spec.keys.features,
        metadata={LOAD_AS_FILES: as_files},
        # Given, as Dagster cannot read a type check off the asset's union annotation.
        dagster_type=PartitionFiles if as_files else pd.DataFrame,
        partition_mapping=TimeWindowPartitionMapping(
            start_offset=-(pipeline.training_window_days - 1),
            end_offset=0,
            # The first days of the partition range train on the shorter window that exists.
            allow_nonexistent_upstream_partitions=True,
        ),
    )


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested spec -> flat MLflow params ("spec.split.train": "0.7")."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}", inner))
        return out
    return {prefix: str(value)[:500]}


def run_tags(context: AssetExecutionContext, window: tuple[str, str]) -> dict[str, str]:
    return {
        "tabml.project": context.asset_key.path[0],
        "dagster.run_id": context.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.partition_key": context.partition_key,
        "dagster.code_version": CODE_VERSION,
        "tabml.window_start": window[0],
        "tabml.window_end": window[1],
    }


def window_of(context: AssetExecutionContext, input_name: str = "features") -> tuple[str, str]:
    keys = context.asset_partition_keys_for_input(input_name)
    return keys[0], keys[-1]


def training_dataset(frame: pd.DataFrame, name: str, location: str) -> "MetaDataset":
    """The training rows as MLflow dataset lineage: where they live, a content digest, the schema.

    `mlflow.data.from_pandas` infers the schema from every row and hashes the frame its own
    way: 4 s for 700k rows. A digest of the whole content plus a schema from the first rows
    carries the same lineage in a tenth of a second.
    """
    # Imported here, not at load: only a training step needs mlflow (resources/model_registry.py).
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:10]
    with warnings.catch_warnings():
        # A local path matches MLflow's local-artifact source twice; either reading is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        source = resolve_dataset_source(location)
    schema = infer_signature(frame.head(1000)).inputs
    # MetaDataset implements `profile` at runtime; its stub leaves it abstract.
    return MetaDataset(source=source, name=name, digest=digest, schema=schema)  # type: ignore[abstract]


def build_trained_model_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline
    keys = spec.keys

    @asset(
        key=keys.trained_model,
        group_name=keys.group("training"),
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        code_version=CODE_VERSION,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        ins={"features": training_window_input(spec, as_files=is_spark_estimator(pipeline.estimator))},
        required_resource_keys={"step_launcher", keys.registry_resource, "spark", "partition_store"},
    )
    @transient_errors_only
    def trained_model(
        context: AssetExecutionContext, features: pd.DataFrame | PartitionFiles
    ) -> Output[TrainedModel]:
        """The spec's estimator fitted on the labelled rows of the training window, registered in MLflow as challenger."""
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        store: PartitionStore = context.resources.partition_store
        window = window_of(context)
        with model_registry.run(f"train {context.partition_key}", run_tags(context, window)) as run:
            if isinstance(features, PartitionFiles):
                # A Spark estimator: the window is read, split and fitted on Spark; without a
                # cluster session (dev, test) on pyspark local mode.
                spark: SparkSessionResource | None = context.resources.spark
                session = (spark or SparkSessionResource(master="local[*]")).get_session()
                trained = fit_window_on_spark(session, features.paths, pipeline, spec.steps)
            else:
                trained = fit_window(features, pipeline, spec.steps)
            fit = trained.fit
            run.log_params({f"estimator.{k}": v for k, v in estimator_params(fit.model).items()})
            run.log_params(flatten("spec", pipeline.model_dump(mode="json", by_alias=True)))
            run.log_metrics({f"train_{k}": v for k, v in fit.train_metrics.items()})
            run.log_metrics({f"validation_{k}": v for k, v in fit.validation_metrics.items()})
            run.log_input(
                training_dataset(trained.lineage, f"features[{window[0]}..{window[1]}]", str(store.asset_folder(keys.features))),
                context="training",
            )
            run.set_tags(
                {
                    "tabml.training_rows": str(fit.fitted_rows),
                    "tabml.window_rows": str(trained.window_rows),
                    "tabml.labelled_rows": str(trained.labelled_rows),
                }
            )
            example = trained.example
            ref = model_registry.log_and_register(run, fit.model, example, fit.model.predict(example))
        model_registry.set_alias(CHALLENGER, ref.version)
        record = TrainedModel(
            model=ref,
            window_start=window[0],
            window_end=window[1],
            rows=TrainingRows(
                window=trained.window_rows, labelled=trained.labelled_rows, train=fit.train_rows,
                validation=fit.validation_rows, test=fit.test_rows, fitted=fit.fitted_rows,
            ),
            train_metrics=fit.train_metrics,
            validation_metrics=fit.validation_metrics,
        )
        metadata: dict[str, Any] = {
            "model_name": ref.name,
            "model_version": ref.version,
            "mlflow_run_id": ref.run_id,
            "model_uri": MetadataValue.text(ref.uri),
            "training_window": MetadataValue.text(f"{window[0]} .. {window[1]}"),
            "dagster/row_count": MetadataValue.int(trained.window_rows),
            "labelled_rows": MetadataValue.int(trained.labelled_rows),
            **{f"validation_{k}": MetadataValue.float(v) for k, v in fit.validation_metrics.items()},
        }
        return Output(record, metadata=metadata)

    return trained_model
