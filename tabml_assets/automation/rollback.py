"""The rollback job: one action, launched from the UI's launchpad with a config form, that moves
`@champion` back to a version that was champion before.

It refuses a version that never passed the gate (or was never champion) unless `force` is set,
and refuses before touching anything. It records who, why and when on both model versions, as
an audit record in MLflow and as a materialization of `<project>/champion_model`; the champion
sensor then sees the alias move and rescores the last K days with the restored version.
"""


from dagster import (
    AssetMaterialization,
    Config,
    DagsterInstance,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from tabml_assets.assets.champion_history import (
    champion_changes,
    history_metadata,
    record_champion_change,
    training_window_of,
)
from tabml_assets.automation.sensors import last_scored_partitions, latest_partition_metadata
from tabml_assets.keys import ROLLBACK_JOB, PipelineKeys
from tabml_assets.ml.lifecycle import (
    PROMOTION_GATE,
    RESTORE_REASON,
    RESTORED_AT,
    RESTORED_BY,
    ROLLBACK,
    ROLLED_BACK_AT,
    ROLLED_BACK_REASON,
    VALIDATION_STATUS,
    ChampionChange,
    RollbackTarget,
    now_iso,
    rollback_refusal,
    was_champion,
)
from tabml_assets.resources.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from tabml_assets.spec import LoadedSpec


class RollbackConfig(Config):
    """What the launchpad asks for: the version to restore and why."""

    version: str = Field(description="The registered model version to restore as @champion, e.g. '3'.")
    reason: str = Field(description="Why: recorded in MLflow, on both versions and in the champion history.")
    requested_by: str = Field(
        default="",
        description="Who asks for it; empty: the run's dagster/user tag where Dagster knows the user.",
    )
    force: bool = Field(
        default=False,
        description="Restore a version that never passed the promotion gate or was never champion.",
    )


def days_to_rescore(instance: DagsterInstance, keys: PipelineKeys, last_k: int, version: str) -> list[str]:
    """The days the champion sensor will rescore: the last K scored days another version scored."""
    return [
        day
        for day in last_scored_partitions(instance, keys.batch_predictions, last_k)
        if str(latest_partition_metadata(instance, keys.batch_predictions, day).get("model_version")) != version
    ]


def build_rollback_job(spec: LoadedSpec) -> JobDefinition:
    keys = spec.keys
    last_k = spec.pipeline.automation.rescore_partitions_on_new_champion
    partitions = spec.pipeline.partitions

    @op(
        name=f"{spec.name}_rollback_champion",
        required_resource_keys={keys.registry_resource},
        description=f"Moves {spec.name}'s @champion back to an earlier champion version, audited.",
    )
    def rollback_champion(context: OpExecutionContext, config: RollbackConfig) -> None:
        registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        version = config.version.strip().removeprefix("v")
        current = registry.version_for_alias(CHAMPION)
        changes = champion_changes(registry)
        found = registry.model_version(version) if version.isdigit() else None
        tags = dict(found.tags) if found is not None else {}
        target = RollbackTarget(
            registry.model_name, version, found is not None, tags.get(VALIDATION_STATUS), was_champion(version, changes)
        )
        refusal = rollback_refusal(target, current.version if current else None, config.force)
        if refusal is not None:
            raise Failure(description=refusal, allow_retries=False)
        assert found is not None
        requested_by = config.requested_by or context.run.tags.get("dagster/user") or "unknown (set requested_by)"
        at = now_iso()
        rescored = days_to_rescore(context.instance, keys, last_k, version)
        previous = current.version if current else None
        training_window = training_window_of(registry, found.run_id)
        gate = tags.get(PROMOTION_GATE) or tags.get(VALIDATION_STATUS) or "never evaluated"
        change = ChampionChange(
            action=ROLLBACK, version=version, previous_version=previous, at=at, reason=config.reason,
            requested_by=requested_by, gate=gate, training_window=training_window, forced=config.force,
            dagster_run_id=context.run_id, days_to_rescore=tuple(rescored),
        )

        def apply() -> None:
            registry.set_alias(CHAMPION, version)
            registry.set_version_tags(version, {RESTORED_AT: at, RESTORED_BY: requested_by, RESTORE_REASON: config.reason})
            if previous is not None:
                registry.set_version_tags(previous, {ROLLED_BACK_AT: at, ROLLED_BACK_REASON: config.reason})
                challenger = registry.version_for_alias(CHALLENGER)
                if challenger is not None and challenger.version == previous:
                    # Else the rolled-back version would be scored in shadow and could be promoted again.
                    registry.delete_alias(CHALLENGER)

        audit_run_id = record_champion_change(registry, change, spec.name, keys.champion_model.to_user_string(), apply)
        trained_on = registry.run_tags_of(found.run_id).get("dagster.partition_key") if found.run_id else None
        partition = trained_on if trained_on and trained_on >= partitions.start_date.isoformat() else None
        context.log_event(
            AssetMaterialization(
                asset_key=keys.champion_model,
                partition=partition,
                description=f"rollback to v{version}: {config.reason}",
                metadata={
                    # First, so the asset page opens on the history the rollback extended.
                    **history_metadata(registry),
                    "action": ROLLBACK,
                    "model_name": registry.model_name,
                    "model_version": version,
                    "previous_champion_version": previous or "none",
                    "reason": config.reason,
                    "requested_by": requested_by,
                    "forced": config.force,
                    "at": at,
                    "gate_verdict": gate,
                    "training_window": training_window,
                    "audit_mlflow_run_id": audit_run_id,
                    "days_to_rescore": MetadataValue.json(rescored),
                },
            )
        )
        context.log.info(
            f"@champion of {registry.model_name}: v{previous} -> v{version}; the champion sensor "
            f"rescores {len(rescored)} day(s): {', '.join(rescored) or 'none'}"
        )

    @job(
        name=keys.job(ROLLBACK_JOB),
        description=(
            f"{spec.name}: move @champion back to an earlier champion version (config: version, "
            "reason, requested_by, force), audited in MLflow and on champion_model; the champion "
            "sensor rescores the last days with it."
        ),
        tags={"tabml/project": spec.name},
    )
    def rollback_job() -> None:
        rollback_champion()

    return rollback_job
