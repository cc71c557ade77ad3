"""Task-aware metrics: what a model predicted, scored for regression, binary or multiclass
targets, and the naive baseline to compare it with. Pure functions, no I/O.

A classifier's predictions carry the class-probability matrix beside the labels, so the
ranking metrics (ROC AUC, average precision) and log loss see the probabilities while F1,
precision, recall and accuracy see the predicted labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from tabml_assets.spec import HIGHER_IS_BETTER, TASK_METRICS

if TYPE_CHECKING:
    from tabml_assets.steps import Metric

CLASSIFICATION_TASKS = ("binary", "multiclass")
# Chunks bound scoring's extra memory to one chunk's transformed matrix (as in ml/scoring.py).
PREDICT_CHUNK_ROWS = 250_000


@dataclass(frozen=True, eq=False)
class Predictions:
    """What a model predicted for a set of rows.

    `values` holds the regression predictions, or the predicted labels of a classifier.
    `probabilities` (classification only) is the n×k matrix of class probabilities, its columns
    in `classes` order. eq=False: numpy arrays have no single truth value to compare by.
    """

    values: np.ndarray
    probabilities: np.ndarray | None = None
    classes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.probabilities is None:
            if self.classes is not None:
                raise ValueError("Predictions: classes were given without probabilities")
            return
        if self.classes is None:
            raise ValueError("Predictions: probabilities were given without their classes")
        expected = (len(self.values), len(self.classes))
        if self.probabilities.ndim != 2 or self.probabilities.shape != expected:
            raise ValueError(
                f"Predictions: expected probabilities of shape {expected} (rows × classes "
                f"{list(self.classes)}), found {self.probabilities.shape}"
            )

    def __len__(self) -> int:
        return len(self.values)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² and MAPE (in percent; rows with a zero target are left out of MAPE)."""
    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"metrics: expected equal lengths, found {y_true.shape} and {y_pred.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("metrics: expected at least one row, found none")
    errors = y_pred - y_true
    ss_res = float(np.sum(errors**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    nonzero = y_true != 0
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        # A constant target has no variance to explain; 0 rather than a division by zero.
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
        "mape": (
            float(np.mean(np.abs(errors[nonzero] / y_true[nonzero])) * 100)
            if nonzero.any()
            else float("nan")
        ),
    }


def resolve_positive_class(classes: Sequence[Any], positive_class: Any = None) -> Any:
    """The binary target's positive class: `positive_class` when given (it must be one of
    `classes`); else True when the classes are booleans, else the last of the sorted classes
    (1 of 0/1, "yes" of "no"/"yes")."""
    labels = list(classes)
    if len(labels) != 2:
        raise ValueError(f"binary metrics: expected 2 classes, found {len(labels)}: {labels}")
    if positive_class is None:
        if all(isinstance(label, bool | np.bool_) for label in labels):
            return True
        return sorted(labels)[-1]
    for label in labels:
        if label == positive_class:
            return label
    raise ValueError(
        f"target.positive_class: expected one of the model's classes {labels}, "
        f"found {positive_class!r}"
    )


def _class_index(classes: Sequence[Any], label: Any) -> int:
    return next(i for i, c in enumerate(classes) if c == label)


def positive_class_probability(predictions: Predictions, positive_class: Any = None) -> np.ndarray:
    """The probability of the positive class for every row (binary predictions)."""
    probabilities, classes = _probabilities(predictions)
    positive = resolve_positive_class(classes, positive_class)
    return probabilities[:, _class_index(classes, positive)]


def _probabilities(predictions: Predictions) -> tuple[np.ndarray, tuple[Any, ...]]:
    if predictions.probabilities is None or predictions.classes is None:
        raise ValueError(
            "classification metrics: expected predictions with class probabilities, found "
            "labels only (was the model a regressor?)"
        )
    return np.asarray(predictions.probabilities, dtype="float64"), predictions.classes


def _check_rows(y_true: np.ndarray, predictions: Predictions) -> None:
    if len(y_true) != len(predictions):
        raise ValueError(
            f"metrics: expected one prediction per row ({len(y_true)}), found {len(predictions)}"
        )
    if len(y_true) == 0:
        raise ValueError("metrics: expected at least one row, found none")


def _check_labels_known(y_true: np.ndarray, classes: Sequence[Any]) -> None:
    unknown = [label for label in pd.unique(y_true) if not any(label == c for c in classes)]
    if unknown:
        raise ValueError(
            f"classification metrics: expected every true label among the model's classes "
            f"{list(classes)}, found {sorted(map(str, unknown))} as well (a class the training "
            "split never saw)"
        )


def _ranking_score(score: Any, is_positive: np.ndarray, scores: np.ndarray) -> float:
    # Ranking metrics are undefined unless both outcomes occur; nan instead of sklearn's
    # warning or error, so a test split with one class still gets its other metrics.
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(score(is_positive, scores))


def _log_loss(y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[Any]) -> float:
    # sklearn reads the probability columns in sorted label order; ours follow `classes`.
    order = sorted(range(len(classes)), key=lambda i: classes[i])
    labels = [classes[i] for i in order]
    return float(log_loss(y_true, probabilities[:, order], labels=labels))


def binary_metrics(
    y_true: np.ndarray, predictions: Predictions, positive_class: Any = None
) -> dict[str, float]:
    """ROC AUC, average precision (pr_auc) and log loss from the positive class's probability;
    F1, precision, recall and accuracy from the predicted labels."""
    y_true = np.asarray(y_true)
    _check_rows(y_true, predictions)
    probabilities, classes = _probabilities(predictions)
    _check_labels_known(y_true, classes)
    positive = resolve_positive_class(classes, positive_class)
    scores = probabilities[:, _class_index(classes, positive)]
    is_positive = y_true == positive
    predicted_positive = np.asarray(predictions.values) == positive
    return {
        "roc_auc": _ranking_score(roc_auc_score, is_positive, scores),
        "pr_auc": _ranking_score(average_precision_score, is_positive, scores),
        "log_loss": _log_loss(y_true, probabilities, classes),
        "f1": float(f1_score(is_positive, predicted_positive, zero_division=0)),
        "precision": float(precision_score(is_positive, predicted_positive, zero_division=0)),
        "recall": float(recall_score(is_positive, predicted_positive, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predictions.values)),
    }


def _macro_one_vs_rest(
    score: Any, y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[Any]
) -> float:
    # Per class, that class against the rest; the mean over the classes for which the score is
    # defined (present in the rows, and not every row). With every class present this is
    # sklearn's macro one-vs-rest average; a class missing from a test split is left out.
    values = [
        _ranking_score(score, y_true == label, probabilities[:, index])
        for index, label in enumerate(classes)
    ]
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def multiclass_metrics(y_true: np.ndarray, predictions: Predictions) -> dict[str, float]:
    """The binary metrics' names with macro averages: ROC AUC one-vs-rest, average precision
    over one-hot labels, log loss over all classes, and macro F1, precision and recall."""
    y_true = np.asarray(y_true)
    _check_rows(y_true, predictions)
    probabilities, classes = _probabilities(predictions)
    _check_labels_known(y_true, classes)
    labels = np.asarray(predictions.values)
    return {
        "roc_auc": _macro_one_vs_rest(roc_auc_score, y_true, probabilities, classes),
        "pr_auc": _macro_one_vs_rest(average_precision_score, y_true, probabilities, classes),
        "log_loss": _log_loss(y_true, probabilities, classes),
        "f1": float(f1_score(y_true, labels, average="macro", zero_division=0)),
        "precision": float(precision_score(y_true, labels, average="macro", zero_division=0)),
        "recall": float(recall_score(y_true, labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, labels)),
    }


def _custom_inputs(
    metric: Metric,
    task: str,
    y_true: np.ndarray,
    predictions: Predictions,
    positive_class: Any,
) -> tuple[np.ndarray, np.ndarray]:
    if metric.uses != "probability" or task == "regression":
        return y_true, np.asarray(predictions.values)
    probabilities, classes = _probabilities(predictions)
    if task == "binary":
        # 1 for the positive class, so sklearn's probability metrics work with any labels.
        positive = resolve_positive_class(classes, positive_class)
        is_positive = (y_true == positive).astype("int64")
        return is_positive, probabilities[:, _class_index(classes, positive)]
    # The column index of each row's class, matching the probability matrix.
    index = pd.Series(y_true).map({label: i for i, label in enumerate(classes)})
    return index.to_numpy(dtype="int64"), probabilities


def metrics_for(
    task: str,
    y_true: np.ndarray,
    predictions: Predictions,
    positive_class: Any = None,
    custom: Mapping[str, Metric] | None = None,
) -> dict[str, float]:
    """The task's built-in metrics (spec.TASK_METRICS) and the steps module's custom ones.

    A custom metric is called as `function(y_true, y)`. With `uses="prediction"` (or any
    regression metric) `y_true` are the true values or labels and `y` the predicted ones. With
    `uses="probability"`, `y_true` is encoded to match the probabilities: binary gets 1 for the
    positive class and 0 otherwise with `y` the positive class's probability; multiclass gets
    each row's class index into `predictions.classes` with `y` the probability matrix.
    """
    if task not in TASK_METRICS:
        raise ValueError(f"metrics: expected a task among {list(TASK_METRICS)}, found {task!r}")
    y_true = np.asarray(y_true)
    if task == "regression":
        results = regression_metrics(y_true, np.asarray(predictions.values))
    elif task == "binary":
        results = binary_metrics(y_true, predictions, positive_class)
    else:
        results = multiclass_metrics(y_true, predictions)
    for name, metric in (custom or {}).items():
        if name in results:
            raise ValueError(f"custom metric {name!r}: a built-in {task} metric has that name")
        truth, predicted = _custom_inputs(metric, task, y_true, predictions, positive_class)
        try:
            results[name] = float(metric.function(truth, predicted))
        except Exception as exc:
            raise ValueError(
                f"custom metric {name!r} ({metric.uses}): expected a number from "
                f"{getattr(metric.function, '__name__', metric.function)!r}, "
                f"found {type(exc).__name__}: {exc}"
            ) from exc
    return results


def higher_is_better(metric: str, custom: Mapping[str, Metric] | None = None) -> bool:
    """Whether a larger value of `metric` (built-in or custom) is the better one."""
    if custom and metric in custom:
        return custom[metric].greater_is_better
    if metric not in HIGHER_IS_BETTER:
        known = [*HIGHER_IS_BETTER, *(custom or {})]
        raise ValueError(f"metrics: expected a metric among {known}, found {metric!r}")
    return HIGHER_IS_BETTER[metric]


def baseline_predictions(
    task: str, train_target: pd.Series, rows: int, classes: Sequence[Any] | None = None
) -> Predictions:
    """The naive baseline for `rows` rows: the training mean (regression), or the class prior
    (classification: every row gets the training class frequencies as its probabilities, and
    the majority class as its label; ties go to the first class in `classes`).

    `classes` should be the model's, so the baseline's probability columns line up with its;
    default: the sorted labels of the training target.
    """
    target = train_target.dropna()
    if len(target) == 0:
        raise ValueError("baseline: expected a training target with values, found none")
    if task == "regression":
        return Predictions(np.full(rows, float(target.astype("float64").mean())))
    if task not in CLASSIFICATION_TASKS:
        raise ValueError(f"baseline: expected a task among {list(TASK_METRICS)}, found {task!r}")
    labels = tuple(classes) if classes is not None else tuple(sorted(pd.unique(target).tolist()))
    if not labels:
        raise ValueError("baseline: expected at least one class, found none")
    counts = target.value_counts()
    unknown = [label for label in counts.index if not any(label == c for c in labels)]
    if unknown:
        raise ValueError(
            f"baseline: expected training labels among the classes {list(labels)}, "
            f"found {sorted(map(str, unknown))} as well"
        )
    frequencies = np.array([counts.get(label, 0) for label in labels], dtype="float64")
    prior = frequencies / frequencies.sum()
    majority = labels[int(np.argmax(prior))]
    values = np.full(rows, majority, dtype=np.asarray(labels).dtype)
    return Predictions(values, np.tile(prior, (rows, 1)), labels)


def baseline_description(task: str) -> str:
    """What the naive baseline predicts, for the step card."""
    return "training mean" if task == "regression" else "class prior (majority class)"


def _is_classifier(model: Any) -> bool:
    return hasattr(model, "predict_proba") and hasattr(model, "classes_")


def predict(
    model: Any, inputs: pd.DataFrame, task: str, chunk_rows: int = PREDICT_CHUNK_ROWS
) -> Predictions:
    """A fitted model's predictions for `inputs`, in chunks of `chunk_rows` rows.

    Classifiers: `predict_proba`, columns in `model.classes_` order, and the label of each row
    is its most probable class (so labels and probabilities never disagree). Regressors:
    `predict` as float64.
    """
    if task == "regression":
        if len(inputs) == 0:
            return Predictions(np.empty(0, dtype="float64"))
        parts = [
            np.asarray(model.predict(inputs.iloc[start : start + chunk_rows]), dtype="float64")
            for start in range(0, len(inputs), chunk_rows)
        ]
        return Predictions(np.concatenate(parts))
    if task not in CLASSIFICATION_TASKS:
        raise ValueError(f"predict: expected a task among {list(TASK_METRICS)}, found {task!r}")
    if not _is_classifier(model):
        raise ValueError(
            f"predict: a {task} target needs a classifier with predict_proba and classes_, "
            f"found {type(model).__name__}"
        )
    class_array = np.asarray(model.classes_)
    # Python scalars, not numpy ones, so classes serialize to JSON and MLflow tags as-is.
    classes = tuple(class_array.tolist())
    if len(inputs) == 0:
        return Predictions(class_array[:0], np.empty((0, len(classes))), classes)
    probabilities = np.concatenate(
        [
            np.asarray(model.predict_proba(inputs.iloc[start : start + chunk_rows]), float)
            for start in range(0, len(inputs), chunk_rows)
        ]
    )
    # Float32 probabilities (XGBoost's) miss a row sum of 1 by ~1e-7, which sklearn's log loss
    # warns about; rescaled in float64 they sum to 1 and rank the same.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return Predictions(class_array[np.argmax(probabilities, axis=1)], probabilities, classes)
