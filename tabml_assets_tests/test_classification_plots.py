"""Classification step-card plots: each renders a decodable PNG, and bad inputs fail clearly."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from tabml_assets.ml.classification_plots import (
    class_shares,
    classification_plots,
    plot_calibration,
    plot_class_balance,
    plot_confusion_matrix,
    plot_precision_recall_curves,
    plot_roc_curves,
    plot_roc_one_vs_rest,
    plot_top_class_calibration,
)
from tabml_assets.ml.metrics import Predictions, baseline_predictions, positive_class_probability
from tabml_assets.ml.report import BASELINE, CHALLENGER, CHAMPION, Plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(plot: Plot) -> None:
    assert plot.png.startswith(PNG_SIGNATURE), plot.title
    image = imread(io.BytesIO(plot.png), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # A one-sentence reading guide.
    assert plot.caption.endswith(".") and plot.caption.count(". ") == 0, plot.caption


def binary_case(rows: int = 80, seed: int = 0) -> tuple[np.ndarray, dict[str, Predictions]]:
    rng = np.random.default_rng(seed)
    y = rng.choice(["no", "yes"], rows, p=[0.7, 0.3])
    signal = np.clip((y == "yes") * 0.35 + rng.uniform(0, 0.6, rows), 0, 1)

    def model(p_yes: np.ndarray) -> Predictions:
        return Predictions(
            np.where(p_yes >= 0.5, "yes", "no"), np.column_stack([1 - p_yes, p_yes]), ("no", "yes")
        )

    predictions = {
        CHALLENGER: model(signal),
        CHAMPION: model(np.clip(signal + rng.normal(0, 0.3, rows), 0, 1)),
        BASELINE: baseline_predictions("binary", pd.Series(y), rows, ("no", "yes")),
    }
    return y, predictions


def multiclass_case(rows: int = 90, seed: int = 0) -> tuple[np.ndarray, dict[str, Predictions]]:
    rng = np.random.default_rng(seed)
    classes = ("bird", "cat", "dog")
    y = rng.choice(classes, rows)
    scores = rng.uniform(0, 1, (rows, 3)) + 0.6 * (y[:, None] == np.array(classes))
    probabilities = scores / scores.sum(axis=1, keepdims=True)
    challenger = Predictions(
        np.array(classes)[probabilities.argmax(axis=1)], probabilities, classes
    )
    return y, {
        CHALLENGER: challenger,
        BASELINE: baseline_predictions("multiclass", pd.Series(y), rows, classes),
    }


def test_binary_plots_are_pngs() -> None:
    y, predictions = binary_case()
    plots = classification_plots(
        y,
        predictions,
        positive_class="yes",
        class_balance={"train": y[:50], "test": y[50:], "scored": predictions[CHALLENGER].values},
        importance=pd.DataFrame(
            {"feature": ["a", "b"], "worsening": [0.02, 0.001], "std": [0.01, 0.0], "metric": "roc_auc"}
        ),
    )
    titles = [plot.title for plot in plots]
    assert titles == [
        "Confusion matrix",
        "ROC curve",
        "Precision-recall curve",
        "Calibration",
        "Class balance",
        "Permutation feature importance",
    ]
    for plot in plots:
        assert_png(plot)


def test_roc_caption_names_the_best_model() -> None:
    y, predictions = binary_case()
    scores = {
        name: p.probabilities[:, 1]
        for name, p in predictions.items()
        if p.probabilities is not None
    }
    plot = plot_roc_curves(y, scores, "yes")
    assert f"{CHALLENGER} has the largest area" in plot.caption


def test_multiclass_plots_are_pngs() -> None:
    y, predictions = multiclass_case()
    plots = classification_plots(y, predictions, None, {"train": y, "test": y[:30]}, None)
    assert [plot.title for plot in plots] == [
        "Confusion matrix",
        "ROC curves (one vs rest)",
        "Precision-recall curves (one vs rest)",
        "Calibration (top class)",
        "Class balance",
    ]
    for plot in plots:
        assert_png(plot)


def test_one_class_test_split_leaves_out_the_curves() -> None:
    _, predictions = binary_case(rows=6)
    only_no = np.array(["no"] * 6)
    titles = [p.title for p in classification_plots(only_no, predictions, "yes", {}, None)]
    assert titles == ["Confusion matrix", "Calibration"]
    with pytest.raises(
        ValueError, match="needs test rows of both the class and the rest, found only the rest"
    ):
        plot_roc_curves(
            only_no, {CHALLENGER: positive_class_probability(predictions[CHALLENGER], "yes")}, "yes"
        )


def test_confusion_matrix_counts_a_class_the_model_never_saw() -> None:
    y = np.array(["a", "b", "c", "a"], dtype=object)
    plot = plot_confusion_matrix(y, np.array(["a", "b", "b", "b"]), ("a", "b"))
    assert_png(plot)
    assert "50.0% of rows" in plot.caption


def test_mismatched_lengths_fail_clearly() -> None:
    y, predictions = binary_case(rows=20)
    short = positive_class_probability(predictions[CHALLENGER], "yes")[:-1]
    with pytest.raises(
        ValueError, match=r"expected challenger to have one value per test row \(20\), found 19"
    ):
        plot_roc_curves(y, {CHALLENGER: short}, "yes")
    with pytest.raises(ValueError, match=r"one value per test row \(20\), found 19"):
        plot_precision_recall_curves(y, {CHALLENGER: short}, "yes")
    with pytest.raises(ValueError, match=r"one value per test row \(20\), found 19"):
        plot_calibration(y, {CHALLENGER: short}, "yes")
    with pytest.raises(ValueError, match=r"one value per test row \(20\), found 19"):
        plot_confusion_matrix(y, predictions[CHALLENGER].values[:-1], ("no", "yes"))
    with pytest.raises(
        ValueError,
        match=r"expected challenger to have one prediction per test row \(19\), found 20",
    ):
        classification_plots(y[:-1], predictions, "yes", {}, None)


def test_missing_challenger_or_probabilities_fail_clearly() -> None:
    y, predictions = binary_case(rows=10)
    with pytest.raises(
        ValueError, match=r"expected predictions for 'challenger', found \['champion'\]"
    ):
        classification_plots(y, {CHAMPION: predictions[CHAMPION]}, "yes", {}, None)
    labels_only = {CHALLENGER: Predictions(predictions[CHALLENGER].values)}
    with pytest.raises(
        ValueError, match="expected class probabilities for 'challenger', found labels only"
    ):
        classification_plots(y, labels_only, "yes", {}, None)
    with pytest.raises(ValueError, match="labels only"):
        plot_roc_one_vs_rest(y, labels_only[CHALLENGER])
    with pytest.raises(ValueError, match="labels only"):
        plot_top_class_calibration(y, labels_only)


def test_class_shares_and_their_plot() -> None:
    shares = class_shares(
        {"train": np.array(["a", "b", "b", "b"]), "test": np.array(["c", "b"])}, ("b", "a")
    )
    assert list(shares.index) == ["b", "a", "c"]
    assert shares["train"].tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert shares["test"].tolist() == pytest.approx([0.5, 0.0, 0.5])
    plot = plot_class_balance(
        {"train": np.array(["a", "b", "b", "b"]), "test": np.array(["c", "b"])}, ("a", "b")
    )
    assert_png(plot)
    assert "50.0% of rows" in plot.caption
    with pytest.raises(ValueError, match=r"found none in \['scored'\]"):
        class_shares({"train": np.array(["a"]), "scored": np.array([])}, ("a",))
    with pytest.raises(ValueError, match="at least one set of labels"):
        class_shares({}, ("a",))


def test_many_classes_keep_the_most_frequent() -> None:
    rng = np.random.default_rng(3)
    classes = tuple(f"c{i:02d}" for i in range(14))
    y = rng.choice(classes, 300)
    probabilities = rng.dirichlet(np.ones(14), 300)
    plot = plot_roc_one_vs_rest(
        y, Predictions(np.array(classes)[probabilities.argmax(axis=1)], probabilities, classes)
    )
    assert_png(plot)
    assert "(10 most frequent of 14 classes)" in plot.caption
    assert_png(plot_class_balance({"train": y}, classes))
