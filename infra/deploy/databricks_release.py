"""Publish a tabml build to a deployment's Databricks workspace, as the deploy workflows do.

    python infra/deploy/databricks_release.py publish --deployment staging --wheel dist/tabml-0.1.0-py3-none-any.whl
    python infra/deploy/databricks_release.py runner-env --deployment staging --output "$RUNNER_TEMP/runner.env"

Everything is read from the deployment's profile (tabml_assets/conf/profiles/<deployment>.yaml):
`publish` uploads the wheel to `databricks.wheel_path` and writes every secret named in
`databricks.secrets` into `databricks.secret_scope`; `runner-env` writes the same values as an
env file for the Kubernetes secret of the code location. A secret's value comes from the
environment variable RUNNER_<NAME> (databricks-token -> RUNNER_DATABRICKS_TOKEN), set by the
workflow from GitHub environment secrets: the runner's credentials, kept apart from the
deployer's DATABRICKS_* variables that this script authenticates with. Values are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from tabml_assets.resources.databricks import secret_env_name
from tabml_assets.spec import LoadedSpec, load_spec

RUNNER_PREFIX = "RUNNER_"


class ReleaseError(ValueError):
    """A release that cannot go ahead, naming the profile key or variable to fix."""


@dataclass(frozen=True)
class Release:
    """What one deployment receives: the wheel's target and the runner's secrets."""

    wheel_path: str
    secret_scope: str
    secrets: dict[str, str]

    @property
    def runner_env(self) -> dict[str, str]:
        """The secrets as the environment variables the code location reads."""
        return {secret_env_name(key): value for key, value in self.secrets.items()}

    def __repr__(self) -> str:  # values stay out of logs and tracebacks
        return f"Release(wheel_path={self.wheel_path!r}, secret_scope={self.secret_scope!r}, secrets={sorted(self.secrets)})"


def runner_variable(secret_key: str) -> str:
    return RUNNER_PREFIX + secret_env_name(secret_key)


def plan_release(spec: LoadedSpec, environ: Mapping[str, str]) -> Release:
    """The profile's wheel target and secrets, with every secret's value found in `environ`."""
    databricks = spec.profile.databricks
    if databricks is None:
        raise ReleaseError(f"{spec.profile_file}: key `databricks`: required to release {spec.deployment}, found nothing")
    missing = [runner_variable(key) for key in databricks.secrets if not environ.get(runner_variable(key))]
    if missing:
        raise ReleaseError(
            f"{spec.profile_file}: key `databricks.secrets` names {databricks.secrets}; "
            f"expected the environment variables {missing} to hold their values, found them unset or empty"
        )
    return Release(
        wheel_path=databricks.wheel_path,
        secret_scope=databricks.secret_scope,
        secrets={key: environ[runner_variable(key)] for key in databricks.secrets},
    )


def check_wheel(spec: LoadedSpec, release: Release, wheel: Path) -> None:
    """The built wheel must be the file the profile's step launcher installs."""
    if not wheel.is_file():
        raise ReleaseError(f"wheel {wheel}: file not found (build it with `pip wheel --no-deps -w dist .`)")
    expected_name = release.wheel_path.rsplit("/", 1)[-1]
    if wheel.name != expected_name:
        raise ReleaseError(
            f"{spec.profile_file}: key `databricks.wheel_path`: expected it to end with the built wheel "
            f"{wheel.name!r}, found {expected_name!r} (keep it in step with pyproject's version)"
        )


class WorkspaceFiles(Protocol):
    def upload(self, file_path: str, contents: BinaryIO, *, overwrite: bool | None = None) -> None: ...


class WorkspaceSecrets(Protocol):
    def put_secret(self, scope: str, key: str, *, string_value: str | None = None) -> None: ...


def publish(release: Release, wheel: Path, files: WorkspaceFiles, secrets: WorkspaceSecrets) -> None:
    with wheel.open("rb") as contents:
        files.upload(release.wheel_path, contents, overwrite=True)
    for key, value in release.secrets.items():
        secrets.put_secret(release.secret_scope, key, string_value=value)


def write_env_file(release: Release, output: Path) -> None:
    """KEY=VALUE lines for `kubectl create secret generic --from-env-file`, readable by the owner only."""
    for key, value in release.secrets.items():
        if "\n" in value:
            raise ReleaseError(f"{runner_variable(key)}: expected a single-line value, found a line break")
    output.touch(mode=0o600)
    output.write_text("".join(f"{name}={value}\n" for name, value in release.runner_env.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["publish", "runner-env"])
    parser.add_argument("--deployment", required=True, choices=["staging", "prod"])
    parser.add_argument("--wheel", type=Path, help="the built tabml wheel (publish)")
    parser.add_argument("--output", type=Path, help="env file to write (runner-env)")
    args = parser.parse_args(argv)
    if args.command == "publish" and args.wheel is None:
        parser.error("publish needs --wheel")
    if args.command == "runner-env" and args.output is None:
        parser.error("runner-env needs --output")
    spec = load_spec(args.deployment)
    try:
        release = plan_release(spec, os.environ)
        if args.command == "runner-env":
            write_env_file(release, args.output)
            sys.stderr.write(f"wrote {sorted(release.runner_env)} to {args.output}\n")
            return 0
        check_wheel(spec, release, args.wheel)
        from databricks.sdk import WorkspaceClient

        # Authenticates as the deployer from DATABRICKS_HOST / DATABRICKS_CLIENT_ID / _SECRET.
        client = WorkspaceClient()
        publish(release, args.wheel, client.files, client.secrets)
        sys.stderr.write(
            f"uploaded {args.wheel.name} to {release.wheel_path}; "
            f"put {sorted(release.secrets)} in scope {release.secret_scope}\n"
        )
        return 0
    except ReleaseError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
