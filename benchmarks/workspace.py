"""Benchmark workspaces: a TABML_HOME, a conf/ and examples/ copy and a DAGSTER_HOME per case, and landed trips.

Cases only use tabml's public entry points (`load_spec`, `build_definitions`, `run_selection`)
on the dev deployment, so the harness keeps measuring while the internals change.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tabml_assets.resources.storage import write_parquet_atomic
from tabml_assets.spec import DEFAULT_CONF_DIR, LoadedSpec, load_spec

DEPLOYMENT = "dev"
# The profiles name their projects as ../examples/<name>, so a conf/ copy needs examples/ beside it.
EXAMPLES_DIR = DEFAULT_CONF_DIR.parent / "examples"
# Fixed days, well inside the daily partitions (start 2025-01-01) and before any "today" the
# benchmark runs on, so partitions and demo rows are identical from run to run.
TRAINING_DAY = dt.date(2025, 9, 7)
SCORING_DAY = dt.date(2025, 9, 8)
LARGE_SCORING_DAY = dt.date(2025, 9, 9)
BACKFILL_FIRST_DAY = dt.date(2025, 6, 1)


def days_ending(last: dt.date, count: int) -> list[dt.date]:
    return [last - dt.timedelta(days=count - 1 - i) for i in range(count)]


@dataclass(frozen=True)
class Workspace:
    """One isolated tabml setup: state in `home`, spec in `conf_dir`, Dagster storage in `dagster_home`."""

    home: Path
    conf_dir: Path
    dagster_home: Path

    def spec(self) -> LoadedSpec:
        return load_spec(DEPLOYMENT, conf_dir=self.conf_dir, tabml_home=self.home)

    @property
    def landing(self) -> Path:
        """The landing folder of the benchmarked project (<landing_folder>/<project>)."""
        return self.spec().landing_folder()

    @property
    def mlflow_uri(self) -> str:
        spec = self.spec()
        return spec.resolve_local(spec.profile.mlflow.tracking_uri)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that loads tabml the way `dagster dev` would."""
        return {
            **os.environ,
            "TABML_DEPLOYMENT": DEPLOYMENT,
            "TABML_HOME": str(self.home),
            "TABML_CONF_DIR": str(self.conf_dir),
            "DAGSTER_HOME": str(self.dagster_home),
        }

    def as_args(self) -> dict[str, str]:
        return {"home": str(self.home), "conf_dir": str(self.conf_dir), "dagster_home": str(self.dagster_home)}

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Workspace:
        return cls(Path(args["home"]), Path(args["conf_dir"]), Path(args["dagster_home"]))


def create_workspace(
    root: Path,
    name: str,
    home: Path | None = None,
    profile_overrides: dict[str, Any] | None = None,
) -> Workspace:
    """A conf/ and examples/ copy under root/name with `profile_overrides` merged into the dev profile.

    Several workspaces may share one `home` (and so one MLflow registry and parquet store)
    while reading different landing folders.
    """
    folder = root / name
    suffix = 1
    while folder.exists():  # a retried setup gets a fresh folder
        suffix += 1
        folder = root / f"{name}_{suffix}"
    conf_dir = folder / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf_dir)
    shutil.copytree(EXAMPLES_DIR, folder / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    if profile_overrides:
        profile_file = conf_dir / "profiles" / f"{DEPLOYMENT}.yaml"
        profile = yaml.safe_load(profile_file.read_text())
        profile_file.write_text(yaml.safe_dump(_merge(profile, profile_overrides), sort_keys=False))
    dagster_home = folder / "dagster_home"
    dagster_home.mkdir(parents=True)
    workspace = Workspace(home=home or folder / "tabml_home", conf_dir=conf_dir, dagster_home=dagster_home)
    workspace.home.mkdir(parents=True, exist_ok=True)
    workspace.spec()  # fail here, naming the file and key, if an override is not a valid spec
    return workspace


# The table staging/prod would read for the flights example, were it deployed there.
FLIGHTS_TABLE = "main.tabml_examples.nyc_flights"


def every_example_conf(root: Path) -> Path:
    """A conf/ and examples/ copy under `root` in which every deployment runs both example
    projects: staging and prod ship with the taxi one only, and load time is measured with
    both (the flights project reads its own Databricks table there)."""
    conf_dir = root / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, conf_dir)
    shutil.copytree(EXAMPLES_DIR, root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    examples = sorted(f"../examples/{folder.name}" for folder in EXAMPLES_DIR.iterdir() if (folder / "pipeline.yaml").exists())
    for profile_file in (conf_dir / "profiles").glob("*.yaml"):
        profile = yaml.safe_load(profile_file.read_text())
        if profile["projects"] == examples or sorted(profile["projects"]) == examples:
            continue
        profile["projects"] = examples
        profile_file.write_text(yaml.safe_dump(profile, sort_keys=False))
        if profile.get("data_source", {}).get("kind") == "databricks_table":
            override = root / "examples" / "nyc_flights" / "profiles" / profile_file.name
            override.write_text(yaml.safe_dump({"data_source": {"table": FLIGHTS_TABLE}}))
    return conf_dir


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@functools.cache
def demo_trips() -> Callable[[dt.date, int], pd.DataFrame]:
    """The benchmarked project's demo generator (`demo_rows` of its steps module)."""
    demo_rows = load_spec(DEPLOYMENT).steps.demo_rows
    if demo_rows is None:
        raise RuntimeError(f"the {DEPLOYMENT} deployment's first project has no demo_rows to land")
    return demo_rows


def land_trips(folder: Path, days: Iterable[dt.date], rows_per_day: int, file_name: str | None = None) -> Path:
    """Write demo trips for `days` into one landed parquet file, as an upstream export would."""
    days = list(days)
    name = file_name or f"trips_{days[0]}_{days[-1]}_{rows_per_day}.parquet"
    path = folder / name
    if not path.exists():
        frames = [demo_trips()(day, rows_per_day) for day in days]
        write_parquet_atomic(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True), path)
    return path


def link_files(files: Iterable[Path], folder: Path) -> None:
    """Hard-link cached landed files into a workspace's landing folder (no copy, same bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = folder / path.name
        if not target.exists():
            os.link(path, target)
