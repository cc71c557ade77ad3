"""Shadow scoring: the challenger scores the rows the champion scored, and the two are compared
by day. Pure functions over frames and fitted models; the `challenger_predictions` asset
streams partitions through them and records what they return.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tabml_assets.ml.metrics import Predictions, metrics_for, positive_class_probability, predict
from tabml_assets.ml.scoring import PREDICTION_COLUMN, PROBABILITY_COLUMN, probability_column
from tabml_assets.ml.training import label_array

if TYPE_CHECKING:
    from tabml_assets.steps import Metric

CHAMPION_PREFIX = "champion_"
CHALLENGER_PREFIX = "challenger_"
ABSOLUTE_DIFFERENCE = "absolute_difference"
LABELS_AGREE = "labels_agree"
PROBABILITY_DIFFERENCE = "probability_difference"


def agreement_columns(task: str) -> tuple[str, ...]:
    """The per-row agreement columns whose means describe a day."""
    return (ABSOLUTE_DIFFERENCE,) if task == "regression" else (LABELS_AGREE, PROBABILITY_DIFFERENCE)


def shadow_frame(
    scored: pd.DataFrame,
    model: Any,
    feature_columns: list[str],
    keep_columns: list[str],
    challenger_version: str,
    *,
    task: str = "regression",
    positive_class: object = None,
) -> pd.DataFrame:
    """The champion's scored rows (a batch_predictions batch) beside the challenger's scores.

    Keeps `keep_columns` (event time, unique key, target), the champion's prediction (and class
    probabilities) as `champion_*`, the challenger's as `challenger_*`, and per row how far they
    are apart: `absolute_difference` for regression; `labels_agree` (1/0) and
    `probability_difference` (binary: of the positive class; multiclass: total variation,
    half the summed absolute differences) for classification.
    """
    missing = [c for c in [*feature_columns, PREDICTION_COLUMN, "model_version"] if c not in scored.columns]
    if missing:
        raise ValueError(
            f"shadow scoring: batch_predictions rows lack {missing}; expected the features, "
            f"`{PREDICTION_COLUMN}` and `model_version` (found {list(scored.columns)})"
        )
    out = scored[[c for c in dict.fromkeys(keep_columns) if c in scored.columns]].copy()
    out[f"{CHAMPION_PREFIX}version"] = scored["model_version"].astype("string")
    out[f"{CHALLENGER_PREFIX}version"] = pd.Series(challenger_version, index=scored.index, dtype="string")
    predictions = predict(model, scored[feature_columns], task)
    out[f"{CHAMPION_PREFIX}{PREDICTION_COLUMN}"] = scored[PREDICTION_COLUMN].to_numpy()
    out[f"{CHALLENGER_PREFIX}{PREDICTION_COLUMN}"] = predictions.values
    if task == "regression":
        out[ABSOLUTE_DIFFERENCE] = np.abs(
            predictions.values - scored[PREDICTION_COLUMN].to_numpy(dtype="float64")
        )
        return out
    assert predictions.probabilities is not None and predictions.classes is not None
    champion_columns = [probability_column(label) for label in predictions.classes]
    absent = [c for c in champion_columns if c not in scored.columns]
    if absent:
        raise ValueError(
            f"shadow scoring: the challenger knows classes {list(predictions.classes)}, but the "
            f"champion's predictions lack {absent}; found {list(scored.columns)}"
        )
    champion_probabilities = scored[champion_columns].to_numpy(dtype="float64")
    for index, column in enumerate(champion_columns):
        out[f"{CHAMPION_PREFIX}{column}"] = champion_probabilities[:, index]
        out[f"{CHALLENGER_PREFIX}{column}"] = predictions.probabilities[:, index]
    out[LABELS_AGREE] = (
        scored[PREDICTION_COLUMN].to_numpy() == np.asarray(predictions.values)
    ).astype("float64")
    if task == "binary":
        challenger_positive = positive_class_probability(predictions, positive_class)
        champion_positive = scored[PROBABILITY_COLUMN].to_numpy(dtype="float64")
        out[PROBABILITY_DIFFERENCE] = np.abs(challenger_positive - champion_positive)
    else:
        out[PROBABILITY_DIFFERENCE] = 0.5 * np.abs(predictions.probabilities - champion_probabilities).sum(axis=1)
    return out


@dataclass(frozen=True)
class ShadowDay:
    """One day scored by champion and challenger: how alike they were, and how right."""

    rows: int
    labelled_rows: int
    agreement: dict[str, float]  # mean of each agreement column
    champion_metrics: dict[str, float]  # realized on the day's labelled rows; empty without labels
    challenger_metrics: dict[str, float]
    # The primary metric says the challenger was no worse; None without labels (or undefined).
    challenger_no_worse: bool | None


def _predictions_of(frame: pd.DataFrame, prefix: str, task: str, classes: Sequence[Any]) -> Predictions:
    values = frame[f"{prefix}{PREDICTION_COLUMN}"].to_numpy()
    if task == "regression":
        return Predictions(values.astype("float64"))
    columns = [f"{prefix}{probability_column(label)}" for label in classes]
    return Predictions(values, frame[columns].to_numpy(dtype="float64"), tuple(classes))


def no_worse(
    challenger: float, champion: float, higher_is_better: bool, tolerance_pct: float
) -> bool | None:
    """The challenger's realized metric within `tolerance_pct` percent of the champion's."""
    if not (math.isfinite(challenger) and math.isfinite(champion)):
        return None
    slack = abs(champion) * tolerance_pct / 100
    return challenger >= champion - slack if higher_is_better else challenger <= champion + slack


def compare_day(
    frame: pd.DataFrame,
    target: str,
    task: str,
    classes: Sequence[Any] | None,
    primary_metric: str,
    higher_is_better: bool,
    tolerance_pct: float = 0.0,
    positive_class: object = None,
    custom: Mapping[str, Metric] | None = None,
) -> ShadowDay:
    """Agreement over every row of a shadow partition; realized metrics where labels arrived."""
    agreement = {c: float(frame[c].mean()) if len(frame) else float("nan") for c in agreement_columns(task)}
    labelled = frame[frame[target].notna()] if target in frame.columns else frame.iloc[:0]
    if len(labelled) == 0:
        return ShadowDay(len(frame), 0, agreement, {}, {}, None)
    truth = labelled[target].to_numpy(dtype="float64") if task == "regression" else label_array(labelled[target])
    known = list(classes or ())
    champion = metrics_for(task, truth, _predictions_of(labelled, CHAMPION_PREFIX, task, known), positive_class, custom)
    challenger = metrics_for(task, truth, _predictions_of(labelled, CHALLENGER_PREFIX, task, known), positive_class, custom)
    verdict = no_worse(challenger[primary_metric], champion[primary_metric], higher_is_better, tolerance_pct)
    return ShadowDay(len(frame), len(labelled), agreement, champion, challenger, verdict)


@dataclass(frozen=True)
class ShadowEvidence:
    """The shadow record of one challenger against one champion, as the N-day rule reads it."""

    day: str
    challenger_no_worse: bool | None  # None: no labels that day


@dataclass(frozen=True)
class ShadowVerdict:
    allowed: bool
    description: str


def shadow_promotion_verdict(evidence: Sequence[ShadowEvidence], needed: int) -> ShadowVerdict:
    """Promote only when the latest `needed` shadow days with labels all found it no worse."""
    judged = sorted((e for e in evidence if e.challenger_no_worse is not None), key=lambda e: e.day)
    latest = judged[-needed:]
    worse = [e.day for e in latest if not e.challenger_no_worse]
    if len(latest) < needed:
        return ShadowVerdict(
            False,
            f"waiting for shadow evidence: {len(latest)} of {needed} shadow day(s) with labels"
            + (f", worse on {', '.join(worse)}" if worse else ""),
        )
    if worse:
        return ShadowVerdict(
            False,
            f"the challenger was worse than the champion on realized labels on {', '.join(worse)} "
            f"(of the latest {needed} shadow days with labels)",
        )
    days = ", ".join(e.day for e in latest)
    return ShadowVerdict(True, f"no worse than the champion on {needed} shadow day(s) with labels: {days}")
