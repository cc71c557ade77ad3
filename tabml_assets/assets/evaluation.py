"""evaluation_report and champion_model: the held-out evaluation, the gate and the promotion."""


from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
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

from tabml_assets.assets.common import OWNERS, daily_partitions
from tabml_assets.assets.training import run_tags, training_window_input, window_of
from tabml_assets.ml import report
from tabml_assets.ml.evaluation import (
    GateResult,
    evaluate_gate,
    gate_check_names,
    regression_metrics,
)
from tabml_assets.ml.schema import PICKUP
from tabml_assets.ml.training import model_inputs, naive_predictions, split_chronologically
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry, ModelVersionRef
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import atomic_write_bytes, safe_segment
from tabml_assets.spec import LoadedSpec, PipelineSpec

EVALUATION_CODE_VERSION = "2"
REPORT_ARTIFACT = "evaluation_report.html"


def build_step_card(
    pipeline: PipelineSpec,
    partition_key: str,
    window: tuple[str, str],
    scores: list[report.ModelScore],
    predictions: dict[str, np.ndarray],
    test: pd.DataFrame,
    model: Any,
    gate: list[GateResult],
) -> report.StepCard:
    """The evaluation's step card: verdict, key facts, metrics with deltas, gate and plots."""
    challenger, champion = scores[0], next((s for s in scores if s.label == report.CHAMPION), None)
    y_test = test[pipeline.target_column].to_numpy()
    importance = report.feature_importance(model, model_inputs(test, pipeline), y_test)
    hours = pd.to_datetime(test[PICKUP]).dt.hour.to_numpy()
    run_mode = pipeline.validation.run_mode
    return report.StepCard(
        title=f"Evaluation of {challenger.name} · partition {partition_key}",
        verdict=report.verdict(run_mode, gate, challenger.name, champion.name if champion else None),
        facts=[
            ("training window", f"{window[0]} .. {window[1]}"),
            ("test rows", str(len(y_test))),
            ("target", pipeline.target_column),
            ("estimator", pipeline.estimator.class_name),
            ("gate run mode", run_mode),
            ("champion", champion.name if champion else "none yet"),
        ],
        scores=scores,
        gate=gate,
        plots=report.evaluation_plots(y_test, predictions, hours, importance, pipeline.target_column),
    )


def build_evaluation_assets(spec: LoadedSpec) -> list[AssetsDefinition]:
    pipeline = spec.pipeline
    report_folder = Path(spec.resolve_local(spec.profile.storage.artifacts)) / "evaluation_report"
    validation = pipeline.validation
    gated = validation.run_mode != "disabled"
    blocking = validation.run_mode == "enabled"
    check_specs = [
        AssetCheckSpec(
            name=f"gate_{name}",
            asset="evaluation_report",
            blocking=blocking,
            description=f"Promotion gate ({validation.run_mode}): {name.replace('_', ' ')}",
        )
        for name in (gate_check_names(validation) if gated else [])
    ]

    @asset(
        name="evaluation_report",
        group_name="training",
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        code_version=EVALUATION_CODE_VERSION,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        ins={"trained_model": AssetIn(), "features": training_window_input(pipeline)},
        check_specs=check_specs,
        # In staging/prod the training window's files live on the workspace's volume.
        required_resource_keys={"step_launcher", "model_registry"},
    )
    @transient_errors_only
    def evaluation_report(
        context: AssetExecutionContext,
        trained_model: dict[str, Any],
        features: pd.DataFrame,
    ) -> Iterator[Output[dict[str, Any]] | AssetCheckResult]:
        """Challenger, champion and naive baseline scored on the same held-out test split."""
        model_registry: ModelRegistry = context.resources.model_registry
        splits = split_chronologically(features, pipeline.split)
        test_inputs = model_inputs(splits.test, pipeline)
        y_test = splits.test[pipeline.target_column].to_numpy()
        challenger_ref = ModelVersionRef(**{k: v for k, v in trained_model["model"].items() if k != "uri"})
        challenger_model = model_registry.load_model(challenger_ref)
        predictions = {report.CHALLENGER: challenger_model.predict(test_inputs)}
        champion_ref = model_registry.version_for_alias(CHAMPION)
        if champion_ref is not None:
            predictions[report.CHAMPION] = model_registry.load_model(champion_ref).predict(test_inputs)
        predictions[report.BASELINE] = naive_predictions(splits.train[pipeline.target_column], len(y_test))
        challenger = regression_metrics(y_test, predictions[report.CHALLENGER])
        champion = regression_metrics(y_test, predictions[report.CHAMPION]) if champion_ref else None
        baseline = regression_metrics(y_test, predictions[report.BASELINE])
        gate = evaluate_gate(validation, pipeline.primary_metric, challenger, champion) if gated else []
        gate_passed = all(result.passed for result in gate)
        window = window_of(context)
        scores = [report.ModelScore(report.CHALLENGER, challenger, challenger_ref.version)]
        if champion_ref is not None and champion is not None:
            scores.append(report.ModelScore(report.CHAMPION, champion, champion_ref.version))
        scores.append(report.ModelScore(report.BASELINE, baseline))
        card = build_step_card(
            pipeline, context.partition_key, window, scores, predictions, splits.test, challenger_model, gate
        )
        html = report.html_report(card)
        with model_registry.run(f"evaluate {context.partition_key}", run_tags(context, "evaluation_report", window)) as run:
            mlflow.set_tags({"tabml.challenger_version": challenger_ref.version, "tabml.gate": "passed" if gate_passed else "failed"})
            mlflow.log_metrics({f"challenger_test_{k}": v for k, v in challenger.items()})
            mlflow.log_metrics({f"baseline_test_{k}": v for k, v in baseline.items()})
            if champion is not None:
                mlflow.log_metrics({f"champion_test_{k}": v for k, v in champion.items()})
            mlflow.log_dict({"gate": [g.as_dict() for g in gate]}, "gate.json")
            mlflow.log_text(html, REPORT_ARTIFACT)
            evaluation_run_id = run.info.run_id
            report_artifact_uri = f"{run.info.artifact_uri}/{REPORT_ARTIFACT}"
            if blocking and not gate_passed:
                # The evaluation run records the failed gate as a FAILED MLflow run.
                mlflow.end_run("FAILED")
        assert challenger_ref.run_id is not None, "trained_model records the run of log_and_register"
        model_registry.log_metrics_to_run(challenger_ref.run_id, {f"test_{k}": v for k, v in challenger.items()})
        model_registry.client().set_model_version_tag(
            challenger_ref.name, challenger_ref.version, "validation_status",
            ("passed" if gate_passed else "failed") if gated else "not_validated",
        )
        record = {
            "challenger": {**challenger_ref.as_dict(), "metrics": challenger},
            "champion": {**champion_ref.as_dict(), "metrics": champion} if champion_ref else None,
            "baseline": {"kind": "training mean", "metrics": baseline},
            "test_rows": len(y_test),
            "run_mode": validation.run_mode,
            "gate": [g.as_dict() for g in gate],
            "gate_passed": gate_passed,
        }
        report_path = report_folder / f"{safe_segment(context.partition_key, 'partition key')}.html"
        atomic_write_bytes(report_path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
        metadata: dict[str, Any] = {
            # Short enough for the UI to show inline; the step card opens from its row.
            "metrics": MetadataValue.md(report.metrics_table(scores)),
            "step_card": MetadataValue.md(report.step_card_markdown(card)),
            "report_html": MetadataValue.path(str(report_path)),
            "report_mlflow_artifact": MetadataValue.text(report_artifact_uri),
            "evaluation_mlflow_run_id": evaluation_run_id,
            "challenger_version": challenger_ref.version,
            "champion_version": champion_ref.version if champion_ref else "none",
            "rmse_vs_baseline": MetadataValue.float(challenger["rmse"] / baseline["rmse"]),
            "gate_passed": gate_passed,
            "test_rows": MetadataValue.int(len(y_test)),
            **{f"challenger_{k}": MetadataValue.float(v) for k, v in challenger.items()},
            **{f"baseline_{k}": MetadataValue.float(v) for k, v in baseline.items()},
            **({f"champion_{k}": MetadataValue.float(v) for k, v in champion.items()} if champion else {}),
        }
        yield Output(record, metadata=metadata)
        for result in gate:
            yield AssetCheckResult(
                check_name=f"gate_{result.check_name}",
                passed=result.passed,
                severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
                description=result.description,
                metadata={
                    "metric": result.metric,
                    "value": MetadataValue.float(result.value),
                    "threshold": MetadataValue.float(result.threshold),
                    "comparison": result.comparison,
                    "run_mode": validation.run_mode,
                },
            )

    @asset(
        name="champion_model",
        group_name="training",
        kinds={"mlflow"},
        owners=OWNERS,
        code_version="1",
        retry_policy=build_retry_policy(spec.pipeline.retries),
        partitions_def=daily_partitions(pipeline),
        required_resource_keys={"step_launcher", "model_registry"},
    )
    @transient_errors_only
    def champion_model(
        context: AssetExecutionContext, evaluation_report: dict[str, Any]
    ) -> Output[dict[str, Any]]:
        """Moves the registry's `champion` alias to the evaluated challenger when the gate passed."""
        model_registry: ModelRegistry = context.resources.model_registry
        challenger = evaluation_report["challenger"]
        failed = [g["description"] for g in evaluation_report["gate"] if not g["passed"]]
        if blocking and failed:
            raise Failure(
                description=(
                    f"champion_model: version {challenger['version']} of {challenger['name']} "
                    f"was not promoted; the gate failed: " + "; ".join(failed)
                ),
                metadata={"model_version": challenger["version"]},
                allow_retries=False,
            )
        previous = model_registry.version_for_alias(CHAMPION)
        model_registry.set_alias(CHAMPION, challenger["version"])
        record = {
            "name": challenger["name"],
            "version": challenger["version"],
            "run_id": challenger["run_id"],
            "previous_version": previous.version if previous else None,
            "run_mode": evaluation_report["run_mode"],
            "gate_warnings": failed,
        }
        return Output(
            record,
            metadata={
                "model_name": challenger["name"],
                "model_version": challenger["version"],
                "previous_champion_version": previous.version if previous else "none",
                "mlflow_run_id": challenger["run_id"],
                "gate_warnings": MetadataValue.json(failed),
            },
        )

    return [evaluation_report, champion_model]
