"""The only place that assembles Definitions: the deployment is read once, here."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from dagster import BetaWarning, Definitions, in_process_executor, multiprocess_executor

from tabml_assets.assets import build_asset_checks, build_assets
from tabml_assets.automation import build_automation
from tabml_assets.resources import build_resources
from tabml_assets.spec import LoadedSpec, load_spec

# tabml relies on BackfillPolicy and allow_nonexistent_upstream_partitions on purpose; their
# beta notices would otherwise greet every user on every load.
warnings.filterwarnings("ignore", category=BetaWarning)


def build_definitions(spec: LoadedSpec) -> Definitions:
    # Locally, the in-process executor saves 2-4 s per step on a 2-core laptop; on Databricks
    # steps run on clusters, so several may run at once.
    executor = in_process_executor if spec.deployment in ("dev", "test") else multiprocess_executor
    automation = build_automation(spec, build_assets(spec))
    return Definitions(
        assets=automation.assets,
        asset_checks=[*automation.asset_checks, *build_asset_checks(spec)],
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        resources={**build_resources(spec), **automation.resources},
        executor=executor,
    )


def load_definitions() -> Definitions:
    conf_dir = os.environ.get("TABML_CONF_DIR")
    spec = load_spec(
        os.environ.get("TABML_DEPLOYMENT", "dev"),
        conf_dir=Path(conf_dir) if conf_dir else None,
    )
    return build_definitions(spec)


defs = load_definitions()
