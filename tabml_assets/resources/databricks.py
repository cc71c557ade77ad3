"""The Databricks side of staging and prod: dagster-databricks' step launcher, configured from
the profile.

The heavy assets declare the `step_launcher` resource; in staging and prod it is this launcher,
which uploads the step's pickled context and tabml's code to DBFS, submits a one-time run
(`jobs/runs/submit`) whose `spark_python_task` re-creates the step on the cluster, polls it and
replays the step's events into the Dagster run. In dev and test the resource is None and steps
run in process, so asset code never branches on the deployment.

Host and credentials are never in config: the launcher reads them from the environment of the
process that launches the step (`{"env": ...}`, Dagster's run-config form of EnvVar), and the
remote step gets them from the profile's secret scope.

`TabmlStepLauncher` is dagster-databricks' launcher with two changes to how a remote step ends:
a remote step that cannot build its resources becomes one step failure naming the cause (the
stock launcher replays the remote RESOURCE_INIT_FAILURE, which the multiprocess executor takes
for its own worker's and retries while the first attempt still runs), and a failed Databricks
run names the task's error instead of "see run output". It lives in databricks_launcher.py and is
imported, with dagster-databricks and the Databricks SDK (about two seconds), when a step is
launched, not when the code location loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dagster import (
    DagsterInvalidConfigError,
    Failure,
    InitResourceContext,
    Permissive,
    ResourceDefinition,
    RetryPolicy,
    RetryRequested,
    resource,
)

import tabml_assets
from tabml_assets.dagster_compat import SerializableErrorInfo, process_config
from tabml_assets.resources.retries import is_transient_error_info
from tabml_assets.spec import ClusterProfile, DatabricksProfile, LoadedSpec

HOST_ENV = "DATABRICKS_HOST"
TOKEN_ENV = "DATABRICKS_TOKEN"
CLIENT_ID_ENV = "DATABRICKS_CLIENT_ID"
CLIENT_SECRET_ENV = "DATABRICKS_CLIENT_SECRET"
# The local environment variables each auth mode needs where Dagster launches steps.
AUTH_ENV_VARS: dict[str, tuple[str, ...]] = {
    "pat": (HOST_ENV, TOKEN_ENV),
    "oauth_m2m": (HOST_ENV, CLIENT_ID_ENV, CLIENT_SECRET_ENV),
}
# Packages a cluster does not need: the UI stack, and pyspark, which the runtime provides.
NOT_FOR_CLUSTERS = {"dagster-webserver", "dagster-graphql", "pyspark"}
# The launcher zips this folder and unpacks it on the cluster's Python path for every step;
# the wheel in `libraries` is what the cluster imports first.
PACKAGE_DIR = Path(tabml_assets.__file__).parent
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


class DatabricksConfigError(ValueError):
    """A staging/prod profile that cannot configure the step launcher."""


def secret_env_name(secret_key: str) -> str:
    """`databricks-token` -> `DATABRICKS_TOKEN`: the variable a secret is exported as."""
    return secret_key.upper().replace("-", "_").replace(".", "_")


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pinned_runtime_requirements(distribution: str = "tabml") -> list[str]:
    """tabml's runtime dependencies pinned to the versions installed here.

    Steps are pickled here and unpickled on the cluster, and models trained there are loaded
    here, so the cluster must run the same dagster, pandas, scikit-learn and mlflow.
    """
    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        raise DatabricksConfigError(
            f"package {distribution!r} is not installed, so its dependency pins for the cluster "
            "cannot be read; install it with `pip install -e .`"
        ) from None
    pins: list[str] = []
    for text in requirements:
        name, _, marker = text.partition(";")
        if "extra" in marker:
            continue
        project = _PROJECT_NAME.match(name.strip())
        if project is None or _normalized(project.group(0)) in NOT_FOR_CLUSTERS:
            continue
        try:
            installed = metadata.version(project.group(0))
        except metadata.PackageNotFoundError:
            raise DatabricksConfigError(
                f"{distribution} requires {project.group(0)!r}, which is not installed here; "
                "reinstall with `pip install -e .`"
            ) from None
        pins.append(f"{project.group(0)}=={installed}")
    return sorted(pins, key=str.lower)


def cluster_config(cluster: ClusterProfile) -> dict[str, Any]:
    """The launcher's `run_config.cluster`: an existing cluster id, or a new job cluster."""
    if cluster.existing_cluster_id:
        return {"existing": cluster.existing_cluster_id}
    if cluster.instance_pool_id:
        nodes: dict[str, Any] = {"instance_pool_id": cluster.instance_pool_id}
        if cluster.driver_instance_pool_id:
            nodes["driver_instance_pool_id"] = cluster.driver_instance_pool_id
    else:
        node_types = {"node_type_id": cluster.node_type_id}
        if cluster.driver_node_type_id:
            node_types["driver_node_type_id"] = cluster.driver_node_type_id
        nodes = {"node_types": node_types}
    if cluster.autoscale is not None:
        size: dict[str, Any] = {"autoscale": cluster.autoscale.model_dump()}
    else:
        size = {"num_workers": cluster.num_workers if cluster.num_workers is not None else 1}
    new: dict[str, Any] = {"spark_version": cluster.spark_version, "nodes": nodes, "size": size}
    if cluster.data_security_mode:
        new["data_security_mode"] = cluster.data_security_mode
    if cluster.single_user_name:
        new["single_user_name"] = cluster.single_user_name
    if cluster.policy_id:
        new["policy_id"] = cluster.policy_id
    if cluster.spark_conf:
        new["spark_conf"] = dict(cluster.spark_conf)
    if cluster.custom_tags:
        new["custom_tags"] = [{"key": k, "value": v} for k, v in cluster.custom_tags.items()]
    return {"new": new}


def libraries_config(databricks: DatabricksProfile) -> list[dict[str, Any]]:
    """The tabml wheel, then its pinned dependencies and any extra PyPI packages."""
    packages = [*pinned_runtime_requirements(), *databricks.extra_pypi_packages]
    return [{"whl": databricks.wheel_path}, *({"pypi": {"package": p}} for p in packages)]


def credentials_config(databricks: DatabricksProfile) -> dict[str, Any]:
    """Host and credentials as environment-variable references, resolved when a step launches."""
    config: dict[str, Any] = {"databricks_host": {"env": HOST_ENV}}
    if databricks.auth == "pat":
        config["databricks_token"] = {"env": TOKEN_ENV}
    # oauth_m2m: the launcher's oauth_credentials field takes literal strings only, which would
    # put the client secret into config. Without a token, databricks-sdk's default auth reads
    # DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET from the environment instead.
    return config


def permissions_config(databricks: DatabricksProfile) -> dict[str, Any]:
    permissions: dict[str, Any] = {}
    if databricks.permissions.job:
        permissions["job_permissions"] = {k: list(v) for k, v in databricks.permissions.job.items()}
    if databricks.permissions.cluster:
        permissions["cluster_permissions"] = {
            k: list(v) for k, v in databricks.permissions.cluster.items()
        }
    return permissions


def step_launcher_config(spec: LoadedSpec) -> dict[str, Any]:
    """The full config of `databricks_pyspark_step_launcher` for a staging/prod spec."""
    databricks = spec.profile.databricks
    if databricks is None:
        raise DatabricksConfigError(
            f"{spec.profile_file}: key `databricks`: required for the {spec.deployment} "
            "deployment (its heavy assets run on Databricks), found nothing"
        )
    config: dict[str, Any] = {
        "run_config": {
            "run_name": f"tabml-{spec.deployment}",
            "cluster": cluster_config(databricks.cluster),
            "libraries": libraries_config(databricks),
            # Adds dagster, dagster-databricks, dagster-pyspark and databricks-sdk pins that
            # the libraries above do not already name.
            "install_default_libraries": True,
            "timeout_seconds": databricks.timeout_seconds,
        },
        **credentials_config(databricks),
        # The remote step re-imports tabml's definitions: it must pick the same deployment.
        "env_variables": {"TABML_DEPLOYMENT": spec.deployment, **databricks.env_variables},
        # Always given, even empty: the launcher has no default for this key.
        "secrets_to_env_variables": [
            {"name": secret_env_name(key), "key": key, "scope": databricks.secret_scope}
            for key in databricks.secrets
        ],
        "permissions": permissions_config(databricks),
        "local_dagster_job_package_path": str(PACKAGE_DIR),
        "staging_prefix": databricks.staging_prefix,
        "poll_interval_sec": databricks.poll_interval_sec,
        "max_completion_wait_time_seconds": databricks.max_completion_wait_time_seconds,
        # Poll-by-poll debug lines would flood the run's event log on long steps.
        "verbose_logs": False,
    }
    return config


def secret_sources(secrets_to_env_variables: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Environment variable -> where the cluster gets it (`secret databricks-token of scope x`)."""
    return {
        entry["name"]: f"secret `{entry['key']}` of scope `{entry['scope']}`"
        for entry in secrets_to_env_variables
    }


def _where_set(name: str, sources: Mapping[str, str]) -> str:
    remote = f"on the cluster it is exported from {sources[name]}" if name in sources else (
        "on the cluster it must come from `databricks.secrets` in the profile"
    )
    return f"where Dagster runs, set {name} in the environment; {remote}"


def credential_problems(config: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """What is missing or malformed in the launcher's resolved host and credentials.

    Names only, never values: a misplaced token must not end up in an event log.
    """
    sources = secret_sources(config.get("secrets_to_env_variables") or [])
    problems: list[str] = []
    host = (config.get("databricks_host") or "").strip()
    parts = urlsplit(host)
    if not host:
        problems.append(f"{HOST_ENV} is empty ({_where_set(HOST_ENV, sources)})")
    elif parts.scheme not in ("http", "https") or not parts.hostname or " " in host:
        problems.append(
            f"{HOST_ENV}: expected a workspace URL such as https://dbc-1234.cloud.databricks.com, "
            f"found a value of {len(host)} characters that is not an http(s) URL "
            f"({_where_set(HOST_ENV, sources)})"
        )
    token = config.get("databricks_token")
    if token is not None:
        needed = [] if token.strip() else [TOKEN_ENV]
    else:
        # oauth_m2m: databricks-sdk reads the service principal from the environment itself.
        needed = [name for name in (CLIENT_ID_ENV, CLIENT_SECRET_ENV) if not environ.get(name, "").strip()]
    problems.extend(f"{name} is empty or unset ({_where_set(name, sources)})" for name in needed)
    return problems


def remote_start_failure(
    step_key: str,
    databricks_run_id: int,
    error: SerializableErrorInfo,
    secrets: Sequence[Mapping[str, str]],
    retry_policy: RetryPolicy | None,
    previous_attempts: int,
) -> Failure | RetryRequested:
    """What a step whose remote process could not build its resources raises, once its run ended.

    Permanent causes (an empty secret, a host that is not a URL, a bad profile) fail the step
    at once; transient ones (the network) retry under the step's own RetryPolicy, one attempt
    after the other, since this one has ended.
    """
    chain = _error_chain(error)
    cause = "; caused by ".join(_first_line(link.message) for link in chain)
    exported = ", ".join(f"{name} from {where}" for name, where in secret_sources(secrets).items())
    description = (
        f"{step_key}: the remote step (Databricks run {databricks_run_id}) could not build its "
        f"resources on the cluster, so the step never ran: {cause}. The cluster builds them from "
        f"the launcher's env_variables and the secrets it exports ({exported or 'none'}): a "
        "missing or empty secret, or a wrong host, fails here."
    )
    if is_transient_error_info(error) and retry_policy is not None and retry_policy.max_retries > 0:
        retry = RetryRequested(
            max_retries=retry_policy.max_retries,
            seconds_to_wait=retry_policy.calculate_delay(previous_attempts + 1),
        )
        retry.__cause__ = RemoteStepStartError(description)
        return retry
    return Failure(
        description=f"{description} Not retried: fix the secret scope or the profile, then run again.",
        metadata={"databricks_run_id": databricks_run_id},
        allow_retries=False,
    )


class RemoteStepStartError(Exception):
    """A remote step that could not build its resources (the cause of a retry)."""


def _error_chain(error: SerializableErrorInfo) -> list[SerializableErrorInfo]:
    chain: list[SerializableErrorInfo] = []
    current: SerializableErrorInfo | None = error
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.cause or current.context
    return chain


def _first_line(message: str) -> str:
    """`dagster._core.errors.X: text` -> `X: text`, first line only."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    name, sep, rest = line.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}{sep}{rest}" if sep and " " not in name else line


def launcher_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` checked against dagster-databricks' launcher schema, defaults filled in and
    `{"env": ...}` values read from the environment, as Dagster does for a resource's config."""
    from dagster_databricks import databricks_pyspark_step_launcher

    processed = process_config(databricks_pyspark_step_launcher.config_schema.config_type, config)
    if not processed.success:
        raise DagsterInvalidConfigError(
            "step_launcher: the Databricks launcher config built from the profile's `databricks` section is invalid",
            processed.errors or [],
            config,
        )
    return dict(processed.value or {})


# The schema is dagster-databricks' own, applied when the resource starts (launcher_config):
# declaring it here would import dagster-databricks with the code location.
@resource(config_schema=Permissive())
def tabml_step_launcher(context: InitResourceContext) -> Any:
    """Runs heavy steps as Databricks one-time runs; refuses empty or malformed credentials first.

    The cluster re-creates this resource for each remote step, so an empty secret there fails
    with the name of the secret, not databricks-sdk's "cannot configure default credentials".
    """
    from tabml_assets.resources.databricks_launcher import TabmlStepLauncher

    config = launcher_config(context.resource_config)
    problems = credential_problems(config, os.environ)
    if problems:
        raise DatabricksConfigError("step_launcher: " + "; ".join(problems))
    return TabmlStepLauncher(**config)


def build_step_launcher(spec: LoadedSpec) -> ResourceDefinition:
    """The staging/prod `step_launcher` resource: heavy steps run as Databricks one-time runs."""
    return tabml_step_launcher.configured(step_launcher_config(spec))
