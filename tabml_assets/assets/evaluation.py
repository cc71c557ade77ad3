"""evaluation_report and champion_model: the held-out evaluation, the gate and the promotion."""


from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from tabml_assets.assets.champion_history import history_metadata, record_champion_change
from tabml_assets.assets.common import OWNERS, daily_partitions
from tabml_assets.assets.shadow import shadow_evidence
from tabml_assets.assets.training import run_tags, training_window_input, window_of
from tabml_assets.ml import report
from tabml_assets.ml.challenger import Evaluation, ModelUnderTest, evaluate_challenger
from tabml_assets.ml.evaluation import GateResult, gate_check_names
from tabml_assets.ml.lifecycle import (
    PREVIOUS_CHAMPION,
    PROMOTED_AT,
    PROMOTION,
    PROMOTION_GATE,
    ChampionChange,
    now_iso,
)
from tabml_assets.ml.records import (
    BaselineScore,
    ChampionRecord,
    EvaluationRecord,
    ModelVersionRef,
    ScoredModel,
    TrainedModel,
)
from tabml_assets.ml.shadow import shadow_promotion_verdict
from tabml_assets.ml.training import labelled_rows, split_chronologically
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry, RecordedEvaluation
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import PartitionStore
from tabml_assets.spec import LoadedSpec

EVALUATION_CODE_VERSION = "4"


def ratio(value: float, base: float) -> float:
    return value / base if base else float("nan")


def validation_status(run_mode: str, gate_passed: bool) -> str:
    """The `validation_status` tag of the evaluated version."""
    if run_mode == "disabled":
        return "not_validated"
    return "passed" if gate_passed else "failed"


def evaluation_record(
    evaluation: Evaluation,
    challenger: ModelVersionRef,
    champion: ModelVersionRef | None,
    run_mode: str,
    window: tuple[str, str],
) -> EvaluationRecord:
    """What evaluation_report hands to champion_model."""
    return EvaluationRecord(
        challenger=ScoredModel.of(challenger, evaluation.challenger),
        champion=ScoredModel.of(champion, evaluation.champion)
        if champion is not None and evaluation.champion is not None
        else None,
        baseline=BaselineScore(kind=evaluation.baseline, metrics=evaluation.baseline_metrics),
        test_rows=evaluation.test_rows,
        run_mode=run_mode,
        gate=tuple(evaluation.gate),
        training_window=window,
    )


def evaluation_metadata(
    evaluation: Evaluation, record: EvaluationRecord, primary: str, report_path: Path, recorded: RecordedEvaluation
) -> dict[str, Any]:
    """What evaluation_report shows: the scores, the step card, the report and the MLflow run."""
    card = evaluation.card
    challenger, champion = evaluation.challenger, evaluation.champion
    baseline = evaluation.baseline_metrics
    return {
        # Short enough for the UI to show inline; the step card opens from its row.
        "metrics": MetadataValue.md(report.metrics_table(card.scores, card.higher_is_better)),
        "step_card": MetadataValue.md(report.step_card_markdown(card)),
        "report_html": MetadataValue.path(str(report_path)),
        "report_mlflow_artifact": MetadataValue.text(recorded.report_uri),
        "evaluation_mlflow_run_id": recorded.run_id,
        "challenger_version": record.challenger.version,
        "champion_version": record.champion.version if record.champion else "none",
        f"{primary}_vs_baseline": MetadataValue.float(ratio(challenger[primary], baseline[primary])),
        "gate_passed": evaluation.gate_passed,
        "test_rows": MetadataValue.int(evaluation.test_rows),
        **{f"challenger_{k}": MetadataValue.float(v) for k, v in challenger.items()},
        **{f"baseline_{k}": MetadataValue.float(v) for k, v in baseline.items()},
        **({f"champion_{k}": MetadataValue.float(v) for k, v in champion.items()} if champion else {}),
    }


def gate_check_results(gate: list[GateResult], blocking: bool, run_mode: str) -> list[AssetCheckResult]:
    """One asset check result per gate criterion: ERROR when the gate blocks, else WARN."""
    return [
        AssetCheckResult(
            check_name=f"gate_{result.check_name}",
            passed=result.passed,
            severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
            description=result.description,
            metadata={
                "metric": result.metric,
                "value": MetadataValue.float(result.value),
                "threshold": MetadataValue.float(result.threshold),
                "comparison": result.comparison,
                "run_mode": run_mode,
            },
        )
        for result in gate
    ]


def champion_metadata(record: ChampionRecord) -> dict[str, Any]:
    """What champion_model shows: the champion after the step and how the decision went."""
    return {
        "model_name": record.name,
        "model_version": record.version or "none",
        "challenger_version": record.challenger_version,
        "promoted": record.promoted,
        "previous_champion_version": record.previous_version or "none",
        "mlflow_run_id": record.run_id or "none",
        "gate_verdict": record.gate,
        "gate_warnings": MetadataValue.json(list(record.gate_warnings)),
        **({"shadow_rule": record.shadow_rule} if record.shadow_rule else {}),
    }


def launched_by(tags: Mapping[str, str]) -> str:
    """Who started the run: a user (where Dagster knows one), a schedule, a sensor, or a click."""
    for tag, what in (("dagster/user", "user"), ("dagster/schedule_name", "schedule"), ("dagster/sensor_name", "sensor")):
        if tags.get(tag):
            return f"{what} {tags[tag]}"
    return "manual run"


def promote(
    context: AssetExecutionContext,
    registry: ModelRegistry,
    challenger: ScoredModel,
    previous: str | None,
    gate: str,
    training_window: str,
) -> None:
    """Move @champion, tag both versions and write the audit record."""
    at = now_iso()

    def apply() -> None:
        registry.set_alias(CHAMPION, challenger.version)
        registry.set_version_tags(
            challenger.version,
            {PROMOTED_AT: at, PROMOTION_GATE: gate, **({PREVIOUS_CHAMPION: previous} if previous else {})},
        )

    change = ChampionChange(
        action=PROMOTION,
        version=challenger.version,
        previous_version=previous,
        at=at,
        reason=f"passed the gate at {context.partition_key}",
        requested_by=launched_by(context.run.tags),
        gate=gate,
        training_window=training_window,
        dagster_run_id=context.run_id,
    )
    record_champion_change(registry, change, context.asset_key.path[0], context.asset_key.to_user_string(), apply)


def build_evaluation_assets(spec: LoadedSpec) -> list[AssetsDefinition]:
    pipeline = spec.pipeline
    keys = spec.keys
    # The reports keep the store's layout under the profile's artifacts folder:
    # <artifacts>/<project>/evaluation_report/<partition>.html.
    reports = PartitionStore(root=str(spec.artifacts_folder().parent))
    validation = pipeline.validation
    gated = validation.run_mode != "disabled"
    blocking = validation.run_mode == "enabled"
    check_specs = [
        AssetCheckSpec(
            name=f"gate_{name}",
            asset=keys.evaluation_report,
            blocking=blocking,
            description=f"Promotion gate ({validation.run_mode}): {name.replace('_', ' ')}",
        )
        for name in (gate_check_names(validation) if gated else [])
    ]

    @asset(
        key=keys.evaluation_report,
        group_name=keys.group("training"),
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        code_version=EVALUATION_CODE_VERSION,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        ins={"trained_model": AssetIn(key=keys.trained_model), "features": training_window_input(spec)},
        check_specs=check_specs,
        # In staging/prod the training window's files live on the workspace's volume.
        required_resource_keys={"step_launcher", keys.registry_resource},
    )
    @transient_errors_only
    def evaluation_report(
        context: AssetExecutionContext,
        trained_model: TrainedModel,
        features: pd.DataFrame,
    ) -> Iterator[Output[EvaluationRecord] | AssetCheckResult]:
        """Challenger, champion and naive baseline scored on the same held-out test split."""
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        splits = split_chronologically(
            labelled_rows(features, pipeline.target_column), pipeline.split, pipeline.event_time
        )
        challenger_ref, champion_ref = trained_model.model, model_registry.version_for_alias(CHAMPION)
        window = window_of(context)
        evaluation = evaluate_challenger(
            splits, pipeline, spec.steps,
            ModelUnderTest(report.CHALLENGER, challenger_ref.version, model_registry.load_model(challenger_ref)),
            ModelUnderTest(report.CHAMPION, champion_ref.version, model_registry.load_model(champion_ref))
            if champion_ref else None,
            title=f"Evaluation of challenger v{challenger_ref.version} · {spec.name} · partition {context.partition_key}",
            facts=[("project", spec.name), ("training window", f"{window[0]} .. {window[1]}")],
        )
        html = report.html_report(evaluation.card)
        recorded = model_registry.record_evaluation(
            f"evaluate {context.partition_key}", run_tags(context, window), challenger_ref, evaluation, html,
            validation_status=validation_status(validation.run_mode, evaluation.gate_passed),
            # The evaluation run records a failed blocking gate as a FAILED MLflow run.
            fail_run=blocking and not evaluation.gate_passed,
        )
        report_path = reports.write_text(keys.evaluation_report, context.partition_key, ".html", html)
        record = evaluation_record(evaluation, challenger_ref, champion_ref, validation.run_mode, window)
        metadata = evaluation_metadata(evaluation, record, pipeline.metric, report_path, recorded)
        yield Output(record, metadata=metadata)
        yield from gate_check_results(evaluation.gate, blocking, validation.run_mode)

    @asset(
        key=keys.champion_model,
        group_name=keys.group("training"),
        kinds={"mlflow"},
        owners=OWNERS,
        code_version="2",
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        ins={"evaluation_report": AssetIn(key=keys.evaluation_report)},
        required_resource_keys={"step_launcher", keys.registry_resource},
    )
    @transient_errors_only
    def champion_model(
        context: AssetExecutionContext, evaluation_report: EvaluationRecord
    ) -> Output[ChampionRecord]:
        """Moves the registry's `champion` alias to the evaluated challenger when the gate (and the shadow rule, if set) allows."""
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        challenger = evaluation_report.challenger
        failed = [result.description for result in evaluation_report.failed]
        if blocking and failed:
            raise Failure(
                description=(
                    f"champion_model: version {challenger.version} of {challenger.name} "
                    f"was not promoted; the gate failed: " + "; ".join(failed)
                ),
                metadata={"model_version": challenger.version},
                allow_retries=False,
            )
        previous = model_registry.version_for_alias(CHAMPION)
        version, previous_version = challenger.version, previous.version if previous else None
        gate = evaluation_report.verdict()
        shadow_rule = None
        waits = spec.pipeline.shadow.promote_after_days
        if gated and waits and previous_version not in (None, version):
            assert previous_version is not None
            evidence = shadow_evidence(context.instance, keys.challenger_predictions, version, previous_version)
            shadow_rule = shadow_promotion_verdict(evidence, waits)
        # dry_run reports the shadow rule as it reports the gate, and promotes.
        promoted = shadow_rule is None or shadow_rule.allowed or not blocking
        if promoted and previous_version != version:
            promote(context, model_registry, challenger, previous_version, gate, evaluation_report.window_text())
        elif not promoted and shadow_rule is not None:
            # The challenger stays @challenger and is scored in shadow each day;
            # materializing this partition again promotes it once the evidence is there.
            context.log.info(f"champion_model: v{version} not promoted yet: {shadow_rule.description}")
        champion_version = version if promoted else previous_version
        record = ChampionRecord(
            name=challenger.name,
            # The champion after this step: the challenger, or the one it did not replace yet.
            version=champion_version,
            run_id=challenger.run_id if promoted else (previous.run_id if previous else None),
            challenger_version=version,
            previous_version=previous_version,
            promoted=promoted,
            run_mode=evaluation_report.run_mode,
            gate=gate,
            gate_warnings=tuple(failed),
            shadow_rule=shadow_rule.description if shadow_rule else None,
        )
        return Output(record, metadata={**champion_metadata(record), **history_metadata(model_registry)})

    return [evaluation_report, champion_model]
