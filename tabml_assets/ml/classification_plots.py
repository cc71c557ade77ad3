"""The evaluation step card's plots for classification targets: confusion matrix, ROC and
precision-recall curves, calibration and class balance. Pure functions: labels and probabilities
in, `report.Plot`s (PNG bytes) out, drawn like ml/report.py's on bare Agg figures.

Binary curves compare every model given (challenger, champion, class-prior baseline) on the
positive class's probability; multiclass curves show the challenger one class against the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    auc,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from tabml_assets.ml.metrics import Predictions, positive_class_probability, resolve_positive_class
from tabml_assets.ml.report import (
    CHALLENGER,
    MODEL_COLOURS,
    Plot,
    _check_lengths,
    _new_axes,
    _png,
    plot_feature_importance,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Beyond this many classes, per-class curves and bars keep the most frequent ones legible.
MAX_CLASSES_SHOWN = 10
CALIBRATION_BINS = 10


def _both_outcomes(is_positive: np.ndarray, what: str) -> None:
    if is_positive.all() or not is_positive.any():
        raise ValueError(
            f"report: {what} needs test rows of both the class and the rest, found only "
            f"{'the class' if is_positive.any() else 'the rest'}"
        )


def _model_colour(name: str) -> str | None:
    # Unnamed models take matplotlib's colour cycle.
    return MODEL_COLOURS.get(name)


def _class_ticks(set_ticks: Any, positions: Any, names: list[str]) -> None:
    # Slanted when several class names would otherwise run into each other.
    slanted = len(names) > 4
    set_ticks(positions, names, rotation=45 if slanted else 0, ha="right" if slanted else "center")


def _most_frequent(y_true: np.ndarray, classes: Sequence[Any], limit: int) -> list[Any]:
    counts = pd.Series(y_true).value_counts()
    present = [c for c in classes if counts.get(c, 0) > 0]
    return sorted(present, key=lambda c: -int(counts.get(c, 0)))[:limit]


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any]) -> Plot:
    """Test rows counted by actual class (rows) and predicted class (columns)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_lengths(y_true, predictions=y_pred)
    # A true class the model never learned still gets its row, so no test row goes uncounted.
    unseen = [v for v in pd.unique(y_true) if not any(v == c for c in classes)]
    labels = [*classes, *unseen]
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    figure, axes = _new_axes("Confusion matrix (challenger)")
    axes.grid(False)
    axes.imshow(counts, cmap="Blues")
    names = [str(label) for label in labels]
    _class_ticks(axes.set_xticks, range(len(names)), names)
    axes.set_yticks(range(len(names)), names)
    if len(names) <= 12:
        threshold = counts.max() / 2
        for row in range(len(names)):
            for column in range(len(names)):
                axes.text(
                    column, row, str(counts[row, column]), ha="center", va="center", fontsize=8,
                    color="white" if counts[row, column] > threshold else "#1f2328",
                )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("actual class")
    correct = float(np.trace(counts)) / max(int(counts.sum()), 1)
    return Plot(
        "Confusion matrix",
        f"Test rows by actual (rows) and predicted (columns) class; the diagonal holds the "
        f"correct predictions, {correct:.1%} of rows.",
        _png(figure),
    )


def _positive_rows(
    y_true: np.ndarray, scores: Mapping[str, np.ndarray], positive_class: Any, what: str
) -> np.ndarray:
    """Which test rows are of the positive class, once lengths and both outcomes are checked."""
    y_true = np.asarray(y_true)
    _check_lengths(y_true, **{name: np.asarray(s) for name, s in scores.items()})
    is_positive = y_true == positive_class
    _both_outcomes(is_positive, what)
    return is_positive


def plot_roc_curves(
    y_true: np.ndarray, scores: Mapping[str, np.ndarray], positive_class: Any
) -> Plot:
    """ROC curve of each model's positive-class probability, with its AUC in the legend."""
    is_positive = _positive_rows(y_true, scores, positive_class, "a ROC curve")
    figure, axes = _new_axes(f"ROC curve (positive class {positive_class})")
    areas: dict[str, float] = {}
    for name, score in scores.items():
        false_positive, true_positive, _ = roc_curve(is_positive, np.asarray(score, float))
        areas[name] = float(auc(false_positive, true_positive))
        axes.plot(
            false_positive, true_positive, linewidth=1.5, color=_model_colour(name),
            label=f"{name} (AUC {areas[name]:.3f})",
        )
    axes.plot([0, 1], [0, 1], color="#333333", linewidth=1, linestyle="--", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right", fontsize=8)
    best = max(areas, key=lambda name: areas[name])
    return Plot(
        "ROC curve",
        f"True against false positive rate as the threshold falls; the higher the curve the "
        f"better, and {best} has the largest area ({areas[best]:.3f}).",
        _png(figure),
    )


def plot_precision_recall_curves(
    y_true: np.ndarray, scores: Mapping[str, np.ndarray], positive_class: Any
) -> Plot:
    """Precision-recall curve of each model, with its average precision in the legend."""
    is_positive = _positive_rows(y_true, scores, positive_class, "a precision-recall curve")
    figure, axes = _new_axes(f"Precision-recall (positive class {positive_class})")
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(is_positive, np.asarray(score, float))
        average = float(average_precision_score(is_positive, np.asarray(score, float)))
        axes.step(
            recall, precision, where="post", linewidth=1.5, color=_model_colour(name),
            label=f"{name} (AP {average:.3f})",
        )
    prevalence = float(is_positive.mean())
    axes.axhline(prevalence, color="#333333", linewidth=1, linestyle="--", label="chance")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower left", fontsize=8)
    return Plot(
        "Precision-recall curve",
        f"Precision against recall as the threshold falls; the dashed line is the share of "
        f"positive test rows ({prevalence:.1%}), what a random ranking achieves.",
        _png(figure),
    )


def _one_vs_rest(
    y_true: np.ndarray, predictions: Predictions
) -> tuple[np.ndarray, tuple[Any, ...], list[Any]]:
    if predictions.probabilities is None or predictions.classes is None:
        raise ValueError("report: expected the challenger's class probabilities, found labels only")
    probabilities = np.asarray(predictions.probabilities, float)
    _check_lengths(y_true, probabilities=probabilities)
    shown = [
        c for c in _most_frequent(y_true, predictions.classes, MAX_CLASSES_SHOWN)
        if not (y_true == c).all()
    ]
    if not shown:
        raise ValueError("report: one-vs-rest curves need test rows of two classes or more")
    return probabilities, predictions.classes, shown


def _shown_note(shown: Sequence[Any], classes: Sequence[Any]) -> str:
    if len(shown) == len(classes):
        return ""
    return f" ({len(shown)} most frequent of {len(classes)} classes)"


def plot_roc_one_vs_rest(y_true: np.ndarray, predictions: Predictions) -> Plot:
    """The challenger's ROC curve of each class against the rest (multiclass)."""
    y_true = np.asarray(y_true)
    probabilities, classes, shown = _one_vs_rest(y_true, predictions)
    figure, axes = _new_axes("ROC curves, one class vs rest (challenger)")
    for label in shown:
        column = probabilities[:, classes.index(label)]
        false_positive, true_positive, _ = roc_curve(y_true == label, column)
        area = float(roc_auc_score(y_true == label, column))
        axes.plot(false_positive, true_positive, linewidth=1.3, label=f"{label} (AUC {area:.3f})")
    axes.plot([0, 1], [0, 1], color="#333333", linewidth=1, linestyle="--", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right", fontsize=7)
    return Plot(
        "ROC curves (one vs rest)",
        f"One curve per class{_shown_note(shown, classes)}, that class's probability ranking "
        "its rows above the others; higher curves separate their class better.",
        _png(figure),
    )


def plot_precision_recall_one_vs_rest(y_true: np.ndarray, predictions: Predictions) -> Plot:
    """The challenger's precision-recall curve of each class against the rest (multiclass)."""
    y_true = np.asarray(y_true)
    probabilities, classes, shown = _one_vs_rest(y_true, predictions)
    figure, axes = _new_axes("Precision-recall, one class vs rest (challenger)")
    for label in shown:
        column = probabilities[:, classes.index(label)]
        precision, recall, _ = precision_recall_curve(y_true == label, column)
        average = float(average_precision_score(y_true == label, column))
        axes.step(
            recall, precision, where="post", linewidth=1.3, label=f"{label} (AP {average:.3f})"
        )
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower left", fontsize=7)
    return Plot(
        "Precision-recall curves (one vs rest)",
        f"One curve per class{_shown_note(shown, classes)}; a curve that stays high to the "
        "right finds most of its class without mixing in others.",
        _png(figure),
    )


def _reliability_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str
) -> Figure:
    """One line per model: the share of hits (0/1 outcomes) against the mean confidence, over
    rows binned by confidence."""
    figure, axes = _new_axes(title)
    axes.plot([0, 1], [0, 1], color="#333333", linewidth=1, linestyle="--", label="calibrated")
    for name, (outcomes, confidence) in curves.items():
        observed, predicted = calibration_curve(
            outcomes, np.clip(confidence, 0, 1), n_bins=CALIBRATION_BINS, strategy="uniform"
        )
        axes.plot(
            predicted, observed, marker="o", markersize=3, linewidth=1.5,
            color=_model_colour(name), label=name,
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend(loc="upper left", fontsize=8)
    return figure


def plot_calibration(
    y_true: np.ndarray, scores: Mapping[str, np.ndarray], positive_class: Any
) -> Plot:
    """Reliability diagram: the share of positives among rows binned by each model's
    positive-class probability."""
    y_true = np.asarray(y_true)
    _check_lengths(y_true, **{name: np.asarray(s) for name, s in scores.items()})
    is_positive = (y_true == positive_class).astype(int)
    figure = _reliability_figure(
        {name: (is_positive, np.asarray(score, float)) for name, score in scores.items()},
        f"Calibration (positive class {positive_class})",
        "mean predicted probability (bin)",
        "share of positive rows",
    )
    return Plot(
        "Calibration",
        f"Test rows in {CALIBRATION_BINS} bins of predicted probability; on the dashed diagonal "
        "a predicted 30% comes true 30% of the time.",
        _png(figure),
    )


def plot_top_class_calibration(y_true: np.ndarray, predictions: Mapping[str, Predictions]) -> Plot:
    """Reliability diagram of the most probable class (multiclass): how often it is right
    against how confident the model was."""
    y_true = np.asarray(y_true)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, prediction in predictions.items():
        if prediction.probabilities is None:
            raise ValueError(
                f"report: expected class probabilities for {name!r}, found labels only"
            )
        _check_lengths(y_true, **{name: prediction.probabilities})
        correct = (np.asarray(prediction.values) == y_true).astype(int)
        curves[name] = (correct, np.asarray(prediction.probabilities, float).max(axis=1))
    figure = _reliability_figure(
        curves,
        "Calibration of the top class",
        "probability of the predicted class (bin)",
        "share predicted correctly",
    )
    return Plot(
        "Calibration (top class)",
        f"Test rows in {CALIBRATION_BINS} bins of the predicted class's probability; on the "
        "dashed diagonal a model that is 70% sure is right 70% of the time.",
        _png(figure),
    )


def class_shares(label_sets: Mapping[str, np.ndarray], classes: Sequence[Any]) -> pd.DataFrame:
    """The share of each class (rows, in `classes` order, then any other label) in each named
    set of labels (columns)."""
    if not label_sets:
        raise ValueError(
            "report: expected at least one set of labels for the class balance, found none"
        )
    empty = [name for name, labels in label_sets.items() if len(labels) == 0]
    if empty:
        raise ValueError(
            f"report: expected labels in every class-balance set, found none in {empty}"
        )
    shares = pd.DataFrame(
        {
            name: pd.Series(np.asarray(labels)).value_counts(normalize=True)
            for name, labels in label_sets.items()
        }
    ).fillna(0.0)
    order = [c for c in classes if c in shares.index]
    order += [c for c in shares.index if c not in order]
    return shares.reindex(order)


def plot_class_balance(label_sets: Mapping[str, np.ndarray], classes: Sequence[Any]) -> Plot:
    """Grouped bars: the share of each class in each named set of labels (e.g. train, test,
    the scored days' predicted labels)."""
    shares = class_shares(label_sets, classes)
    if len(shares) > MAX_CLASSES_SHOWN:
        top = shares.mean(axis=1).sort_values(ascending=False).index[:MAX_CLASSES_SHOWN]
        rest = shares.drop(index=top).sum().rename("(other)")
        shares = pd.concat([shares.loc[top], rest.to_frame().T])
    figure, axes = _new_axes("Class balance")
    width = 0.8 / len(shares.columns)
    positions = np.arange(len(shares))
    for offset, name in enumerate(shares.columns):
        axes.bar(
            positions + (offset - (len(shares.columns) - 1) / 2) * width, shares[name], width,
            label=name, color=_model_colour(name),
        )
    names = [str(label) for label in shares.index]
    _class_ticks(axes.set_xticks, positions, names)
    axes.set_ylabel("share of rows")
    axes.legend(fontsize=8)
    spread = float((shares.max(axis=1) - shares.min(axis=1)).max())
    return Plot(
        "Class balance",
        f"The share of each class in {', '.join(map(str, shares.columns))}; the largest "
        f"difference between them is {spread:.1%} of rows.",
        _png(figure),
    )


def _require_probabilities(name: str, prediction: Predictions, rows: int) -> None:
    if prediction.probabilities is None or prediction.classes is None:
        raise ValueError(f"report: expected class probabilities for {name!r}, found labels only")
    if len(prediction) != rows:
        raise ValueError(
            f"report: expected {name} to have one prediction per test row ({rows}), "
            f"found {len(prediction)}"
        )


def classification_plots(
    y_true: np.ndarray,
    predictions: Mapping[str, Predictions],
    positive_class: Any,
    class_balance: Mapping[str, np.ndarray],
    importance: pd.DataFrame | None = None,
) -> list[Plot]:
    """The card's classification plots; `predictions` must hold the challenger's.

    Binary (the challenger has two classes): ROC, precision-recall and calibration for every
    model. Multiclass: one-vs-rest curves for the challenger and top-class calibration for every
    model. ROC and precision-recall are left out when the test rows hold a single class.
    """
    if CHALLENGER not in predictions:
        raise ValueError(
            f"report: expected predictions for {CHALLENGER!r}, found {sorted(predictions)}"
        )
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        raise ValueError("report: expected at least one test row, found none")
    for name, prediction in predictions.items():
        _require_probabilities(name, prediction, len(y_true))
    challenger = predictions[CHALLENGER]
    classes = challenger.classes
    assert classes is not None  # checked by _require_probabilities
    several_classes = len(pd.unique(y_true)) > 1
    plots = [plot_confusion_matrix(y_true, challenger.values, classes)]
    if len(classes) == 2:
        positive = resolve_positive_class(classes, positive_class)
        scores = {
            name: positive_class_probability(prediction, positive)
            for name, prediction in predictions.items()
        }
        if several_classes:
            plots.append(plot_roc_curves(y_true, scores, positive))
            plots.append(plot_precision_recall_curves(y_true, scores, positive))
        plots.append(plot_calibration(y_true, scores, positive))
    else:
        if several_classes:
            plots.append(plot_roc_one_vs_rest(y_true, challenger))
            plots.append(plot_precision_recall_one_vs_rest(y_true, challenger))
        plots.append(plot_top_class_calibration(y_true, predictions))
    if class_balance:
        plots.append(plot_class_balance(class_balance, classes))
    if importance is not None:
        plots.append(plot_feature_importance(importance))
    return plots
