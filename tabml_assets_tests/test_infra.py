"""infra/ and .github/ agree with the code and the profiles: Terraform names, the Helm values, the
production instance, the Dockerfile, the workflows and the release script."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import hcl2
import pytest
import yaml

from tabml_assets.spec import LoadedSpec, load_deployment, load_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
INFRA = REPO_ROOT / "infra"
TERRAFORM = INFRA / "terraform"
MODULE = TERRAFORM / "modules" / "tabml"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
DEPLOYMENTS = ("staging", "prod")
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

sys.path.insert(0, str(INFRA / "deploy"))
import databricks_release  # noqa: E402  (a script, not a package)

# --- Terraform -----------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"ml"'); expressions stay as `${...}`."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


def _load_hcl(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(handle)


def _tf_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tf"))


def _blocks(folder: Path, kind: str) -> dict[str, Any]:
    """Every `kind` block (module, variable, output) of a folder, by name."""
    found: dict[str, Any] = {}
    for path in _tf_files(folder):
        for block in _load_hcl(path).get(kind, []):
            for name, body in block.items():
                found[_unquote(name)] = _unquote(body)
    return found


def _resource_types(folder: Path) -> set[str]:
    types: set[str] = set()
    for path in _tf_files(folder):
        for block in _load_hcl(path).get("resource", []):
            types.update(_unquote(name) for name in block)
    return types


def _root_module(deployment: str) -> dict[str, Any]:
    modules = _blocks(TERRAFORM / deployment, "module")
    assert list(modules) == ["tabml"], f"infra/terraform/{deployment}: expected one module `tabml`, found {list(modules)}"
    return modules["tabml"]


def _volume_parts(path: str, key: str, profile_file: Path) -> tuple[str, str, str]:
    match = re.fullmatch(r"/Volumes/([^/]+)/([^/]+)/([^/]+)(/.*)?", path)
    assert match, f"{profile_file}: key `{key}`: expected /Volumes/<catalog>/<schema>/<volume>/..., found {path!r}"
    return match.group(1), match.group(2), match.group(3)


@pytest.fixture(params=DEPLOYMENTS)
def deployment_spec(request: pytest.FixtureRequest, tmp_path: Path) -> LoadedSpec:
    return load_spec(request.param, tabml_home=tmp_path)


def test_every_terraform_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 10, f"expected the module and two roots under {TERRAFORM}, found {files}"
    for path in files:
        assert isinstance(_load_hcl(path), dict), path


def test_module_declares_every_databricks_resource_the_deployment_needs() -> None:
    types = _resource_types(MODULE)
    expected = {
        "databricks_mlflow_experiment", "databricks_registered_model", "databricks_schema",
        "databricks_volume", "databricks_secret_scope", "databricks_cluster_policy",
        "databricks_service_principal", "databricks_permissions", "databricks_grants",
        "databricks_secret_acl",
    }
    assert expected <= types, f"{MODULE}: missing resources {sorted(expected - types)}"
    # Secret values would land in Terraform state: the deploy workflow writes them instead.
    assert "databricks_secret" not in types


def test_roots_pass_exactly_the_module_variables() -> None:
    variables = _blocks(MODULE, "variable")
    required = {name for name, body in variables.items() if "default" not in body}
    for deployment in DEPLOYMENTS:
        module = _root_module(deployment)
        assert (TERRAFORM / deployment / module["source"]).resolve() == MODULE.resolve()
        passed = set(module) - {"source"}
        assert passed <= set(variables), f"infra/terraform/{deployment}: unknown module arguments {sorted(passed - set(variables))}"
        assert required <= passed, f"infra/terraform/{deployment}: required module variables not passed {sorted(required - passed)}"
        for name, body in _blocks(TERRAFORM / deployment, "variable").items():
            assert "description" in body, f"infra/terraform/{deployment}: variable {name} has no description"


def test_terraform_names_agree_with_the_profile(deployment_spec: LoadedSpec) -> None:
    spec = deployment_spec
    module = _root_module(spec.deployment)
    profile, where = spec.profile, spec.profile_file
    databricks = profile.databricks
    assert databricks is not None, f"{where}: key `databricks`: required for {spec.deployment}"
    assert module["deployment"] == spec.deployment

    volumes = {
        "storage.root": profile.storage.root,
        "storage.artifacts": profile.storage.artifacts,
        "databricks.wheel_path": databricks.wheel_path,
    }
    for key, path in volumes.items():
        catalog, schema, volume = _volume_parts(path, key, where)
        assert (catalog, schema) == (module["catalog_name"], module["schema_name"]), (
            f"{where}: key `{key}` is in {catalog}.{schema}; infra/terraform/{spec.deployment} "
            f"creates {module['catalog_name']}.{module['schema_name']}"
        )
        assert volume in module["volume_names"], (
            f"{where}: key `{key}` needs volume {volume!r}; infra/terraform/{spec.deployment} creates {module['volume_names']}"
        )
    assert module["asset_volume_name"] == _volume_parts(profile.storage.root, "storage.root", where)[2]

    assert module["secret_scope"] == databricks.secret_scope, f"{where}: key `databricks.secret_scope`"

    # One experiment and one registered model per project the profile runs.
    projects = load_deployment(spec.deployment, tabml_home=spec.tabml_home).projects
    assert module["projects"] == [p.name for p in projects], (
        f"{where}: key `projects` runs {[p.name for p in projects]}; infra/terraform/{spec.deployment} "
        f"creates MLflow objects for {module['projects']}"
    )
    for project in projects:
        mlflow = project.profile.mlflow
        full_model_name = f"{module['catalog_name']}.{module['schema_name']}.{project.name}"
        assert full_model_name == mlflow.model_name, (
            f"{where}: key `mlflow.model_name` is {mlflow.model_name!r} for {project.name}; Terraform registers {full_model_name}"
        )
        experiment = f"{module['experiment_folder']}/{project.name}"
        assert experiment == mlflow.experiment_name, (
            f"{where}: key `mlflow.experiment_name` is {mlflow.experiment_name!r} for {project.name}; Terraform creates {experiment}"
        )
    assert f"tabml_{spec.deployment}.ml.nyc_taxi" in [p.profile.mlflow.model_name for p in projects]


def test_job_cluster_policy_admits_the_profiles_cluster(deployment_spec: LoadedSpec) -> None:
    spec = deployment_spec
    module = _root_module(spec.deployment)
    assert spec.profile.databricks is not None
    cluster, where = spec.profile.databricks.cluster, spec.profile_file
    assert module["spark_version"] == cluster.spark_version, f"{where}: key `databricks.cluster.spark_version`"
    if cluster.instance_pool_id is not None:
        pool = module.get("instance_pool")
        assert isinstance(pool, dict), (
            f"{where}: key `databricks.cluster.instance_pool_id` names a pool; infra/terraform/{spec.deployment} creates none"
        )
        assert pool["node_type_id"] in module["node_type_ids"]
    else:
        assert module.get("instance_pool") in (None, "${null}")
        assert cluster.node_type_id in module["node_type_ids"], (
            f"{where}: key `databricks.cluster.node_type_id`: the policy allows {module['node_type_ids']}, found {cluster.node_type_id!r}"
        )
    workers = cluster.autoscale.max_workers if cluster.autoscale else (cluster.num_workers or 0)
    assert workers <= module["max_workers"], f"{where}: key `databricks.cluster`: {workers} workers, the policy caps at {module['max_workers']}"
    # The policy fixes these; a different value in the profile would be rejected by Databricks.
    assert cluster.data_security_mode in (None, "SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")
    fixed_tags = {"project": "tabml", "deployment": spec.deployment, **(module.get("tags") or {})}
    for tag, value in cluster.custom_tags.items():
        if tag in fixed_tags:
            assert value == fixed_tags[tag], f"{where}: key `databricks.cluster.custom_tags.{tag}`: the policy fixes {fixed_tags[tag]!r}, found {value!r}"
    policy = (MODULE / "compute.tf").read_text()
    assert '"custom_tags.project"    = { type = "fixed", value = "tabml" }' in policy
    assert '"custom_tags.deployment" = { type = "fixed", value = var.deployment }' in policy


def test_terraform_fmt_check_passes() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH; .github/workflows/terraform.yml runs `terraform fmt -check`")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"terraform fmt -check -recursive infra/ found unformatted files:\n{result.stdout}"


# --- The production Dagster instance, Helm values and Dockerfile ---------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_prod_instance_takes_every_connection_detail_from_the_environment() -> None:
    instance = _yaml(INFRA / "dagster" / "dagster.prod.yaml")
    for storage, module in [
        ("run_storage", "dagster_postgres.run_storage"),
        ("event_log_storage", "dagster_postgres.event_log"),
        ("schedule_storage", "dagster_postgres.schedule_storage"),
    ]:
        assert instance[storage]["module"] == module
        db = instance[storage]["config"]["postgres_db"]
        for field in ("hostname", "port", "db_name", "username", "password"):
            assert set(db[field]) == {"env"}, f"infra/dagster/dagster.prod.yaml: {storage}.postgres_db.{field} must come from an env var"
        assert db["scheme"] == "postgresql+psycopg2"


def test_prod_and_helm_queue_runs_like_dev() -> None:
    dev_limits = _yaml(INFRA / "dagster" / "dagster.dev.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    prod_limits = _yaml(INFRA / "dagster" / "dagster.prod.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert prod_limits == dev_limits, "infra/dagster/dagster.prod.yaml: tag_concurrency_limits differ from dagster.dev.yaml"
    for deployment in DEPLOYMENTS:
        coordinator = _yaml(INFRA / "helm" / f"values-{deployment}.yaml")["dagsterDaemon"]["runCoordinator"]
        assert coordinator["type"] == "QueuedRunCoordinator"
        assert coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] == dev_limits, (
            f"infra/helm/values-{deployment}.yaml: tagConcurrencyLimits differ from dagster.dev.yaml"
        )


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_helm_values_run_the_code_location_for_their_deployment(deployment: str) -> None:
    path = INFRA / "helm" / f"values-{deployment}.yaml"
    values = _yaml(path)
    [code_location] = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in code_location["env"]}
    assert env["TABML_DEPLOYMENT"] == deployment, f"{path}: TABML_DEPLOYMENT"
    assert code_location["codeServerArgs"] == ["--module-name", PYPROJECT["tool"]["dagster"]["module_name"]]
    secrets = {item["name"] for item in code_location["envSecrets"]}
    secrets |= {item["name"] for item in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    secrets.add(values["global"]["postgresqlSecretName"])
    deploy_workflow = (WORKFLOWS / "deploy.yml").read_text()
    for secret in secrets:
        assert f"create secret generic {secret}" in deploy_workflow, f"{path}: secret {secret} is never created by deploy.yml"
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in postgresql, f"{path}: the password belongs in the tabml-postgresql secret"
    assert postgresql["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (INFRA / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_copies_existing_paths_and_pins_the_dagster_release_set() -> None:
    instructions = _dockerfile_instructions()
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, args in instructions:
        if op == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"infra/docker/Dockerfile: COPY {source}: not in the repository"
                assert source.rstrip("/") in allowed, f"infra/docker/Dockerfile.dockerignore: {source} is not let into the build context"
    pins = dict(re.findall(r"(dagster[\w-]*)==([\d.]+)", " ".join(a for op, a in instructions if op == "RUN")))
    integration_pin = next(d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if d.startswith("dagster-databricks=="))
    assert pins == {"dagster-postgres": integration_pin, "dagster-k8s": integration_pin}
    assert f"dagster-postgres=={integration_pin}" in PYPROJECT["project"]["optional-dependencies"]["dev"]
    [cmd] = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert cmd[cmd.index("-m") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    assert cmd[cmd.index("--location-name") + 1] == PYPROJECT["tool"]["dagster"]["code_location_name"]
    assert ("USER", "dagster") in instructions, "the code location must not run as root"


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel as the Dockerfile builds it: from a copy of exactly the files it copies, so no
    build/ or egg-info left in the checkout leaks in (offline: the venv's setuptools)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "tabml_assets", source / "tabml_assets", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = out.glob("tabml-*.whl")
    return wheel


def test_the_wheel_is_the_file_each_profile_installs_and_carries_the_spec(built_wheel: Path, tmp_path: Path) -> None:
    for deployment in DEPLOYMENTS:
        spec = load_spec(deployment, tabml_home=tmp_path)
        assert spec.profile.databricks is not None
        expected = spec.profile.databricks.wheel_path.rsplit("/", 1)[-1]
        assert built_wheel.name == expected, f"{spec.profile_file}: key `databricks.wheel_path` ends with {expected}, the build makes {built_wheel.name}"
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for deployment in ("dev", "test", *DEPLOYMENTS):
        assert f"tabml_assets/conf/profiles/{deployment}.yaml" in names
    # Every project a profile lists travels in the wheel: its spec, steps and own profiles.
    for spec in load_deployment("staging", tabml_home=tmp_path).projects:
        project = spec.project_folder.relative_to(REPO_ROOT).as_posix()
        assert f"{project}/pipeline.yaml" in names
        for path in spec.project_folder.rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                assert path.relative_to(REPO_ROOT).as_posix() in names, f"{path}: not in {built_wheel.name}"
    assert "tabml_assets/examples/nyc_taxi/steps.py" in names
    assert "tabml_assets/examples/nyc_taxi/profiles/test.yaml" in names
    assert not any(name.startswith("tabml_assets_tests/") for name in names)


# --- GitHub workflows ----------------------------------------------------------------------


def _workflow(name: str) -> dict[str, Any]:
    data = _yaml(WORKFLOWS / name)
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _steps(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def _makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


WORKFLOW_FILES = ("ci.yml", "terraform.yml", "deploy-staging.yml", "deploy-prod.yml", "deploy.yml")


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_is_well_formed(name: str) -> None:
    workflow = _workflow(name)
    assert workflow["name"] and workflow["on"] and workflow["jobs"], f".github/workflows/{name}: needs name, on and jobs"
    for job_id, job in workflow["jobs"].items():
        where = f".github/workflows/{name}: job {job_id}"
        if "uses" in job:
            target = job["uses"]
            assert target.startswith("./.github/workflows/"), where
            called = _workflow(Path(target).name)
            declared = set((called["on"]["workflow_call"] or {}).get("inputs", {}))
            assert set(job.get("with", {})) <= declared, f"{where}: inputs {set(job.get('with', {}))} not declared by {target}"
            required = {k for k, v in ((called["on"]["workflow_call"] or {}).get("inputs") or {}).items() if v.get("required")}
            assert required <= set(job.get("with", {})), f"{where}: missing required inputs {required}"
            continue
        assert "runs-on" in job and job.get("steps"), f"{where}: needs runs-on and steps"
        for need in [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []):
            assert need in workflow["jobs"], f"{where}: needs unknown job {need}"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{where}: a step needs exactly one of uses/run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d[\w.]*|[0-9a-f]{40})", step["uses"]), (
                    f"{where}: pin {step['uses']} to a release tag or commit"
                )


def test_workflows_reference_existing_make_targets_and_paths() -> None:
    targets = _makefile_targets()
    # A repository path, possibly through ${{ matrix.deployment }}, ${{ inputs.deployment }} or $DEPLOYMENT.
    path_pattern = re.compile(r"(?<![\w/.-])((?:infra|tabml_assets|\.github)/(?:[\w./*-]|\$\{\{[^}]*\}\}|\$\{?\w+\}?)*)")
    for name in WORKFLOW_FILES:
        text = (WORKFLOWS / name).read_text().replace("./.github/", ".github/")
        commands = [line.strip() for step in _steps(_workflow(name)) for line in step.get("run", "").splitlines()]
        for target in [m.group(1) for c in commands if (m := re.match(r"make\s+([\w-]+)", c))]:
            assert target in targets, f".github/workflows/{name}: runs `make {target}`, but the Makefile has no target {target!r}"
        for raw in path_pattern.findall(text):
            for deployment in DEPLOYMENTS:
                path = re.sub(r"\$\{\{ *(matrix|inputs)\.deployment *\}\}|\$DEPLOYMENT|\$\{DEPLOYMENT\}", deployment, raw)
                path = path.rstrip("*").rstrip("/").rstrip(".")
                assert "$" not in path, f".github/workflows/{name}: cannot resolve {raw}"
                assert (REPO_ROOT / path).exists(), f".github/workflows/{name}: references {raw}, which does not exist ({path})"


def test_workflows_trigger_as_the_release_process_needs() -> None:
    ci = _workflow("ci.yml")
    assert {"pull_request", "push", "workflow_call"} <= set(ci["on"])
    ci_runs = [step["run"] for step in _steps(ci) if "run" in step]
    assert "make test" in ci_runs and "make lint" in ci_runs

    terraform = _workflow("terraform.yml")
    assert set(terraform["on"]) == {"pull_request"}
    terraform_runs = " ".join(step.get("run", "") for step in _steps(terraform))
    for command in ("fmt -check", "validate", "plan"):
        assert command in terraform_runs, f".github/workflows/terraform.yml: no `terraform {command}`"
    assert terraform["jobs"]["validate"]["strategy"]["matrix"]["deployment"] == list(DEPLOYMENTS)

    staging = _workflow("deploy-staging.yml")
    assert staging["on"]["push"]["branches"] == ["main"]
    prod = _workflow("deploy-prod.yml")
    assert prod["on"]["push"]["tags"] == ["v*"]
    for workflow, deployment in [(staging, "staging"), (prod, "prod")]:
        deploy = workflow["jobs"]["deploy"]
        assert deploy["uses"] == "./.github/workflows/deploy.yml" and deploy["with"]["deployment"] == deployment
        assert "ci" in deploy["needs"], f"deploy-{deployment}.yml: deploys without ci"

    release = _workflow("deploy.yml")["jobs"]["release"]
    # The `prod` environment's required reviewers are the approval gate.
    assert release["environment"] == "${{ inputs.deployment }}"
    runs = " ".join(step.get("run", "") for step in release["steps"])
    assert "terraform -chdir=\"infra/terraform/$DEPLOYMENT\"" in runs and "apply -auto-approve" in runs
    assert "databricks_release.py publish" in runs and "helm upgrade --install" in runs


def test_workflows_take_credentials_only_from_secrets_or_vars() -> None:
    sensitive = re.compile(r"(TOKEN|SECRET|PASSWORD|KUBECONFIG|CLIENT_ID)")
    for name in WORKFLOW_FILES:
        workflow = _workflow(name)
        scopes = [workflow.get("env", {})]
        for job in workflow["jobs"].values():
            scopes.append(job.get("env", {}))
            scopes.extend(step.get("env", {}) for step in job.get("steps", []))
        for env in scopes:
            for key, value in env.items():
                if sensitive.search(key):
                    assert re.fullmatch(r"\$\{\{ (secrets|vars)\.\w+ \}\}", str(value)), (
                        f".github/workflows/{name}: {key} must come from secrets or vars, found {value!r}"
                    )


def test_actionlint_when_available() -> None:
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed (no PyPI build works offline here); the structural "
            "workflow tests above stand in for it"
        )
    result = subprocess.run([actionlint, "-no-color"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- The release script --------------------------------------------------------------------


class RecordingWorkspace:
    """A workspace that keeps what it receives: the files and secrets APIs the script calls."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.secrets: dict[tuple[str, str], str] = {}

    def upload(self, file_path: str, contents: BinaryIO, *, overwrite: bool | None = None) -> None:
        assert overwrite, "a redeploy must replace the wheel"
        self.files[file_path] = contents.read()

    def put_secret(self, scope: str, key: str, *, string_value: str | None = None) -> None:
        assert string_value is not None
        self.secrets[(scope, key)] = string_value


def _runner_environ(spec: LoadedSpec) -> dict[str, str]:
    assert spec.profile.databricks is not None
    return {databricks_release.runner_variable(key): f"value-of-{key}" for key in spec.profile.databricks.secrets}


def test_release_names_every_missing_runner_secret(deployment_spec: LoadedSpec) -> None:
    environ = _runner_environ(deployment_spec)
    dropped = sorted(environ)[0]
    environ[dropped] = ""
    with pytest.raises(databricks_release.ReleaseError) as error:
        databricks_release.plan_release(deployment_spec, environ)
    assert dropped in str(error.value) and str(deployment_spec.profile_file) in str(error.value)


def test_release_uploads_the_wheel_and_secrets_where_the_profile_says(deployment_spec: LoadedSpec, tmp_path: Path) -> None:
    databricks = deployment_spec.profile.databricks
    assert databricks is not None
    wheel = tmp_path / databricks.wheel_path.rsplit("/", 1)[-1]
    wheel.write_bytes(b"wheel bytes")
    release = databricks_release.plan_release(deployment_spec, _runner_environ(deployment_spec))
    databricks_release.check_wheel(deployment_spec, release, wheel)
    workspace = RecordingWorkspace()
    databricks_release.publish(release, wheel, workspace, workspace)
    assert workspace.files == {databricks.wheel_path: b"wheel bytes"}
    assert workspace.secrets == {(databricks.secret_scope, key): f"value-of-{key}" for key in databricks.secrets}
    assert "value-of" not in repr(release)

    env_file = tmp_path / "runner.env"
    databricks_release.write_env_file(release, env_file)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert lines == {key.upper().replace("-", "_"): f"value-of-{key}" for key in databricks.secrets}


def test_release_refuses_a_wheel_the_profile_does_not_name(deployment_spec: LoadedSpec, tmp_path: Path) -> None:
    wheel = tmp_path / "tabml-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"not the profile's wheel")
    release = databricks_release.plan_release(deployment_spec, _runner_environ(deployment_spec))
    with pytest.raises(databricks_release.ReleaseError, match=r"databricks.wheel_path.*tabml-9\.9\.9"):
        databricks_release.check_wheel(deployment_spec, release, wheel)
