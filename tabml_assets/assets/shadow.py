"""challenger_predictions: shadow scoring. Each day batch_predictions scored is scored again by
the challenger and compared with the champion, into its own partitions. Nothing downstream of
batch_predictions reads it: it is evidence for promotion and rollback, not a prediction table.
"""


import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tabml_assets.assets.common import OWNERS, daily_partitions, partition_keys
from tabml_assets.assets.raw import BACKFILL_POLICY
from tabml_assets.ml.lifecycle import PREVIOUS_CHAMPION, PROMOTED_AT
from tabml_assets.ml.metrics import higher_is_better
from tabml_assets.ml.shadow import (
    CHALLENGER_PREFIX,
    CHAMPION_PREFIX,
    ShadowDay,
    ShadowEvidence,
    agreement_columns,
    compare_day,
    shadow_frame,
)
from tabml_assets.resources.model_registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    ModelVersionRef,
)
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import PartitionStore, SummaryColumns
from tabml_assets.spec import LoadedSpec, ShadowSpec

CHALLENGER_ROLE = "challenger"
PREVIOUS_CHAMPION_ROLE = "previous champion"
SHADOW_DAYS = "shadow_days"


@dataclass(frozen=True)
class ShadowModel:
    """The model scored in shadow, and why it is the one (or why there is none)."""

    ref: ModelVersionRef | None
    role: str
    reason: str


def choose_shadow_model(registry: ModelRegistry, shadow: ShadowSpec, now: dt.datetime) -> ShadowModel:
    """The unpromoted challenger; else, within `days_after_promotion`, the previous champion."""
    if not shadow.enabled:
        return ShadowModel(None, "", "shadow scoring is off (shadow.enabled: false)")
    champion = registry.version_for_alias(CHAMPION)
    if champion is None:
        return ShadowModel(None, "", f"no @{CHAMPION} yet: nothing to compare a challenger with")
    challenger = registry.version_for_alias(CHALLENGER)
    if challenger is not None and challenger.version != champion.version:
        return ShadowModel(challenger, CHALLENGER_ROLE, f"v{challenger.version} is @{CHALLENGER}, not promoted")
    if shadow.days_after_promotion:
        found = registry.model_version(champion.version)
        tags = dict(found.tags) if found is not None else {}
        promoted_at, previous = tags.get(PROMOTED_AT), tags.get(PREVIOUS_CHAMPION)
        if promoted_at and previous:
            age = now - dt.datetime.fromisoformat(promoted_at)
            if age <= dt.timedelta(days=shadow.days_after_promotion):
                earlier = registry.model_version(previous)
                if earlier is not None:
                    return ShadowModel(
                        ModelVersionRef(registry.model_name, previous, earlier.run_id),
                        PREVIOUS_CHAMPION_ROLE,
                        f"v{champion.version} was promoted {promoted_at}, within "
                        f"shadow.days_after_promotion ({shadow.days_after_promotion})",
                    )
    return ShadowModel(None, "", f"no challenger in shadow: @{CHALLENGER} is the champion v{champion.version}")


def day_metadata(day: ShadowDay, primary: str) -> dict[str, Any]:
    """Per-day figures as float metadata, so the asset's Plots tab charts them by day."""
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(day.rows),
        "labelled_rows": MetadataValue.int(day.labelled_rows),
        **{f"mean_{name}": MetadataValue.float(value) for name, value in day.agreement.items()},
    }
    for prefix, metrics in ((CHAMPION_PREFIX, day.champion_metrics), (CHALLENGER_PREFIX, day.challenger_metrics)):
        metadata.update(
            {f"{prefix}realized_{k}": MetadataValue.float(v) for k, v in metrics.items() if math.isfinite(v)}
        )
    if day.challenger_no_worse is not None:
        metadata[f"challenger_no_worse_on_{primary}"] = MetadataValue.bool(day.challenger_no_worse)
    return metadata


def comparison_markdown(days: dict[str, dict[str, Any]], primary: str) -> str:
    lines = [f"| day | champion | challenger | rows | labelled | champion {primary} | challenger {primary} | no worse |",
             "|---|---|---|---|---|---|---|---|"]
    for day, info in sorted(days.items()):
        cells = [
            day, f"v{info['champion_version']}", f"v{info['challenger_version']}", str(info["rows"]),
            str(info["labelled_rows"]), _fmt(info.get("champion_metric")), _fmt(info.get("challenger_metric")),
            {True: "✓", False: "✗", None: "n/a"}[info.get("challenger_no_worse")],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def shadow_evidence(
    instance: DagsterInstance, asset_key: AssetKey, challenger_version: str, champion_version: str
) -> list[ShadowEvidence]:
    """The latest shadow record of each day for this challenger against this champion."""
    evidence: dict[str, ShadowEvidence] = {}
    for record in instance.fetch_materializations(asset_key, limit=1000).records:  # newest first
        materialization = record.asset_materialization
        entry = materialization.metadata.get(SHADOW_DAYS) if materialization else None
        days: dict[str, dict[str, Any]] = entry.value if entry is not None and isinstance(entry.value, dict) else {}
        for day, info in days.items():
            if day in evidence:
                continue
            evidence[day] = ShadowEvidence(
                day,
                info.get("challenger_no_worse")
                if info.get("challenger_version") == challenger_version
                and info.get("champion_version") == champion_version
                else None,
            )
    return [e for e in evidence.values() if e.challenger_no_worse is not None]


def build_challenger_predictions_asset(spec: LoadedSpec) -> AssetsDefinition:
    pipeline = spec.pipeline
    keys = spec.keys
    primary = pipeline.metric
    # The unique key may hold the event time (nyc_flights' does): each column once.
    keep = list(dict.fromkeys([pipeline.event_time, *(pipeline.dataset.unique_key or []), pipeline.target_column]))
    tolerance = pipeline.validation.max_worse_than_champion_pct or 0.0
    skip = {pipeline.event_time, *(pipeline.dataset.unique_key or [])} - {pipeline.target_column}

    @asset(
        key=keys.challenger_predictions,
        group_name=keys.group("inference"),
        kinds={"pandas", "mlflow", "parquet"},
        owners=OWNERS,
        code_version="1",
        retry_policy=build_retry_policy(pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        backfill_policy=BACKFILL_POLICY,
        deps=[keys.batch_predictions],
        # No challenger in shadow: the step succeeds and writes nothing.
        output_required=False,
        required_resource_keys={"step_launcher", keys.registry_resource, "partition_store"},
    )
    @transient_errors_only
    def challenger_predictions(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        """Shadow scoring: each batch_predictions day scored again by the challenger and compared with the champion."""
        registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        shadow = choose_shadow_model(registry, pipeline.shadow, dt.datetime.now(dt.UTC))
        if shadow.ref is None:
            context.log.info(f"challenger_predictions: nothing to score in shadow: {shadow.reason}")
            return
        store: PartitionStore = context.resources.partition_store
        model = registry.load_model(shadow.ref)
        classes = list(model.classes_) if pipeline.task != "regression" else None
        transform = partial(
            shadow_frame,
            feature_columns=pipeline.feature_columns,
            keep_columns=keep,
            challenger_version=shadow.ref.version,
            task=pipeline.task,
            positive_class=pipeline.target.positive_class,
        )
        days: dict[str, dict[str, Any]] = {}
        compared: dict[str, ShadowDay] = {}
        for key in partition_keys(context):
            written = store.transform_partition(
                keys.batch_predictions, keys.challenger_predictions, key, transform,
                shared={"model": model}, summary=SummaryColumns(sums=agreement_columns(pipeline.task)),
            )
            # Only what the comparison needs: a large day's features are not read back.
            frame = store.read_frame(
                keys.challenger_predictions, key, [c for c in written.schema.names if c not in skip]
            )
            day = compare_day(
                frame, pipeline.target_column, pipeline.task, classes, primary,
                higher_is_better(primary, spec.steps.metrics), tolerance,
                pipeline.target.positive_class, spec.steps.metrics,
            )
            versions = store.read_frame(keys.challenger_predictions, key, [f"{CHAMPION_PREFIX}version"]).iloc[:, 0]
            champion_versions = sorted(str(v) for v in versions.dropna().unique())
            compared[key] = day
            days[key] = {
                "champion_version": ",".join(champion_versions),
                "challenger_version": shadow.ref.version,
                "rows": day.rows,
                "labelled_rows": day.labelled_rows,
                "champion_metric": day.champion_metrics.get(primary),
                "challenger_metric": day.challenger_metrics.get(primary),
                "challenger_no_worse": day.challenger_no_worse,
                **{f"mean_{k}": v for k, v in day.agreement.items()},
            }
        only = compared[next(iter(compared))] if len(compared) == 1 else None
        metadata: dict[str, Any] = {
            "shadow_role": shadow.role,
            "shadow_reason": shadow.reason,
            "challenger_version": shadow.ref.version,
            "champion_version": ", ".join(sorted({d["champion_version"] for d in days.values()})),
            "champion_vs_challenger": MetadataValue.md(comparison_markdown(days, primary)),
            # JSON, not only floats: the N-day promotion rule reads it back, day by day.
            SHADOW_DAYS: MetadataValue.json(_json_safe(days)),
            **(day_metadata(only, primary) if only is not None else {}),
        }
        yield MaterializeResult(metadata=metadata)

    return challenger_predictions


def _json_safe(days: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """NaN is not JSON: undefined figures (ROC AUC of a one-class day) become null."""
    return {
        day: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in info.items()}
        for day, info in days.items()
    }
