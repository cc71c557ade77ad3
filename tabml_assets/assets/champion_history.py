"""The champion's audit trail in MLflow: every move of `@champion` (promotion or rollback) is an
MLflow run tagged `tabml.audit=champion_change`, and the history of champions is read back from
those runs. Shared by champion_model, the rollback job and the scoring-lineage sensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dagster import MetadataValue

from tabml_assets.ml.lifecycle import (
    AUDIT_KIND,
    PROMOTION_GATE,
    VALIDATION_STATUS,
    ChampionChange,
    champion_tenures,
    history_markdown,
)
from tabml_assets.resources.model_registry import ModelRegistry

AUDIT_ARTIFACT = "champion_change.json"


def record_champion_change(
    registry: ModelRegistry,
    change: ChampionChange,
    project: str,
    asset_key: str,
    apply: Callable[[], None] = lambda: None,
) -> str:
    """Make the change (`apply`) inside its audit record, an MLflow run; return the run's id.

    If `apply` fails the run ends FAILED, and the history reads FINISHED records only, so an
    attempt that moved nothing never shows as a change.
    """
    tags = {
        "tabml.audit": AUDIT_KIND,
        "tabml.project": project,
        "dagster.asset_key": asset_key,
        "dagster.run_id": change.dagster_run_id,
        **change.as_tags(),
    }
    name = f"{change.action} to v{change.version}"
    with registry.run(name, tags) as run:
        apply()
        run.log_dict(asdict(change), AUDIT_ARTIFACT)
        return run.info.run_id


def champion_changes(registry: ModelRegistry) -> list[ChampionChange]:
    return [ChampionChange.from_tags(tags) for tags in registry.audit_records(AUDIT_KIND)]


def history_metadata(registry: ModelRegistry) -> dict[str, Any]:
    """The champion history as metadata: a table to open in the UI and its length."""
    tenures = champion_tenures(champion_changes(registry))
    return {
        "champion_history": MetadataValue.md(history_markdown(tenures)),
        "champion_changes": MetadataValue.int(len(tenures)),
    }


def training_window_of(registry: ModelRegistry, run_id: str | None) -> str:
    """`start .. end` of the training run's window, or `unknown` for a version without a run."""
    if not run_id:
        return "unknown"
    tags = registry.run_tags_of(run_id)
    start, end = tags.get("tabml.window_start"), tags.get("tabml.window_end")
    return f"{start} .. {end}" if start and end else "unknown"


@dataclass(frozen=True)
class VersionLineage:
    """What a scored day needs to answer "which model, trained on what, promoted by which gate"."""

    version: str
    training_window: str
    gate: str
    became_champion: str  # the audit record that made it champion last, or "unknown"


def version_lineage(registry: ModelRegistry, version: str, changes: list[ChampionChange]) -> VersionLineage:
    found = registry.model_version(version)
    tags = dict(found.tags) if found is not None else {}
    gate = tags.get(PROMOTION_GATE) or tags.get(VALIDATION_STATUS) or "never evaluated"
    mine = [c for c in changes if c.version == version]
    last = max(mine, key=lambda c: c.at) if mine else None
    became = f"{last.action} at {last.at} ({last.reason})" if last else "unknown"
    window = training_window_of(registry, found.run_id if found is not None else None)
    return VersionLineage(version, window, gate, became)
