"""The pipeline spec: one project folder per pipeline (pipeline.yaml, the project's steps module,
optional profiles/<deployment>.yaml) and one profile per deployment that lists the projects it
runs; everything validated when definitions load.

Every validation error names the file, the key, what was expected and what was found, so
`dagster definitions validate` tells a user exactly which line of which YAML to fix.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tabml_assets.keys import PipelineKeys
from tabml_assets.steps import ProjectSteps, check_steps_fit_spec, load_steps

# The deployments tabml ships a profile for (conf/profiles/<name>.yaml). A conf folder of your
# own (TABML_CONF_DIR) may hold others: TABML_DEPLOYMENT picks any profile it has.
DEPLOYMENTS = ("dev", "test", "staging", "prod")
DEFAULT_CONF_DIR = Path(__file__).parent / "conf"
PROJECT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"

Task = Literal["regression", "binary", "multiclass"]
ColumnType = Literal["float", "integer", "boolean", "string", "datetime"]


@dataclass(frozen=True)
class EstimatorInfo:
    """Where an allow-listed estimator lives and what it is."""

    module: str
    kind: Literal["regressor", "classifier"]
    # tree: native categorical splits on ordinal codes; linear: one-hot and scaling.
    family: Literal["tree", "linear"]


# Estimators that pipeline.yaml may name. Config never imports arbitrary classes: a spec picks
# from this table, or names a callable in its own project's steps module (`steps:<name>`).
ESTIMATORS: dict[str, EstimatorInfo] = {
    "HistGradientBoostingRegressor": EstimatorInfo("sklearn.ensemble", "regressor", "tree"),
    "GradientBoostingRegressor": EstimatorInfo("sklearn.ensemble", "regressor", "tree"),
    "RandomForestRegressor": EstimatorInfo("sklearn.ensemble", "regressor", "tree"),
    "ExtraTreesRegressor": EstimatorInfo("sklearn.ensemble", "regressor", "tree"),
    "Ridge": EstimatorInfo("sklearn.linear_model", "regressor", "linear"),
    "LinearRegression": EstimatorInfo("sklearn.linear_model", "regressor", "linear"),
    "ElasticNet": EstimatorInfo("sklearn.linear_model", "regressor", "linear"),
    "LGBMRegressor": EstimatorInfo("lightgbm", "regressor", "tree"),
    "XGBRegressor": EstimatorInfo("xgboost", "regressor", "tree"),
    "HistGradientBoostingClassifier": EstimatorInfo("sklearn.ensemble", "classifier", "tree"),
    "GradientBoostingClassifier": EstimatorInfo("sklearn.ensemble", "classifier", "tree"),
    "RandomForestClassifier": EstimatorInfo("sklearn.ensemble", "classifier", "tree"),
    "ExtraTreesClassifier": EstimatorInfo("sklearn.ensemble", "classifier", "tree"),
    "LogisticRegression": EstimatorInfo("sklearn.linear_model", "classifier", "linear"),
    "LGBMClassifier": EstimatorInfo("lightgbm", "classifier", "tree"),
    "XGBClassifier": EstimatorInfo("xgboost", "classifier", "tree"),
    # Fitted on Spark from the window's files (ml/spark_training.py), registered as XGB*.
    "SparkXGBRegressor": EstimatorInfo("xgboost.spark", "regressor", "tree"),
    "SparkXGBClassifier": EstimatorInfo("xgboost.spark", "classifier", "tree"),
}
ESTIMATOR_ALLOW_LIST: dict[str, str] = {name: info.module for name, info in ESTIMATORS.items()}
STEPS_PREFIX = "steps:"

# Built-in metrics per task, and whether a larger value is better. Steps modules add their own.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("rmse", "mae", "r2", "mape"),
    "binary": ("roc_auc", "pr_auc", "log_loss", "f1", "precision", "recall", "accuracy"),
    "multiclass": ("roc_auc", "pr_auc", "log_loss", "f1", "precision", "recall", "accuracy"),
}
METRICS = TASK_METRICS["regression"]
HIGHER_IS_BETTER: dict[str, bool] = {
    "rmse": False, "mae": False, "r2": True, "mape": False,
    "roc_auc": True, "pr_auc": True, "log_loss": False, "f1": True,
    "precision": True, "recall": True, "accuracy": True,
}
DEFAULT_PRIMARY_METRIC: dict[str, str] = {"regression": "rmse", "binary": "roc_auc", "multiclass": "roc_auc"}
# Column types a target of each task may have.
TARGET_TYPES: dict[str, tuple[str, ...]] = {
    "regression": ("float", "integer"),
    "binary": ("boolean", "string", "integer"),
    "multiclass": ("string", "integer"),
}


class SpecError(ValueError):
    """A pipeline spec or profile that cannot be used, with the file and key to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionsSpec(_Strict):
    start_date: dt.date


class SplitSpec(_Strict):
    train: float = Field(gt=0, lt=1)
    validation: float = Field(ge=0, lt=1)
    test: float = Field(gt=0, lt=1)
    # Once validation metrics are measured on the model fitted on train, the registered model is
    # fitted again on train + validation (the newest rows it may see); the test split stays
    # untouched for the gate. false: register the train-only model.
    refit_on_validation: bool = True
    # Boosted trees (HistGradientBoosting*, LGBM*, XGB*) stop adding trees once the validation
    # split's loss has not improved for this many rounds; the refit on train + validation uses
    # the number of trees chosen. null: the estimator's own iteration count.
    early_stopping_rounds: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must sum to 1, found {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self


class ColumnSpec(_Strict):
    """One raw column: its type and the rules every row must meet (else it is quarantined)."""

    type: ColumnType
    nullable: bool = False
    # Inclusive bounds (min/max) and exclusive ones (greater_than/less_than), for numbers.
    min: float | None = None
    max: float | None = None
    greater_than: float | None = None
    less_than: float | None = None
    allowed: list[str | int | float | bool] | None = None
    # A datetime after the moment of ingestion is quarantined (the event time always is).
    not_in_future: bool = False

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        bounds = [k for k in ("min", "max", "greater_than", "less_than") if getattr(self, k) is not None]
        if bounds and self.type not in ("float", "integer"):
            raise ValueError(f"{bounds} apply to float or integer columns, found type {self.type!r}")
        if self.not_in_future and self.type != "datetime":
            raise ValueError(f"not_in_future applies to datetime columns, found type {self.type!r}")
        return self


class ColumnComparison(_Strict):
    """A rule across two columns of a row, e.g. `returned_at >= rented_at`; `name` is the quarantine reason."""

    column: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    other: str
    name: str | None = None

    @property
    def reason(self) -> str:
        return self.name or f"not {self.column} {self.op} {self.other}"


class DatasetSpec(_Strict):
    """The raw table a project brings: its columns, its time axis and its row rules."""

    columns: dict[str, ColumnSpec] = Field(min_length=1)
    # The column that assigns each row to its daily partition.
    event_time: str
    # The zone of timestamps that carry none; stored and partitioned in UTC.
    timezone: str = "UTC"
    # Columns carrying the label: scoring rows may lack them (absent or null).
    label_columns: list[str] = Field(default_factory=list)
    # Columns that identify a row; null: a row identical to an earlier one is the duplicate.
    unique_key: list[str] | None = None
    rules: list[ColumnComparison] = Field(default_factory=list)
    # The Databricks table the staging/prod source reads (any name `spark.table` resolves).
    table: str | None = None
    # How landed text files write timestamps that are not ISO 8601 (2026-05-11 08:00): a
    # strptime format such as "%d/%m/%Y %H:%M", or only whether numeric dates put the day first
    # (05/11/2026: true -> 5 November, false -> May 11). Without either, such dates are refused.
    datetime_format: str | None = None
    day_first: bool | None = None
    # The text encoding of landed CSV files; default UTF-8 (with or without a byte-order mark).
    encoding: str | None = None

    @field_validator("datetime_format")
    @classmethod
    def _is_a_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError(f"expected a strptime format such as '%d/%m/%Y %H:%M', found {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        import codecs

        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"expected a Python codec name such as 'latin-1' or 'cp1252', found {value!r}"
                ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as 'UTC' or 'America/New_York', found {value!r}") from None
        return value

    @model_validator(mode="after")
    def _names_are_columns(self) -> DatasetSpec:
        known = list(self.columns)
        if self.event_time not in self.columns:
            raise ValueError(f"event_time {self.event_time!r} is not a column; the columns are {known}")
        if self.columns[self.event_time].type != "datetime":
            raise ValueError(
                f"event_time {self.event_time!r} must be a datetime column, found type "
                f"{self.columns[self.event_time].type!r}"
            )
        for key, names in (("label_columns", self.label_columns), ("unique_key", self.unique_key or [])):
            unknown = [c for c in names if c not in self.columns]
            if unknown:
                raise ValueError(f"{key} {unknown} are not columns; the columns are {known}")
        for rule in self.rules:
            unknown = [c for c in (rule.column, rule.other) if c not in self.columns]
            if unknown:
                raise ValueError(f"rules: {unknown} are not columns; the columns are {known}")
        if self.event_time in self.label_columns:
            raise ValueError(f"the event_time {self.event_time!r} cannot be a label column")
        if self.datetime_format is not None and self.day_first is not None:
            raise ValueError(
                f"datetime_format {self.datetime_format!r} already fixes the day and month order; "
                f"remove day_first ({self.day_first})"
            )
        return self

    def is_nullable(self, column: str) -> bool:
        return self.columns[column].nullable or column in self.label_columns


class FeaturesSpec(_Strict):
    """The model's inputs: raw columns and the columns the project's steps derive from them."""

    # Columns the steps module's `build_features` adds to each row, with their types.
    derived: dict[str, ColumnType] = Field(default_factory=dict)
    columns: list[str] = Field(min_length=1)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _categoricals_are_features(self) -> FeaturesSpec:
        unknown = [c for c in self.categorical if c not in self.columns]
        if unknown:
            raise ValueError(f"categorical {unknown} must be listed in features.columns")
        return self


class TargetSpec(_Strict):
    column: str
    task: Task = "regression"
    # binary: the label that counts as positive (scores are its probability); default True for
    # boolean labels, else the last label in sorted order. Classes are the labels seen in training.
    positive_class: str | int | bool | None = None

    @model_validator(mode="after")
    def _class_keys_fit_task(self) -> TargetSpec:
        if self.task != "binary" and self.positive_class is not None:
            raise ValueError(f"positive_class applies to binary targets, found task {self.task!r}")
        return self


class EstimatorSpec(_Strict):
    class_name: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        if value not in ESTIMATORS and not value.startswith(STEPS_PREFIX):
            raise ValueError(
                f"expected one of {sorted(ESTIMATORS)} or 'steps:<callable in the project's steps "
                f"module>', found {value!r}"
            )
        return value

    @property
    def info(self) -> EstimatorInfo | None:
        return ESTIMATORS.get(self.class_name)


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("expected `min` or `max`, found neither")
        return self


class ValidationSpec(_Strict):
    run_mode: Literal["disabled", "dry_run", "enabled"] = "enabled"
    # Metric name -> bound; built-in metrics of the task or the steps module's own.
    criteria: dict[str, Threshold] = Field(default_factory=dict)
    # Never worse by default: the challenger may be at most this many percent worse than the
    # current champion on the primary metric, both scored on the same test split (0: no worse).
    # null turns the comparison off. A first model (no champion yet) meets only `criteria`.
    max_worse_than_champion_pct: float | None = Field(default=0.0, ge=0)
    # Optional, stricter: the challenger must beat the champion by at least this many percent.
    min_improvement_over_champion_pct: float | None = None


class ShadowSpec(_Strict):
    """Shadow scoring: a challenger scores every day beside the champion before it takes over."""

    # Score each scored day with the challenger too, into `challenger_predictions`.
    enabled: bool = True
    # After a promotion, keep scoring the previous champion in shadow for this many days, so a
    # rollback decision has live evidence (0: no shadow after promotion).
    days_after_promotion: int = Field(default=0, ge=0)
    # Promote a challenger that passed the gate only after this many shadow days with labels in
    # which it was no worse than the champion (null: the gate on the test split decides alone).
    promote_after_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _rules_need_shadow(self) -> ShadowSpec:
        if not self.enabled and (self.promote_after_days or self.days_after_promotion):
            raise ValueError(
                "promote_after_days and days_after_promotion need shadow scoring, found enabled: false"
            )
        return self


class AutomationSpec(_Strict):
    retraining_cron: str = "0 3 * * 1"
    scoring_cron: str = "30 0 * * *"
    rescore_partitions_on_new_champion: int = Field(default=7, ge=0)
    model_freshness_warn_hours: float = Field(default=168, gt=0)
    model_freshness_fail_hours: float = Field(default=192, gt=0)
    predictions_deadline_cron: str = "0 2 * * *"
    # Retrain once this many feature days newer than the last trained window have landed.
    retrain_after_new_partitions: int = Field(default=7, ge=1)

    @field_validator("retraining_cron", "scoring_cron", "predictions_deadline_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Imported here: the spec module loads before (and without) any Dagster definitions.
        from tabml_assets.dagster_compat import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"expected a cron string such as '30 0 * * *', found {value!r}")
        return value

    @model_validator(mode="after")
    def _warn_before_fail(self) -> AutomationSpec:
        if self.model_freshness_warn_hours >= self.model_freshness_fail_hours:
            raise ValueError(
                "model_freshness_warn_hours must be less than model_freshness_fail_hours, found "
                f"{self.model_freshness_warn_hours:g} >= {self.model_freshness_fail_hours:g}"
            )
        return self


class DataQualitySpec(_Strict):
    psi_warn_threshold: float = Field(default=0.2, gt=0)
    psi_bins: int = Field(default=10, ge=2, le=100)
    # Feature columns whose drift is measured against the champion's training window.
    drift_columns: list[str] = Field(default_factory=list)
    drift_reference_max_rows: int = Field(default=20_000, ge=100)
    max_quarantine_fraction: float = Field(default=0.5, ge=0, le=1)
    # Regression only: predictions outside this range WARN (null: no bound).
    plausible_prediction_min: float | None = None
    plausible_prediction_max: float | None = None


class RetrySpec(_Strict):
    max_retries: int = Field(default=3, ge=0, le=20)
    delay_seconds: float = Field(default=2.0, ge=0)


class PipelineSpec(_Strict):
    """One project's pipeline.yaml: its dataset, features, target, model and promotion gate."""

    name: str = Field(pattern=PROJECT_NAME_PATTERN)
    description: str = ""
    # The project's own code (a .py file or a package folder), relative to the project folder.
    steps: str | None = None
    dataset: DatasetSpec
    features: FeaturesSpec
    target: TargetSpec
    partitions: PartitionsSpec
    split: SplitSpec
    training_window_days: int = Field(ge=1, le=366)
    estimator: EstimatorSpec
    primary_metric: str | None = None
    validation: ValidationSpec = ValidationSpec()
    shadow: ShadowSpec = ShadowSpec()
    automation: AutomationSpec = AutomationSpec()
    data_quality: DataQualitySpec = DataQualitySpec()
    retries: RetrySpec = RetrySpec()

    @property
    def target_column(self) -> str:
        return self.target.column

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def feature_columns(self) -> list[str]:
        return self.features.columns

    @property
    def categorical_columns(self) -> list[str]:
        return self.features.categorical

    @property
    def event_time(self) -> str:
        return self.dataset.event_time

    @property
    def metric(self) -> str:
        """The primary metric: the spec's, or the task's default."""
        return self.primary_metric or DEFAULT_PRIMARY_METRIC[self.target.task]

    def feature_table_types(self) -> dict[str, str]:
        """Every column the features asset can hold (raw and derived), with its type."""
        types: dict[str, str] = {name: column.type for name, column in self.dataset.columns.items()}
        types.update(self.features.derived)
        return types

    @model_validator(mode="after")
    def _names_exist(self) -> PipelineSpec:
        types = self.feature_table_types()
        known = list(types)
        problems = []
        for key, names in (
            ("features.columns", self.features.columns),
            ("data_quality.drift_columns", self.data_quality.drift_columns),
        ):
            unknown = [c for c in names if c not in types]
            if unknown:
                problems.append(
                    f"{key}: {unknown} are neither dataset columns nor features.derived; "
                    f"the columns are {known}"
                )
        if self.target.column not in types:
            problems.append(
                f"target.column: {self.target.column!r} is neither a dataset column nor in "
                f"features.derived; the columns are {known}"
            )
        elif types[self.target.column] not in TARGET_TYPES[self.target.task]:
            problems.append(
                f"target.column: a {self.target.task} target must be of type "
                f"{' or '.join(TARGET_TYPES[self.target.task])}, found {self.target.column!r} "
                f"of type {types[self.target.column]!r}"
            )
        if self.target.column in self.features.columns:
            problems.append(f"features.columns: the target {self.target.column!r} cannot be a model input")
        unknown_drift = [c for c in self.data_quality.drift_columns if c not in self.features.columns]
        if unknown_drift and not problems:
            problems.append(f"data_quality.drift_columns: {unknown_drift} must be listed in features.columns")
        info = self.estimator.info
        wanted = "regressor" if self.target.task == "regression" else "classifier"
        if info is not None and info.kind != wanted:
            problems.append(
                f"estimator.class: a {self.target.task} target needs a {wanted}, found "
                f"{self.estimator.class_name!r} (a {info.kind})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DataSourceProfile(_Strict):
    # steps: the project's own `load_day` loader.
    kind: Literal["landing_folder", "demo", "databricks_table", "steps"]
    # One subfolder per project: <landing_folder>/<project>/.
    landing_folder: str = "landing"
    demo_rows_per_day: int = Field(default=2000, ge=1)
    # Overrides the dataset's `table` for this deployment.
    table: str | None = None


class StorageProfile(_Strict):
    root: str
    artifacts: str


class MlflowProfile(_Strict):
    tracking_uri: str
    registry_uri: str
    # `{project}` is replaced by each project's name.
    experiment_name: str = "tabml-{project}"
    model_name: str = "tabml_{project}"
    artifact_location: str | None = None


class AutoscaleProfile(_Strict):
    min_workers: int = Field(ge=0)
    max_workers: int = Field(ge=1)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscaleProfile:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers must not exceed max_workers, found {self.min_workers} > {self.max_workers}"
            )
        return self


# Cluster access modes Databricks accepts; reading Unity Catalog tables needs a UC mode
# (SINGLE_USER / USER_ISOLATION or their DATA_SECURITY_MODE_* names).
DataSecurityMode = Literal[
    "DATA_SECURITY_MODE_AUTO", "DATA_SECURITY_MODE_DEDICATED", "DATA_SECURITY_MODE_STANDARD",
    "SINGLE_USER", "USER_ISOLATION", "NONE",
]
PermissionAccessor = dict[Literal["group_name", "user_name", "service_principal_name"], str]


class ClusterProfile(_Strict):
    """A new job cluster per step (default), or an existing cluster by id."""

    existing_cluster_id: str | None = None
    spark_version: str = "15.4.x-scala2.12"
    # Worker machines: a node type, or an instance pool (faster starts).
    node_type_id: str | None = None
    driver_node_type_id: str | None = None
    instance_pool_id: str | None = None
    driver_instance_pool_id: str | None = None
    # Size: a fixed number of workers, or autoscale between two bounds.
    num_workers: int | None = Field(default=None, ge=0)
    autoscale: AutoscaleProfile | None = None
    data_security_mode: DataSecurityMode | None = "SINGLE_USER"
    single_user_name: str | None = None
    policy_id: str | None = None
    spark_conf: dict[str, str] = Field(default_factory=dict)
    custom_tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_choice_each(self) -> ClusterProfile:
        new_cluster_keys = [
            key for key in ("node_type_id", "driver_node_type_id", "instance_pool_id",
                            "driver_instance_pool_id", "num_workers", "autoscale", "policy_id")
            if getattr(self, key) is not None
        ]
        if self.existing_cluster_id is not None:
            if new_cluster_keys:
                raise ValueError(
                    "existing_cluster_id runs steps on that cluster, so new-cluster keys do not "
                    f"apply; remove {new_cluster_keys}"
                )
            return self
        if self.num_workers is not None and self.autoscale is not None:
            raise ValueError("expected num_workers or autoscale, found both")
        if self.node_type_id is not None and self.instance_pool_id is not None:
            raise ValueError("expected node_type_id or instance_pool_id, found both")
        if self.node_type_id is None and self.instance_pool_id is None:
            raise ValueError(
                "a new cluster needs node_type_id or instance_pool_id (or give existing_cluster_id), "
                "found neither"
            )
        if self.driver_instance_pool_id is not None and self.instance_pool_id is None:
            raise ValueError("driver_instance_pool_id needs instance_pool_id for the workers")
        return self


class PermissionsProfile(_Strict):
    """Who may see and manage the step runs (and their job clusters), by permission level."""

    job: dict[Literal["CAN_VIEW", "CAN_MANAGE_RUN", "IS_OWNER", "CAN_MANAGE"], list[PermissionAccessor]] = (
        Field(default_factory=dict)
    )
    cluster: dict[Literal["CAN_ATTACH_TO", "CAN_RESTART", "CAN_MANAGE"], list[PermissionAccessor]] = (
        Field(default_factory=dict)
    )


class DatabricksProfile(_Strict):
    """How staging and prod ship heavy steps to Databricks through the step launcher."""

    secret_scope: str
    cluster: ClusterProfile = ClusterProfile(node_type_id="i3.xlarge", num_workers=1)
    # `pat`: DATABRICKS_TOKEN; `oauth_m2m`: DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET
    # (a service principal). DATABRICKS_HOST is needed by both.
    auth: Literal["pat", "oauth_m2m"] = "pat"
    timeout_seconds: int = Field(default=3600, ge=60)
    # The tabml wheel the cluster installs (a UC volume, dbfs:/ or cloud URI); its runtime
    # dependencies are pinned to the versions installed where Dagster runs.
    wheel_path: str
    extra_pypi_packages: list[str] = Field(default_factory=list)
    poll_interval_sec: float = Field(default=10, gt=0)
    max_completion_wait_time_seconds: int = Field(default=24 * 3600, gt=0)
    # Where the launcher uploads each step's code and pickled context (DBFS, absolute).
    staging_prefix: str = "/dagster_staging"
    env_variables: dict[str, str] = Field(default_factory=dict)
    # Names of secrets in `secret_scope`, each exported to the remote step as the environment
    # variable of the same name upper-cased with dashes as underscores (databricks-token ->
    # DATABRICKS_TOKEN). The remote step needs the host and credentials for MLflow and for the
    # launcher resource it re-creates; [] exports nothing.
    secrets: list[str] = Field(default_factory=lambda: ["databricks-host", "databricks-token"])
    permissions: PermissionsProfile = PermissionsProfile()

    @field_validator("staging_prefix")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected an absolute DBFS path such as /dagster_staging, found {value!r}")
        return value

    @model_validator(mode="after")
    def _cluster_permissions_need_new_cluster(self) -> DatabricksProfile:
        if self.permissions.cluster and self.cluster.existing_cluster_id:
            raise ValueError(
                "permissions.cluster changes the permissions of the job cluster; it cannot be used "
                "with cluster.existing_cluster_id"
            )
        return self


class StatusProfile(_Strict):
    default_status: Literal["RUNNING", "STOPPED"] = "STOPPED"


class SensorsProfile(StatusProfile):
    # How often the daemon evaluates each tabml sensor; tests use a few seconds.
    minimum_interval_seconds: int = Field(default=30, ge=1)


class NotificationsProfile(_Strict):
    """Where run-failure alerts go: the log, or a Slack incoming webhook."""

    kind: Literal["log", "slack"] = "log"
    # Name of the environment variable holding the webhook URL (a secret: never in YAML).
    slack_webhook_env_var: str = "TABML_SLACK_WEBHOOK_URL"


class Profile(_Strict):
    """One deployment: which projects it runs, where their data, models and runs live, and where
    their steps execute. What a deployment does follows from these keys, never from its name."""

    # Project folders (each with a pipeline.yaml), relative to this conf folder or absolute.
    projects: list[str] = Field(min_length=1)
    # in_process: every step of a run in the run's own process, which saves 2-4 s per step on a
    # small machine; multiprocess: each step in a process of its own, so several steps that wait
    # on Databricks clusters run at once.
    executor: Literal["in_process", "multiprocess"] = "in_process"
    data_source: DataSourceProfile
    storage: StorageProfile
    mlflow: MlflowProfile
    # Present: the heavy steps run on Databricks job clusters through the step launcher, on the
    # cluster's Spark session. Absent: every step runs where Dagster runs, without Spark.
    databricks: DatabricksProfile | None = None
    schedules: StatusProfile = StatusProfile()
    sensors: SensorsProfile = SensorsProfile()
    notifications: NotificationsProfile = NotificationsProfile()


class ProjectProfile(_Strict):
    """A project's own profiles/<deployment>.yaml: what differs for it in that deployment."""

    data_source: dict[str, Any] = Field(default_factory=dict)
    mlflow: dict[str, Any] = Field(default_factory=dict)
    pipeline_overrides: dict[str, Any] = Field(default_factory=dict)


class LoadedSpec(BaseModel):
    """One project's pipeline spec with one deployment's profile applied: what builders take."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    deployment: str
    pipeline: PipelineSpec
    # The deployment's profile with the project's own overrides merged in ({project} filled).
    profile: Profile
    project_folder: Path
    pipeline_file: Path
    profile_file: Path
    tabml_home: Path
    steps: ProjectSteps

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def keys(self) -> PipelineKeys:
        return PipelineKeys(self.pipeline.name)

    def resolve_local(self, value: str) -> str:
        """Fill `{tabml_home}` and anchor relative paths in TABML_HOME (dev and test)."""
        value = value.replace("{tabml_home}", str(self.tabml_home))
        if "://" in value or value.startswith("/") or value == "databricks" or value == "databricks-uc":
            return value
        return str(self.tabml_home / value)

    def landing_folder(self) -> Path:
        return Path(self.resolve_local(self.profile.data_source.landing_folder)) / self.name

    def artifacts_folder(self) -> Path:
        return Path(self.resolve_local(self.profile.storage.artifacts)) / self.name

    def source_table(self) -> str:
        table = self.profile.data_source.table or self.pipeline.dataset.table
        if table is None:
            raise SpecError(
                f"{self.pipeline_file}: key `dataset.table`: the {self.deployment} deployment reads a "
                "Databricks table, but neither dataset.table nor the profile's data_source.table names one"
            )
        return table


@dataclass(frozen=True)
class Deployment:
    """Every project a deployment runs, each as its own LoadedSpec."""

    deployment: str
    profile_file: Path
    projects: list[LoadedSpec]

    def project(self, name: str) -> LoadedSpec:
        for spec in self.projects:
            if spec.name == name:
                return spec
        raise SpecError(
            f"{self.profile_file}: no project named {name!r}; the deployment runs "
            f"{[s.name for s in self.projects]}"
        )


def check_profile(profile: Profile, file: Path) -> None:
    """The rules between a profile's keys, which no single key's validation can see."""
    if profile.databricks is None and profile.data_source.kind == "databricks_table":
        raise SpecError(
            f"{file}: key `databricks`: data_source.kind 'databricks_table' is read with Spark "
            "on a Databricks cluster, so expected a `databricks` section (secret_scope, "
            "wheel_path, cluster), found none"
        )


def available_deployments(conf_dir: Path) -> list[str]:
    """The deployments a conf folder has a profile for."""
    return sorted(path.stem for path in (conf_dir / "profiles").glob("*.yaml"))


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid spec"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the spec; check its spelling)"
        elif item["type"] == "missing":
            message = "required key is missing"
        found = "" if item["type"] == "missing" else f"; found {_describe(item.get('input'))}"
        if item["type"].startswith(("float", "int", "bool", "string", "date", "literal", "list", "dict")):
            message = f"expected {message[0].lower()}{message[1:]}"
        if item["type"] == "value_error":
            # Our own validators already say what was found.
            found = ""
        lines.append(f"  key `{key}`: {message}{found if 'found' not in message else ''}")
    return "\n".join(lines)


def _read_yaml(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if not required:
            return {}
        raise SpecError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def _fill_project(value: Any, project: str) -> Any:
    if isinstance(value, str):
        return value.replace("{project}", project)
    if isinstance(value, dict):
        return {k: _fill_project(v, project) for k, v in value.items()}
    return value


def load_project(
    deployment: str,
    folder: Path,
    raw_profile: dict[str, Any],
    profile_file: Path,
    tabml_home: Path,
) -> LoadedSpec:
    """One project folder (pipeline.yaml, its steps, profiles/<deployment>.yaml), validated."""
    pipeline_file = folder / "pipeline.yaml"
    project_profile_file = folder / "profiles" / f"{deployment}.yaml"
    raw_pipeline = _read_yaml(pipeline_file)
    try:
        project_profile = ProjectProfile.model_validate(_read_yaml(project_profile_file, required=False))
    except ValidationError as exc:
        raise SpecError(_format_validation_error(project_profile_file, exc)) from None
    merged = _deep_merge(raw_pipeline, project_profile.pipeline_overrides)
    try:
        pipeline = PipelineSpec.model_validate(merged)
    except ValidationError as exc:
        # Blame the project's profile when its overrides introduced the bad key.
        blamed = pipeline_file
        for item in exc.errors():
            top = item["loc"][0] if item["loc"] else None
            if top in project_profile.pipeline_overrides:
                blamed = project_profile_file
        raise SpecError(_format_validation_error(blamed, exc)) from None
    profile_data = _deep_merge(
        raw_profile, {"data_source": project_profile.data_source, "mlflow": project_profile.mlflow}
    )
    try:
        profile = Profile.model_validate(_fill_project(profile_data, pipeline.name))
    except ValidationError as exc:
        raise SpecError(_format_validation_error(project_profile_file, exc)) from None
    check_profile(profile, project_profile_file if project_profile.data_source else profile_file)
    steps = load_steps(folder, pipeline, pipeline_file)
    check_steps_fit_spec(steps, pipeline, pipeline_file)
    return LoadedSpec(
        deployment=deployment,
        pipeline=pipeline,
        profile=profile,
        project_folder=folder,
        pipeline_file=pipeline_file,
        profile_file=profile_file,
        tabml_home=tabml_home,
        steps=steps,
    )


def load_deployment(
    deployment: str,
    conf_dir: Path | None = None,
    tabml_home: Path | None = None,
) -> Deployment:
    """Load profiles/<deployment>.yaml from `conf_dir` and every project it lists, validated."""
    conf_dir = Path(conf_dir or DEFAULT_CONF_DIR)
    known = available_deployments(conf_dir)
    if deployment not in known:
        raise SpecError(
            f"TABML_DEPLOYMENT: expected one of {known} (the profiles in {conf_dir / 'profiles'}), "
            f"found {deployment!r}"
        )
    profile_file = conf_dir / "profiles" / f"{deployment}.yaml"
    raw_profile = _read_yaml(profile_file)
    try:
        check_profile(Profile.model_validate(raw_profile), profile_file)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(profile_file, exc)) from None
    home = Path(tabml_home or default_tabml_home()).resolve()
    projects: list[LoadedSpec] = []
    for entry in raw_profile["projects"]:
        folder = (conf_dir / entry).resolve()
        if not (folder / "pipeline.yaml").is_file():
            raise SpecError(
                f"{profile_file}: key `projects`: expected a project folder with a pipeline.yaml, "
                f"found {entry!r} (resolves to {folder})"
            )
        projects.append(load_project(deployment, folder, raw_profile, profile_file, home))
    names = [p.name for p in projects]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SpecError(
            f"{profile_file}: key `projects`: each project needs its own name, found {duplicated} "
            "more than once; rename one in its pipeline.yaml (`name`)"
        )
    return Deployment(deployment=deployment, profile_file=profile_file, projects=projects)


def load_deployment_from_env() -> Deployment:
    """The deployment TABML_DEPLOYMENT names (default dev), from TABML_CONF_DIR when it is set:
    the one place the environment chooses what loads."""
    conf_dir = os.environ.get("TABML_CONF_DIR")
    return load_deployment(
        os.environ.get("TABML_DEPLOYMENT", "dev"), conf_dir=Path(conf_dir) if conf_dir else None
    )


def load_spec(
    deployment: str,
    conf_dir: Path | None = None,
    tabml_home: Path | None = None,
    project: str | None = None,
) -> LoadedSpec:
    """One project of a deployment (by name; the first listed when not given)."""
    loaded = load_deployment(deployment, conf_dir=conf_dir, tabml_home=tabml_home)
    return loaded.project(project) if project else loaded.projects[0]


def default_tabml_home() -> Path:
    """The one git-ignored folder for local state: TABML_HOME, else ./.tabml."""
    return Path(os.environ.get("TABML_HOME", Path.cwd() / ".tabml"))
