"""MLflow tracking and the model registry, as one resource per deployment.

dev/test use a local `sqlite:///` store; staging/prod use Databricks tracking and the Unity
Catalog registry (`databricks-uc`, three-level model names). Every MLflow run tabml opens is
closed in the same step: FINISHED on success, FAILED on any exception, so no run is left
RUNNING after a failed step, a subset run or `materialize()`. A worker killed mid-step cannot
close its run; the next run of that asset and partition ends it as KILLED.

The steps' runs of one Dagster run are nested under one parent run tagged `dagster_run_id`,
dagster-mlflow's convention, so a team's own step logging through the project's
`mlflow_tracking` resource writes to that same parent (resources/mlflow_tracking.py).

Everything goes through the resource's own `MlflowClient` and an explicit run id, never MLflow's
fluent API (`mlflow.start_run`, `mlflow.log_*`, `mlflow.set_tracking_uri`), which keeps the
active run and the URIs in process globals. So steps that share a process (the in-process
executor, threads, tests) each write to their own run and store, and nothing is locked while a
model fits.

mlflow is imported inside the functions that call it, not with this module: it costs about a
second that every process loading the code location would pay (the webserver, the daemon, each
run worker), while only steps that talk to MLflow need it.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr
from sklearn.pipeline import Pipeline

from tabml_assets.ml.challenger import Evaluation
from tabml_assets.ml.evaluation import GateResult

# ModelVersionRef lives with the records that carry it; imported from here as well.
from tabml_assets.ml.records import ModelVersionRef
from tabml_assets.resources.model_cache import ModelCache
from tabml_assets.resources.retries import fail_fast_unless_transient

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset
    from mlflow.entities import RunInfo
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

# MLflow's run statuses (mlflow.entities.RunStatus), spelled out so this module loads without
# importing mlflow; test_lazy_imports.py checks them against the installed MLflow.
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"

CHAMPION = "champion"
CHALLENGER = "challenger"
# Tags every tabml run carries (assets/training.py run_tags): which asset partition it records.
ASSET_KEY_TAG = "dagster.asset_key"
PARTITION_KEY_TAG = "dagster.partition_key"
DAGSTER_RUN_TAG = "dagster.run_id"
ENDED_BY_TAG = "tabml.ended_by"
# The parent run of one Dagster run carries dagster-mlflow's tag, so its `mlflow_tracking`
# resource in the same Dagster run finds that very run (resources/mlflow_tracking.py).
PARENT_RUN_TAG = "dagster_run_id"
JOB_NAME_TAG = "dagster.job_name"
PARENT_ID_TAG = "mlflow.parentRunId"
DUPLICATE_OF_TAG = "tabml.duplicate_of"
MODEL_ARTIFACT = "model"
REPORT_ARTIFACT = "evaluation_report.html"
GATE_ARTIFACT = "gate.json"

# Our integer features never hold missing values, so MLflow's hint about them is noise.
warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
# MLflow's limits per log_batch call.
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000


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


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow refuses NaN (e.g. ROC AUC of a test split with one class): leave those out."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class TrackedRun:
    """An open MLflow run of one step, written to by its id through the registry's client."""

    client: MlflowClient
    info: RunInfo
    # How the run ends when its block ends without an exception.
    status: str = field(default=FINISHED)

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def artifact_uri(self) -> str:
        return str(self.info.artifact_uri)

    def log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, str(value)) for key, value in params.items()]
        for chunk in _chunks(entries, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float], model_id: str | None = None) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        entries = [Metric(key, float(value), now, 0, model_id=model_id) for key, value in metrics.items()]
        for chunk in _chunks(entries, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_dict(self, value: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, value, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_input(self, dataset: Dataset, context: str) -> None:
        """Record `dataset` as an input of the run (MLflow's dataset lineage), e.g. "training"."""
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        described = dataset.to_dict()
        entity = DatasetEntity(
            name=described["name"],
            digest=described["digest"],
            source_type=described["source_type"],
            source=described["source"],
            schema=described.get("schema"),
            profile=described.get("profile"),
        )
        tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])

    def end_as_failed(self) -> None:
        """End the run FAILED when its block ends, without failing the step (a failed gate)."""
        self.status = FAILED


def parent_runs(client: MlflowClient, experiment_id: str, dagster_run_id: str) -> list[Any]:
    """The parent runs of a Dagster run (tag `dagster_run_id`), oldest first."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{dagster_run_id}'", max_results=100
    )
    return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))


def retire_duplicate_parent(client: MlflowClient, experiment_id: str, duplicate: str, kept: str) -> None:
    """End a parent run created in a race as KILLED, pointing at the one kept: untagged, so
    neither tabml nor dagster-mlflow's resource (which takes the newest match) finds it again,
    and with the steps' runs already under it moved to the kept parent.

    Every racing step that sees both retires it, writing the same values: a write that collides
    with another's (sqlite's unique tag key) or finds the tag gone has been done by that one.
    """

    from mlflow.exceptions import MlflowException

    def once(write: Callable[[], object]) -> None:
        try:
            write()
        except MlflowException:
            pass

    once(lambda: client.set_tag(duplicate, DUPLICATE_OF_TAG, kept))
    once(lambda: client.set_tag(duplicate, ENDED_BY_TAG, f"duplicate parent run, created at the same time as {kept}, which is older"))
    once(lambda: client.delete_tag(duplicate, PARENT_RUN_TAG))
    client.set_terminated(duplicate, KILLED)
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{duplicate}'", max_results=10_000
    )
    for child_id in [child.info.run_id for child in children]:
        once(partial(client.set_tag, child_id, PARENT_ID_TAG, kept))


def current_parent(client: MlflowClient, parent_id: str) -> str:
    """The parent kept in place of `parent_id` if a racing step retired it, else `parent_id`."""
    # Each retirement points at an older run, so the chain ends; a few steps at most.
    for _ in range(100):
        kept = client.get_run(parent_id).data.tags.get(DUPLICATE_OF_TAG)
        if not kept:
            return parent_id
        parent_id = kept
    return parent_id


def settle_parent_run(client: MlflowClient, experiment_id: str, parent_id: str, failed: bool = False) -> None:
    """Close a parent run unless one of its steps' runs is still open (then it stays, or is made
    again, RUNNING): FAILED when `failed` or one of them failed, else FINISHED. Each step ends
    its own run before it settles the parent, so of two steps ending at once the later one sees
    both ended and closes it."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent_id}'", max_results=10_000
    )
    statuses = {child.info.status for child in children}
    running = RUNNING
    if running in statuses:
        if client.get_run(parent_id).info.status != running:
            client.update_run(parent_id, status=running)
        return
    failed = failed or FAILED in statuses
    client.set_terminated(parent_id, FAILED if failed else FINISHED)


@dataclass(frozen=True)
class RecordedEvaluation:
    """Where an evaluation went in MLflow: its run and the report artifact."""

    run_id: str
    report_uri: str


def evaluation_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The evaluation run's metrics: each model's test metrics, prefixed by its role."""
    roles = {"challenger": evaluation.challenger, "champion": evaluation.champion, "baseline": evaluation.baseline_metrics}
    return finite({f"{role}_test_{name}": value for role, values in roles.items() for name, value in (values or {}).items()})


def gate_document(gate: list[GateResult]) -> dict[str, Any]:
    return {"gate": [result.as_dict() for result in gate]}


class ModelRegistry(ConfigurableResource):
    """MLflow tracking server and model registry holding the champion/challenger aliases."""

    tracking_uri: str
    registry_uri: str
    experiment_name: str
    model_name: str
    artifact_location: str | None = None
    # Local folder keeping downloaded versions' artifacts across runs (resources/model_cache.py);
    # None downloads every time.
    model_cache_dir: str | None = None

    # Per resource instance, never per process: two instances (two steps in threads, two stores
    # in one test) share nothing. A new client on a store this process has opened costs ~30 ms:
    # MLflow caches the database engine itself.
    _client: MlflowClient | None = PrivateAttr(default=None)
    _models: dict[tuple[str, str], Pipeline] = PrivateAttr(default_factory=dict)
    # The Dagster run this instance was set up for: its job names the parent run.
    _dagster_run: tuple[str, str] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        if context.run is not None:
            self._dagster_run = (context.run.run_id, context.run.job_name)

    def client(self) -> MlflowClient:
        """This resource's client (created in setup; lazily where the resource is used directly)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

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
    def run(self, run_name: str, tags: dict[str, str]) -> Iterator[TrackedRun]:
        """Open an MLflow run and close it whatever happens: FINISHED, or FAILED on error.

        The run is nested under the parent run of its Dagster run (tag `dagster.run_id`), found
        or created here: one parent per Dagster run, RUNNING while one of its steps' runs is
        open, closed when the last one closes. Runs a dead worker left RUNNING for the same
        asset partition are ended first (KILLED).
        """
        from mlflow.tracking.context.registry import resolve_tags

        client = self.client()
        with fail_fast_unless_transient(f"MLflow at {self.tracking_uri}: start run {run_name!r}"):
            experiment_id = self.experiment_id()
            self.end_orphaned_runs(experiment_id, tags)
            parent_id = self.parent_run(experiment_id, tags)
            nested = {**tags, PARENT_ID_TAG: parent_id} if parent_id else tags
            # With the user, source and git tags mlflow.start_run would add.
            created = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(nested))
        run = TrackedRun(client, created.info)
        try:
            yield run
        except BaseException:
            client.set_terminated(run.run_id, FAILED)
            if parent_id:
                self._close_under_parent(run.run_id, experiment_id, parent_id)
            raise
        else:
            client.set_terminated(run.run_id, run.status)
            if parent_id:
                self._close_under_parent(run.run_id, experiment_id, parent_id)

    def _close_under_parent(self, run_id: str, experiment_id: str, parent_id: str) -> None:
        from mlflow.exceptions import MlflowException

        client = self.client()
        kept = current_parent(client, parent_id)
        if kept != parent_id:
            try:
                client.set_tag(run_id, PARENT_ID_TAG, kept)
            except MlflowException:
                pass  # The step that retired the parent moved this run at the same moment.
        settle_parent_run(client, experiment_id, kept)

    def parent_run(self, experiment_id: str, tags: Mapping[str, str]) -> str | None:
        """The id of the parent run of the Dagster run `tags` names, marked RUNNING; None
        when the tags name no Dagster run.

        Two steps of one Dagster run may get here at once (multiprocess executor): each
        searches by tag, creates a run if it found none, then searches again and keeps the
        oldest (start time, then id), retiring the others (`retire_duplicate_parent`). A step
        that saw only its own run may have nested under one that a later step retires: it
        follows `tabml.duplicate_of` when its run closes (`current_parent`).
        """
        dagster_run_id = tags.get(DAGSTER_RUN_TAG, "")
        # Dagster run ids are UUIDs; anything else cannot be matched by MLflow's filter.
        if not dagster_run_id or "'" in dagster_run_id:
            return None
        client = self.client()
        found = parent_runs(client, experiment_id, dagster_run_id)
        if not found:
            self._create_parent_run(experiment_id, dagster_run_id, tags)
            found = parent_runs(client, experiment_id, dagster_run_id)
            for duplicate in found[1:]:
                retire_duplicate_parent(client, experiment_id, duplicate.info.run_id, found[0].info.run_id)
        kept = found[0]
        if kept.info.status != RUNNING:
            # Open again while this step's run is: closed once no step's run is open.
            client.update_run(kept.info.run_id, status=RUNNING)
        return str(kept.info.run_id)

    def _create_parent_run(self, experiment_id: str, dagster_run_id: str, tags: Mapping[str, str]) -> str:
        from mlflow.tracking.context.registry import resolve_tags

        parent_tags = {PARENT_RUN_TAG: dagster_run_id}
        if self._dagster_run is not None and self._dagster_run[0] == dagster_run_id:
            parent_tags[JOB_NAME_TAG] = self._dagster_run[1]
        if "tabml.project" in tags:
            parent_tags["tabml.project"] = tags["tabml.project"]
        created = self.client().create_run(
            experiment_id, run_name=f"dagster run {dagster_run_id[:8]}", tags=resolve_tags(parent_tags)
        )
        return str(created.info.run_id)

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
            client.set_terminated(orphan.info.run_id, KILLED)
        # The dead worker's Dagster run left its parent RUNNING too: closed once no step's run
        # under it is open.
        for parent_id in {orphan.data.tags.get(PARENT_ID_TAG) for orphan in orphans} - {None}:
            assert parent_id is not None
            settle_parent_run(client, experiment_id, parent_id)
        return [orphan.info.run_id for orphan in orphans]

    def log_and_register(
        self, run: TrackedRun, model: Pipeline, input_example: pd.DataFrame, predictions: Any
    ) -> ModelVersionRef:
        """Log the model (signature, input example, pinned requirements) as an output of `run`
        and register it as a new version of the model.

        What `mlflow.sklearn.log_model` does, against this resource's client and `run`: that
        function finds its run, experiment and store through MLflow's process globals.
        """
        import mlflow.sklearn
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model, infer_signature

        with fail_fast_unless_transient(f"MLflow: log and register a version of {self.model_name!r}"):
            client = self.client()
            logged = client.create_logged_model(
                run.info.experiment_id, name=MODEL_ARTIFACT, source_run_id=run.run_id,
                params=dict(client.get_run(run.run_id).data.params),
            )
            try:
                client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
                with tempfile.TemporaryDirectory(prefix="tabml-model-") as tmp:
                    local = str(Path(tmp) / MODEL_ARTIFACT)
                    mlflow.sklearn.save_model(
                        model,
                        local,
                        mlflow_model=Model(
                            artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                            run_id=run.run_id, model_id=logged.model_id,
                        ),
                        serialization_format=self._serialization_format(),
                        signature=infer_signature(input_example, predictions),
                        input_example=input_example,
                        pip_requirements=pip_requirements_for(model),
                        skops_trusted_types=trusted_types_for(model),
                    )
                    client.log_model_artifacts(logged.model_id, local)
                    # The logged model shows the run's metrics, as log_model links them.
                    run.log_metrics(dict(client.get_run(run.run_id).data.metrics), model_id=logged.model_id)
                    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
                    version = self._register(logged.model_id, logged.artifact_location, run.run_id)
            except BaseException:
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
                raise
        return ModelVersionRef(self.model_name, str(version.version), run.run_id)

    def _serialization_format(self) -> str:
        # MLflow's own default, decided by our tracking URI instead of the process's: skops,
        # or cloudpickle on Databricks.
        import mlflow.sklearn
        from mlflow.utils.databricks_utils import is_in_databricks_runtime
        from mlflow.utils.uri import is_databricks_uri

        if is_in_databricks_runtime() or is_databricks_uri(self.tracking_uri):
            return str(mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        return str(mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS)

    def _register(self, model_id: str, artifact_location: str, run_id: str) -> ModelVersion:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.utils.uri import is_databricks_unity_catalog_uri

        client = self.client()
        try:
            client.create_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        # The source is the logged model's artifact location with the run given: a
        # `models:/<model_id>` source makes MLflow's sqlite registry look the model up through a
        # client of the process's tracking URI. Unity Catalog's registry looks `model_id` up the
        # same way (mlflow.get_logged_model), so it gets the id only where that URI is ours, as
        # on the Databricks clusters staging/prod steps run on; MLflow itself leaves it out of a
        # Unity Catalog version whose tracking is not Databricks.
        linked = (
            model_id
            if not is_databricks_unity_catalog_uri(self.registry_uri) or mlflow.get_tracking_uri() == self.tracking_uri
            else None
        )
        return client.create_model_version(
            self.model_name, source=artifact_location, run_id=run_id, model_id=linked,
            await_creation_for=60,
        )

    def set_alias(self, alias: str, version: str) -> None:
        with fail_fast_unless_transient(f"MLflow: set alias {alias!r} of {self.model_name!r} to version {version}"):
            self.client().set_registered_model_alias(self.model_name, alias, version)

    def version_for_alias(self, alias: str) -> ModelVersionRef | None:
        """The version an alias points at, or None when the alias (or the model) is unset."""
        from mlflow.exceptions import MlflowException

        with fail_fast_unless_transient(f"MLflow: look up alias {alias!r} of {self.model_name!r}"):
            try:
                found = self.client().get_model_version_by_alias(self.model_name, alias)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise
        return ModelVersionRef(self.model_name, str(found.version), found.run_id)

    def load_model(self, ref: ModelVersionRef) -> Pipeline:
        """Load a registered version (by name and version, never a file path), cached per instance."""
        if not isinstance(ref, ModelVersionRef) or ref.name != self.model_name or not str(ref.version).isdigit():
            raise TypeError(
                f"load_model: expected a registered version of {self.model_name!r} "
                f"(ModelVersionRef with a numeric version), found {ref!r}"
            )
        key = (ref.name, ref.version)
        if key not in self._models:
            with fail_fast_unless_transient(f"MLflow: load model {ref.uri}"):
                self._models[key] = self._load_version(ref)
        return self._models[key]

    def _download(self, ref: ModelVersionRef, folder: Path) -> Path:
        # Downloaded with our URIs; `mlflow.sklearn.load_model("models:/...")` would resolve the
        # name through the process's registry URI. From a local folder it reads no global.
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=self._artifact_uri(ref), dst_path=str(folder),
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri,
            )
        )

    def _cache_usable(self) -> bool:
        if self.model_cache_dir is None:
            return False
        try:
            Path(self.model_cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError:
            return False  # a read-only home (a locked-down cluster): download every time
        return True

    def _load_version(self, ref: ModelVersionRef) -> Pipeline:
        """From the local model cache when it holds the version intact, else downloaded (and
        kept there)."""
        import mlflow.sklearn

        if not self._cache_usable():
            with tempfile.TemporaryDirectory(prefix="tabml-model-") as tmp:
                return mlflow.sklearn.load_model(str(self._download(ref, Path(tmp))))
        assert self.model_cache_dir is not None
        cache = ModelCache(Path(self.model_cache_dir))
        run_id = ref.run_id or self.run_id_of(ref.version)
        if run_id is None:
            raise ValueError(f"{ref.uri} was registered without an MLflow run")
        entry = cache.entry(ref.name, ref.version, run_id)
        cached = cache.get(entry)
        if cached is not None:
            try:
                return mlflow.sklearn.load_model(str(cached))
            except Exception:
                # Intact files that do not load (written by another MLflow?): fetched again.
                cache.evict(entry)
        local = cache.fill(entry, partial(self._download, ref))
        return mlflow.sklearn.load_model(str(local))

    def _artifact_uri(self, ref: ModelVersionRef) -> str:
        # Databricks' registries hand out scoped credentials for `models:/` and take the URIs we
        # pass; elsewhere the version's storage location is read directly.
        from mlflow.utils.uri import is_databricks_unity_catalog_uri, is_databricks_uri

        if is_databricks_unity_catalog_uri(self.registry_uri) or is_databricks_uri(self.registry_uri):
            return ref.uri
        return self.client().get_model_version_download_uri(ref.name, ref.version)

    def record_evaluation(
        self,
        run_name: str,
        tags: dict[str, str],
        challenger: ModelVersionRef,
        evaluation: Evaluation,
        report_html: str,
        validation_status: str,
        fail_run: bool,
    ) -> RecordedEvaluation:
        """Record one evaluation in MLflow: an evaluation run with every model's test metrics,
        the gate (`gate.json`) and the HTML report, ended FAILED when `fail_run` (a blocking gate
        failed); the challenger's test metrics on its training run; `validation_status` on its
        registered version.
        """
        verdict = "passed" if evaluation.gate_passed else "failed"
        with self.run(run_name, tags) as run:
            with fail_fast_unless_transient(f"MLflow: record the evaluation of {challenger.uri}"):
                run.set_tags({"tabml.challenger_version": challenger.version, "tabml.gate": verdict})
                run.log_metrics(evaluation_metrics(evaluation))
                run.log_dict(gate_document(evaluation.gate), GATE_ARTIFACT)
                run.log_text(report_html, REPORT_ARTIFACT)
            if fail_run:
                run.end_as_failed()
        assert challenger.run_id is not None, "trained_model records the run of log_and_register"
        self.log_metrics_to_run(challenger.run_id, finite({f"test_{k}": v for k, v in evaluation.challenger.items()}))
        self.set_version_tags(challenger.version, {"validation_status": validation_status})
        return RecordedEvaluation(run.run_id, f"{run.artifact_uri}/{REPORT_ARTIFACT}")

    def log_metrics_to_run(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        with fail_fast_unless_transient(f"MLflow: log metrics to run {run_id}"):
            self.client().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    # --- the champion's life: version facts, tags, aliases and audit records ----------------

    def model_version(self, version: str) -> ModelVersion | None:
        """A registered version with its tags, or None when the model has no such version."""
        from mlflow.exceptions import MlflowException

        with fail_fast_unless_transient(f"MLflow: look up version {version} of {self.model_name!r}"):
            try:
                return self.client().get_model_version(self.model_name, str(version))
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise

    def run_id_of(self, version: str) -> str | None:
        """The MLflow run that logged a registered version (its training run)."""
        with fail_fast_unless_transient(f"MLflow: look up version {version} of {self.model_name!r}"):
            return self.client().get_model_version(self.model_name, str(version)).run_id

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
