"""Sensors of the champion's life: which model scored each day, and promotion after shadow days.

- `<project>_scoring_lineage_sensor` answers "which model scored this day" on the day itself:
  for every new `batch_predictions` materialization (the scoring job, the champion sensor's
  rescoring, a backfill, a click) it records an observation of that partition with the model
  version, its training window, the gate verdict that promoted it and whether the day was
  rescored after a rollback.
- `<project>_shadow_promotion_sensor` (only with `shadow.promote_after_days`) materializes
  `champion_model` again for a waiting challenger once its shadow days allow the promotion.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    AssetObservation,
    AssetRecordsFilter,
    MetadataValue,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from tabml_assets.assets.champion_history import VersionLineage, champion_changes, version_lineage
from tabml_assets.assets.shadow import shadow_evidence
from tabml_assets.automation.sensors import TRIGGER_TAG, status_of
from tabml_assets.keys import SCORING_LINEAGE_SENSOR, SHADOW_PROMOTION_SENSOR
from tabml_assets.ml.lifecycle import ROLLBACK, ChampionChange
from tabml_assets.ml.shadow import shadow_promotion_verdict
from tabml_assets.resources.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from tabml_assets.spec import LoadedSpec

# Materializations handled per tick; the cursor carries on from there.
LINEAGE_BATCH = 200


def rescore_note(changes: list[ChampionChange], version: str, trigger: str | None, scored_at: float) -> str:
    """Why a day was scored again, when the champion sensor rescored it after a rollback."""
    if trigger != "new_champion":
        return "no"
    moment = dt.datetime.fromtimestamp(scored_at, dt.UTC).isoformat(timespec="seconds")
    earlier = [c for c in changes if c.version == version and c.at <= moment]
    last = max(earlier, key=lambda c: c.at) if earlier else None
    if last is None or last.action != ROLLBACK:
        return "no (rescored for a new champion)"
    return f"yes: rollback to v{version} at {last.at} by {last.requested_by}: {last.reason}"


def build_scoring_lineage_sensor(spec: LoadedSpec) -> SensorDefinition:
    keys = spec.keys
    predictions = keys.batch_predictions

    @sensor(
        name=keys.sensor(SCORING_LINEAGE_SENSOR),
        minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
        default_status=status_of(spec.profile),
        required_resource_keys={keys.registry_resource},
        description=(
            f"Records on each new {spec.name}/batch_predictions day which model version scored it, "
            "its training window, the gate verdict that promoted it and whether a rollback caused it."
        ),
    )
    def scoring_lineage_sensor(context: SensorEvaluationContext) -> SensorResult:
        registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=predictions, after_storage_id=after), limit=LINEAGE_BATCH, ascending=True
        ).records
        if not records:
            return SensorResult(skip_reason="no new batch_predictions materializations")
        changes = champion_changes(registry)
        lineages: dict[str, VersionLineage] = {}
        events = []
        for record in records:
            materialization = record.asset_materialization
            entry = materialization.metadata.get("model_version") if materialization else None
            if entry is None or record.partition_key is None:
                continue
            version = str(entry.value)
            if version not in lineages:
                lineages[version] = version_lineage(registry, version, changes)
            lineage = lineages[version]
            run = context.instance.get_run_by_id(record.run_id)
            trigger = run.tags.get(TRIGGER_TAG) if run else None
            events.append(
                AssetObservation(
                    asset_key=predictions,
                    partition=record.partition_key,
                    description=f"scored by v{version}",
                    metadata={
                        "model_version": version,
                        "training_window": lineage.training_window,
                        "gate_verdict": lineage.gate,
                        "became_champion": lineage.became_champion,
                        "rescored_after_rollback": rescore_note(changes, version, trigger, record.timestamp),
                        "scoring_run_id": MetadataValue.dagster_run(record.run_id),
                        "trigger": trigger or "manual or schedule",
                    },
                )
            )
        return SensorResult(asset_events=events, cursor=str(records[-1].storage_id))

    return scoring_lineage_sensor


def build_shadow_promotion_sensor(spec: LoadedSpec) -> SensorDefinition:
    keys = spec.keys
    needed = spec.pipeline.shadow.promote_after_days or 0

    @sensor(
        name=keys.sensor(SHADOW_PROMOTION_SENSOR),
        asset_selection=[keys.champion_model],
        minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
        default_status=status_of(spec.profile),
        required_resource_keys={keys.registry_resource},
        description=(
            f"Promotes {spec.name}'s waiting challenger (materializes champion_model of its training "
            f"day again) once {needed} shadow day(s) with labels found it no worse than the champion."
        ),
    )
    def shadow_promotion_sensor(context: SensorEvaluationContext) -> SensorResult:
        registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        champion, challenger = registry.version_for_alias(CHAMPION), registry.version_for_alias(CHALLENGER)
        if champion is None or challenger is None or challenger.version == champion.version:
            return SensorResult(skip_reason="no challenger waiting in shadow")
        verdict = shadow_promotion_verdict(
            shadow_evidence(context.instance, keys.challenger_predictions, challenger.version, champion.version),
            needed,
        )
        if not verdict.allowed:
            return SensorResult(skip_reason=f"v{challenger.version}: {verdict.description}")
        trained_on = registry.run_tags_of(challenger.run_id).get("dagster.partition_key") if challenger.run_id else None
        if not trained_on:
            return SensorResult(skip_reason=f"v{challenger.version} has no training partition to promote from")
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"shadow-promotion:{challenger.version}:over-{champion.version}",
                    partition_key=trained_on,
                    asset_selection=[keys.champion_model],
                    tags={TRIGGER_TAG: "shadow_promotion", "tabml/challenger_version": challenger.version},
                )
            ]
        )

    return shadow_promotion_sensor
