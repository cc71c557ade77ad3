"""The pipeline spec: pipeline.yaml plus one profile per deployment, validated when definitions load.

Every validation error names the file, the key, what was expected and what was found, so
`dagster definitions validate` tells a user exactly which line of which YAML to fix.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEPLOYMENTS = ("dev", "test", "staging", "prod")
DEFAULT_CONF_DIR = Path(__file__).parent / "conf"

# Estimators that pipeline.yaml may name. Config never imports arbitrary classes: a spec can
# only pick from this table.
ESTIMATOR_ALLOW_LIST: dict[str, str] = {
    "HistGradientBoostingRegressor": "sklearn.ensemble",
    "GradientBoostingRegressor": "sklearn.ensemble",
    "RandomForestRegressor": "sklearn.ensemble",
    "ExtraTreesRegressor": "sklearn.ensemble",
    "Ridge": "sklearn.linear_model",
    "LinearRegression": "sklearn.linear_model",
    "ElasticNet": "sklearn.linear_model",
}
METRICS = ("rmse", "mae", "r2", "mape")
HIGHER_IS_BETTER = {"rmse": False, "mae": False, "r2": True, "mape": False}


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

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must sum to 1, found {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self


class EstimatorSpec(_Strict):
    class_name: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        if value not in ESTIMATOR_ALLOW_LIST:
            raise ValueError(
                f"expected one of {sorted(ESTIMATOR_ALLOW_LIST)}, found {value!r}"
            )
        return value


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
    criteria: dict[Literal["rmse", "mae", "r2", "mape"], Threshold] = Field(default_factory=dict)
    min_improvement_over_champion_pct: float | None = None


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
        from dagster._utils.schedules import is_valid_cron_string

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
    drift_columns: list[str] = Field(
        default_factory=lambda: ["trip_distance", "trip_duration_minutes", "pickup_hour"]
    )
    drift_reference_max_rows: int = Field(default=20_000, ge=100)
    max_quarantine_fraction: float = Field(default=0.5, ge=0, le=1)
    plausible_prediction_min: float = 0.0
    plausible_prediction_max: float = 1000.0


class RetrySpec(_Strict):
    max_retries: int = Field(default=3, ge=0, le=20)
    delay_seconds: float = Field(default=2.0, ge=0)


class PipelineSpec(_Strict):
    target_column: str
    feature_columns: list[str] = Field(min_length=1)
    categorical_columns: list[str] = Field(default_factory=list)
    partitions: PartitionsSpec
    split: SplitSpec
    training_window_days: int = Field(ge=1, le=366)
    estimator: EstimatorSpec
    primary_metric: Literal["rmse", "mae", "r2", "mape"] = "rmse"
    validation: ValidationSpec = ValidationSpec()
    automation: AutomationSpec = AutomationSpec()
    data_quality: DataQualitySpec = DataQualitySpec()
    retries: RetrySpec = RetrySpec()

    @model_validator(mode="after")
    def _categoricals_are_features(self) -> PipelineSpec:
        unknown = [c for c in self.categorical_columns if c not in self.feature_columns]
        if unknown:
            raise ValueError(
                f"categorical_columns must be listed in feature_columns, found {unknown}"
            )
        return self

    @model_validator(mode="after")
    def _drift_columns_are_features(self) -> PipelineSpec:
        unknown = [c for c in self.data_quality.drift_columns if c not in self.feature_columns]
        if unknown:
            raise ValueError(
                f"data_quality.drift_columns must be listed in feature_columns, found {unknown}"
            )
        return self


class DataSourceProfile(_Strict):
    kind: Literal["landing_folder", "demo", "databricks_table"]
    landing_folder: str = "landing"
    demo_rows_per_day: int = Field(default=2000, ge=1)
    table: str = "samples.nyctaxi.trips"


class StorageProfile(_Strict):
    root: str
    artifacts: str


class MlflowProfile(_Strict):
    tracking_uri: str
    registry_uri: str
    experiment_name: str
    model_name: str
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
    data_source: DataSourceProfile
    storage: StorageProfile
    mlflow: MlflowProfile
    databricks: DatabricksProfile | None = None
    schedules: StatusProfile = StatusProfile()
    sensors: SensorsProfile = SensorsProfile()
    notifications: NotificationsProfile = NotificationsProfile()
    pipeline_overrides: dict[str, Any] = Field(default_factory=dict)


class LoadedSpec(BaseModel):
    """The pipeline spec with one deployment's profile applied."""

    model_config = ConfigDict(frozen=True)

    deployment: str
    pipeline: PipelineSpec
    profile: Profile
    pipeline_file: Path
    profile_file: Path
    tabml_home: Path

    def resolve_local(self, value: str) -> str:
        """Fill `{tabml_home}` and anchor relative paths in TABML_HOME (dev and test)."""
        value = value.replace("{tabml_home}", str(self.tabml_home))
        if "://" in value or value.startswith("/") or value == "databricks" or value == "databricks-uc":
            return value
        return str(self.tabml_home / value)


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
        lines.append(f"  key `{key}`: {message}{found if 'found' not in message else ''}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
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


def load_spec(
    deployment: str,
    conf_dir: Path | None = None,
    tabml_home: Path | None = None,
) -> LoadedSpec:
    """Load pipeline.yaml and profiles/<deployment>.yaml from `conf_dir`, validated."""
    if deployment not in DEPLOYMENTS:
        raise SpecError(
            f"TABML_DEPLOYMENT: expected one of {list(DEPLOYMENTS)}, found {deployment!r}"
        )
    conf_dir = Path(conf_dir or DEFAULT_CONF_DIR)
    pipeline_file = conf_dir / "pipeline.yaml"
    profile_file = conf_dir / "profiles" / f"{deployment}.yaml"
    raw_pipeline = _read_yaml(pipeline_file)
    raw_profile = _read_yaml(profile_file)
    try:
        profile = Profile.model_validate(raw_profile)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(profile_file, exc)) from None
    merged = _deep_merge(raw_pipeline, profile.pipeline_overrides)
    try:
        pipeline = PipelineSpec.model_validate(merged)
    except ValidationError as exc:
        # Blame the profile when its overrides introduced the bad key.
        blamed = pipeline_file
        for item in exc.errors():
            top = item["loc"][0] if item["loc"] else None
            if top in profile.pipeline_overrides:
                blamed = profile_file
        raise SpecError(_format_validation_error(blamed, exc)) from None
    return LoadedSpec(
        deployment=deployment,
        pipeline=pipeline,
        profile=profile,
        pipeline_file=pipeline_file,
        profile_file=profile_file,
        tabml_home=Path(tabml_home or default_tabml_home()).resolve(),
    )


def default_tabml_home() -> Path:
    """The one git-ignored folder for local state: TABML_HOME, else ./.tabml."""
    return Path(os.environ.get("TABML_HOME", Path.cwd() / ".tabml"))
