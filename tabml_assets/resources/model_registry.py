"""MLflow tracking and the model registry, as one resource per deployment.

dev/test use a local `sqlite:///` store; staging/prod use Databricks tracking and the Unity
Catalog registry (`databricks-uc`, three-level model names). Every MLflow run tabml opens is
closed in the same step: FINISHED on success, FAILED on any exception, so no run is left
RUNNING after a failed step, a subset run or `materialize()`. A worker killed mid-step cannot
close its run; the next run of that asset and partition ends it as KILLED.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from dagster import ConfigurableResource
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

# ModelVersionRef lives with the records that carry it; imported from here as well.
from tabml_assets.ml.records import ModelVersionRef
from tabml_assets.resources.retries import fail_fast_unless_transient

CHAMPION = "champion"
CHALLENGER = "challenger"
# Tags every tabml run carries (assets/training.py run_tags): which asset partition it records.
ASSET_KEY_TAG = "dagster.asset_key"
PARTITION_KEY_TAG = "dagster.partition_key"
DAGSTER_RUN_TAG = "dagster.run_id"
ENDED_BY_TAG = "tabml.ended_by"

# The fluent MLflow API keeps its URIs and active run in process globals; steps that share a
# process (in-process executor, tests) take turns.
_FLUENT_LOCK = threading.RLock()
# Our integer features never hold missing values, so MLflow's hint about them is noise.
warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
_CLIENTS: dict[tuple[str, str], MlflowClient] = {}
_MODEL_CACHE: dict[tuple[str, str, str], Pipeline] = {}


def pip_requirements_for(model: Pipeline) -> list[str]:
    """Pinned requirements of a tabml model, so log_model need not infer them (7-10 s)."""
    import numpy
    import scipy
    import sklearn
    import skops

    from tabml_assets.ml.estimators import pip_requirements_extra

    return [
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
        f"scipy=={scipy.__version__}",
        f"skops=={skops.__version__}",
        # LightGBM or XGBoost where the model holds them.
        *pip_requirements_extra(model),
    ]


def trusted_types_for(model: Pipeline) -> list[str]:
    """Types skops must be told to trust: we built the model from the estimator allow-list."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


class ModelRegistry(ConfigurableResource):
    """MLflow tracking server and model registry holding the champion/challenger aliases."""

    tracking_uri: str
    registry_uri: str
    experiment_name: str
    model_name: str
    artifact_location: str | None = None

    def client(self) -> MlflowClient:
        """One client per store and process: a new one re-checks the store's schema (~0.5 s)."""
        key = (self.tracking_uri, self.registry_uri)
        if key not in _CLIENTS:
            _CLIENTS[key] = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return _CLIENTS[key]

    def experiment_id(self) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        except MlflowException:
            # Another step created it first.
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    @contextmanager
    def run(self, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
        """Open an MLflow run and close it whatever happens: FINISHED, or FAILED on error.

        Runs a dead worker left RUNNING for the same asset partition are ended first (KILLED).
        """
        with _FLUENT_LOCK:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri)
            with fail_fast_unless_transient(f"MLflow at {self.tracking_uri}: start run {run_name!r}"):
                experiment_id = self.experiment_id()
                self.end_orphaned_runs(experiment_id, tags)
                active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
            try:
                yield active
            except BaseException:
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
                raise
            else:
                mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))

    def end_orphaned_runs(self, experiment_id: str, tags: dict[str, str]) -> list[str]:
        """End as KILLED the RUNNING runs of the asset partition `tags` names; return their ids.

        Two runs of one asset partition never overlap: the run queue holds one Dagster run per
        partition, and a step's retries follow each other. So a run of that partition still
        RUNNING when the next one starts was opened by a worker that died before it could close
        it (kill -9, OOM, a lost machine). Runs without asset and partition tags are left alone.
        """
        asset, partition = tags.get(ASSET_KEY_TAG), tags.get(PARTITION_KEY_TAG)
        # Asset and partition keys never hold quotes; MLflow's filter could not match one anyway.
        if not asset or not partition or "'" in asset + partition:
            return []
        client = self.client()
        orphans = client.search_runs(
            [experiment_id],
            filter_string=(
                "attributes.status = 'RUNNING' "
                f"and tags.`{ASSET_KEY_TAG}` = '{asset}' "
                f"and tags.`{PARTITION_KEY_TAG}` = '{partition}'"
            ),
            max_results=100,
        )
        ended_by = f"dagster run {tags.get(DAGSTER_RUN_TAG, '?')}: found RUNNING, its worker gone"
        for orphan in orphans:
            client.set_tag(orphan.info.run_id, ENDED_BY_TAG, ended_by)
            client.set_terminated(orphan.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        return [orphan.info.run_id for orphan in orphans]

    def log_and_register(
        self, model: Pipeline, input_example: pd.DataFrame, predictions: Any
    ) -> ModelVersionRef:
        """Log the model with signature and input example into the active run and register it."""
        with fail_fast_unless_transient(f"MLflow: log and register a version of {self.model_name!r}"):
            info = self._log_model(model, input_example, predictions)
        active = mlflow.active_run()
        assert active is not None, "log_and_register runs inside ModelRegistry.run"
        return ModelVersionRef(self.model_name, str(info.registered_model_version), active.info.run_id)

    def _log_model(self, model: Pipeline, input_example: pd.DataFrame, predictions: Any) -> Any:
        return mlflow.sklearn.log_model(
            sk_model=model,
            name="model",
            registered_model_name=self.model_name,
            signature=infer_signature(input_example, predictions),
            input_example=input_example,
            pip_requirements=pip_requirements_for(model),
            skops_trusted_types=trusted_types_for(model),
            await_registration_for=60,
        )

    def set_alias(self, alias: str, version: str) -> None:
        with fail_fast_unless_transient(f"MLflow: set alias {alias!r} of {self.model_name!r} to version {version}"):
            self.client().set_registered_model_alias(self.model_name, alias, version)

    def version_for_alias(self, alias: str) -> ModelVersionRef | None:
        """The version an alias points at, or None when the alias (or the model) is unset."""
        with fail_fast_unless_transient(f"MLflow: look up alias {alias!r} of {self.model_name!r}"):
            try:
                found = self.client().get_model_version_by_alias(self.model_name, alias)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise
        return ModelVersionRef(self.model_name, str(found.version), found.run_id)

    def load_model(self, ref: ModelVersionRef) -> Pipeline:
        """Load a registered version (by name and version, never a file path), cached per process."""
        if not isinstance(ref, ModelVersionRef) or ref.name != self.model_name or not str(ref.version).isdigit():
            raise TypeError(
                f"load_model: expected a registered version of {self.model_name!r} "
                f"(ModelVersionRef with a numeric version), found {ref!r}"
            )
        key = (self.registry_uri, ref.name, ref.version)
        if key not in _MODEL_CACHE:
            with _FLUENT_LOCK, fail_fast_unless_transient(f"MLflow: load model {ref.uri}"):
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.registry_uri)
                _MODEL_CACHE[key] = mlflow.sklearn.load_model(ref.uri)
        return _MODEL_CACHE[key]

    def log_metrics_to_run(self, run_id: str, metrics: dict[str, float]) -> None:
        client = self.client()
        with fail_fast_unless_transient(f"MLflow: log metrics to run {run_id}"):
            for name, value in metrics.items():
                client.log_metric(run_id, name, value)

    # --- the champion's life: version facts, tags, aliases and audit records ----------------

    def model_version(self, version: str) -> ModelVersion | None:
        """A registered version with its tags, or None when the model has no such version."""
        with fail_fast_unless_transient(f"MLflow: look up version {version} of {self.model_name!r}"):
            try:
                return self.client().get_model_version(self.model_name, str(version))
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        with fail_fast_unless_transient(f"MLflow: tag version {version} of {self.model_name!r}"):
            for key, value in tags.items():
                self.client().set_model_version_tag(self.model_name, str(version), key, value)

    def delete_alias(self, alias: str) -> None:
        with fail_fast_unless_transient(f"MLflow: delete alias {alias!r} of {self.model_name!r}"):
            self.client().delete_registered_model_alias(self.model_name, alias)

    def run_tags_of(self, run_id: str) -> dict[str, str]:
        """The tags of an MLflow run (a version's training run holds its training window)."""
        with fail_fast_unless_transient(f"MLflow: read run {run_id}"):
            return dict(self.client().get_run(run_id).data.tags)

    def audit_records(self, kind: str) -> list[dict[str, str]]:
        """Tags of every audit run of `kind` in the experiment (tag `tabml.audit`), oldest first."""
        with fail_fast_unless_transient(f"MLflow: search {kind} audit records of {self.model_name!r}"):
            experiment = self.client().get_experiment_by_name(self.experiment_name)
            if experiment is None:
                return []
            runs = self.client().search_runs(
                [experiment.experiment_id],
                # FAILED records are attempts that changed nothing.
                filter_string=f"tags.`tabml.audit` = '{kind}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time ASC"],
                max_results=10_000,
            )
        return [dict(run.data.tags) for run in runs]
