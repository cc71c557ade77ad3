"""Evaluate a challenger against the champion and a naive baseline on one held-out test split.

A pure function over frames and fitted models: predictions, metrics for the task, the promotion
gate and the step card. The `evaluation_report` asset only loads the models and records what
this returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabml_assets.ml import report
from tabml_assets.ml.classification_plots import classification_plots
from tabml_assets.ml.evaluation import GateResult, deciding_rule, evaluate_gate
from tabml_assets.ml.metrics import (
    Predictions,
    baseline_description,
    baseline_predictions,
    higher_is_better,
    metrics_for,
    predict,
)
from tabml_assets.ml.training import Splits, model_inputs, target_values
from tabml_assets.spec import PipelineSpec
from tabml_assets.steps import ProjectSteps


@dataclass(frozen=True)
class ModelUnderTest:
    """A registered model to score on the test split: its role, version and fitted pipeline."""

    label: str  # report.CHALLENGER or report.CHAMPION
    version: str
    model: Any


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What one evaluation found: every model's test metrics, the gate and the step card."""

    metrics: dict[str, dict[str, float]]  # report.CHALLENGER / CHAMPION / BASELINE -> metrics
    predictions: dict[str, Predictions]
    gate: list[GateResult]
    card: report.StepCard
    test_rows: int
    baseline: str

    @property
    def gate_passed(self) -> bool:
        return all(result.passed for result in self.gate)

    @property
    def challenger(self) -> dict[str, float]:
        return self.metrics[report.CHALLENGER]

    @property
    def champion(self) -> dict[str, float] | None:
        return self.metrics.get(report.CHAMPION)

    @property
    def baseline_metrics(self) -> dict[str, float]:
        return self.metrics[report.BASELINE]


def primary_metric_scorer(
    pipeline: PipelineSpec, steps: ProjectSteps
) -> Callable[[Any, pd.DataFrame, np.ndarray], float]:
    """sklearn-style scorer (higher is better) of the primary metric, for permutation importance."""
    metric = pipeline.metric
    sign = 1.0 if higher_is_better(metric, steps.metrics) else -1.0

    def score(model: Any, inputs: pd.DataFrame, y_true: np.ndarray) -> float:
        predictions = predict(model, inputs, pipeline.task)
        values = metrics_for(pipeline.task, y_true, predictions, pipeline.target.positive_class, steps.metrics)
        return sign * values[metric]

    return score


def evaluate_challenger(
    splits: Splits,
    pipeline: PipelineSpec,
    steps: ProjectSteps,
    challenger: ModelUnderTest,
    champion: ModelUnderTest | None,
    title: str,
    facts: list[tuple[str, str]],
) -> Evaluation:
    """Score challenger, champion and baseline on `splits.test`; gate; draw the step card."""
    task = pipeline.task
    custom = steps.metrics
    test_inputs = model_inputs(splits.test, pipeline)
    y_test = target_values(splits.test, pipeline)
    models = [challenger, *([champion] if champion else [])]
    predictions = {m.label: predict(m.model, test_inputs, task) for m in models}
    classes = predictions[report.CHALLENGER].classes
    predictions[report.BASELINE] = baseline_predictions(
        task, splits.train[pipeline.target_column], len(y_test), classes
    )
    positive = pipeline.target.positive_class
    metrics = {label: metrics_for(task, y_test, p, positive, custom) for label, p in predictions.items()}
    validation = pipeline.validation
    gate = (
        evaluate_gate(
            validation, pipeline.metric, metrics[report.CHALLENGER], metrics.get(report.CHAMPION),
            lambda m: higher_is_better(m, custom),
        )
        if validation.run_mode != "disabled"
        else []
    )
    scores = [report.ModelScore(m.label, metrics[m.label], m.version) for m in models]
    scores.append(report.ModelScore(report.BASELINE, metrics[report.BASELINE]))
    importance = report.feature_importance(
        challenger.model, test_inputs, y_test,
        scoring=primary_metric_scorer(pipeline, steps), metric=pipeline.metric,
    )
    if task == "regression":
        hours = pd.to_datetime(splits.test[pipeline.event_time]).dt.hour.to_numpy()
        plots = report.evaluation_plots(
            y_test, {label: p.values for label, p in predictions.items()}, hours, importance,
            pipeline.target_column, pipeline.event_time,
        )
    else:
        balance = {
            "train": target_values(splits.train, pipeline),
            "test": y_test,
            "predicted on test": predictions[report.CHALLENGER].values,
        }
        plots = classification_plots(y_test, predictions, positive, balance, importance)
    champion_name = f"{report.CHAMPION} v{champion.version}" if champion else None
    rule = deciding_rule(gate, champion is not None) if validation.run_mode != "disabled" else "no gate"
    waits = pipeline.shadow.promote_after_days
    shadow_note = (
        f" Promotion waits for {waits} shadow day(s) with labels in which it is no worse than the champion."
        if waits and champion is not None and all(g.passed for g in gate)
        else ""
    )
    card = report.StepCard(
        title=title,
        verdict=report.verdict(
            validation.run_mode, gate, f"{report.CHALLENGER} v{challenger.version}", champion_name
        ) + (f" Decided by: {rule}." if validation.run_mode != "disabled" else "") + shadow_note,
        facts=[
            *facts,
            ("decided by", rule),
            ("test rows", str(len(y_test))),
            ("target", f"{pipeline.target_column} ({task})"),
            ("estimator", pipeline.estimator.class_name),
            ("primary metric", pipeline.metric),
            ("gate run mode", validation.run_mode),
            ("champion", champion_name or "none yet"),
            ("baseline", baseline_description(task)),
        ],
        scores=scores,
        gate=gate,
        plots=plots,
        higher_is_better={name: metric.greater_is_better for name, metric in custom.items()},
    )
    return Evaluation(
        metrics=metrics,
        predictions=predictions,
        gate=gate,
        card=card,
        test_rows=len(y_test),
        baseline=baseline_description(task),
    )
