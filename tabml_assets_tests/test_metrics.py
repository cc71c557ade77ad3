"""Task-aware metrics, the naive baseline and chunked prediction, checked against sklearn's
own functions on small hand-made examples."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from tabml_assets.ml.evaluation import regression_metrics as evaluation_regression_metrics
from tabml_assets.ml.metrics import (
    Predictions,
    baseline_description,
    baseline_predictions,
    higher_is_better,
    metrics_for,
    positive_class_probability,
    predict,
    regression_metrics,
    resolve_positive_class,
)
from tabml_assets.spec import TASK_METRICS
from tabml_assets.steps import Metric

BINARY_TRUE = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "yes"])
# Probability of "yes"; rows 2, 3 and 6 are on the wrong side of 0.5.
P_YES = np.array([0.1, 0.8, 0.35, 0.55, 0.9, 0.2, 0.7, 0.6])
MULTI_TRUE = np.array(["cat", "dog", "bird", "dog", "cat", "bird", "dog", "cat", "bird"])
MULTI_CLASSES = ("bird", "cat", "dog")
MULTI_PROBABILITIES = np.array(
    [
        [0.1, 0.7, 0.2],
        [0.2, 0.2, 0.6],
        [0.5, 0.3, 0.2],
        [0.3, 0.4, 0.3],
        [0.2, 0.5, 0.3],
        [0.4, 0.4, 0.2],
        [0.1, 0.1, 0.8],
        [0.6, 0.3, 0.1],
        [0.3, 0.3, 0.4],
    ]
)


def binary_predictions(
    p_yes: np.ndarray = P_YES, classes: tuple[str, str] = ("no", "yes")
) -> Predictions:
    columns = {"no": 1 - p_yes, "yes": p_yes}
    probabilities = np.column_stack([columns[c] for c in classes])
    return Predictions(np.where(p_yes >= 0.5, "yes", "no"), probabilities, classes)


def multi_predictions() -> Predictions:
    labels = np.array(MULTI_CLASSES)[MULTI_PROBABILITIES.argmax(axis=1)]
    return Predictions(labels, MULTI_PROBABILITIES, MULTI_CLASSES)


def test_binary_metrics_match_sklearn() -> None:
    predictions = binary_predictions()
    metrics = metrics_for("binary", BINARY_TRUE, predictions)
    is_yes = BINARY_TRUE == "yes"
    labels = predictions.values
    expected = {
        "roc_auc": roc_auc_score(is_yes, P_YES),
        "pr_auc": average_precision_score(is_yes, P_YES),
        "log_loss": log_loss(
            BINARY_TRUE, np.column_stack([1 - P_YES, P_YES]), labels=["no", "yes"]
        ),
        "f1": f1_score(BINARY_TRUE, labels, pos_label="yes"),
        "precision": precision_score(BINARY_TRUE, labels, pos_label="yes"),
        "recall": recall_score(BINARY_TRUE, labels, pos_label="yes"),
        "accuracy": accuracy_score(BINARY_TRUE, labels),
    }
    assert list(metrics) == list(TASK_METRICS["binary"])
    assert metrics == pytest.approx(expected)
    assert all(type(value) is float for value in metrics.values())
    # The example is not trivially perfect, so the comparison means something.
    assert 0.5 < metrics["roc_auc"] < 1 and metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["precision"] == pytest.approx(3 / 5) and metrics["recall"] == pytest.approx(
        3 / 4
    )


def test_binary_metrics_read_the_positive_column_whatever_the_class_order() -> None:
    sorted_order = metrics_for("binary", BINARY_TRUE, binary_predictions(classes=("no", "yes")))
    reversed_order = metrics_for("binary", BINARY_TRUE, binary_predictions(classes=("yes", "no")))
    assert reversed_order == pytest.approx(sorted_order)


def test_binary_metrics_with_the_other_class_as_positive() -> None:
    predictions = binary_predictions()
    metrics = metrics_for("binary", BINARY_TRUE, predictions, positive_class="no")
    is_no = BINARY_TRUE == "no"
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(is_no, 1 - P_YES))
    assert metrics["recall"] == pytest.approx(
        recall_score(BINARY_TRUE, predictions.values, pos_label="no")
    )
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(is_no, 1 - P_YES))


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ((False, True), True),
        ((0, 1), 1),
        (("no", "yes"), "yes"),
        (("yes", "no"), "yes"),
        (("b", "a"), "b"),
    ],
)
def test_default_positive_class(classes: tuple[object, object], expected: object) -> None:
    assert resolve_positive_class(classes) == expected


def test_unknown_positive_class_names_the_classes() -> None:
    with pytest.raises(
        ValueError,
        match=r"positive_class: expected one of the model's classes \['no', 'yes'\], found 'maybe'",
    ):
        metrics_for("binary", BINARY_TRUE, binary_predictions(), positive_class="maybe")


def test_boolean_target_defaults_to_true_as_positive() -> None:
    y = BINARY_TRUE == "yes"
    predictions = Predictions(P_YES >= 0.5, np.column_stack([1 - P_YES, P_YES]), (False, True))
    assert positive_class_probability(predictions) == pytest.approx(P_YES)
    assert metrics_for("binary", y, predictions) == pytest.approx(
        metrics_for("binary", BINARY_TRUE, binary_predictions())
    )


def test_multiclass_metrics_match_sklearn_macro_averages() -> None:
    predictions = multi_predictions()
    metrics = metrics_for("multiclass", MULTI_TRUE, predictions)
    labels = predictions.values
    expected = {
        "roc_auc": roc_auc_score(
            MULTI_TRUE,
            MULTI_PROBABILITIES,
            multi_class="ovr",
            average="macro",
            labels=list(MULTI_CLASSES),
        ),
        "pr_auc": average_precision_score(
            label_binarize(MULTI_TRUE, classes=list(MULTI_CLASSES)),
            MULTI_PROBABILITIES,
            average="macro",
        ),
        "log_loss": log_loss(MULTI_TRUE, MULTI_PROBABILITIES, labels=list(MULTI_CLASSES)),
        "f1": f1_score(MULTI_TRUE, labels, average="macro"),
        "precision": precision_score(MULTI_TRUE, labels, average="macro"),
        "recall": recall_score(MULTI_TRUE, labels, average="macro"),
        "accuracy": accuracy_score(MULTI_TRUE, labels),
    }
    assert metrics == pytest.approx(expected)
    assert all(type(value) is float for value in metrics.values())
    assert 0.5 < metrics["roc_auc"] < 1


def test_one_class_test_split_gives_nan_ranking_metrics_without_warnings() -> None:
    only_no = np.array(["no"] * 4)
    predictions = binary_predictions(np.array([0.2, 0.6, 0.1, 0.3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binary = metrics_for("binary", only_no, predictions)
    assert math.isnan(binary["roc_auc"]) and math.isnan(binary["pr_auc"])
    assert binary["accuracy"] == pytest.approx(0.75)
    assert binary["recall"] == 0.0 and math.isfinite(binary["log_loss"])

    only_cat = np.array(["cat"] * 3)
    probabilities = MULTI_PROBABILITIES[:3]
    multi = metrics_for(
        "multiclass",
        only_cat,
        Predictions(np.array(["cat", "dog", "bird"]), probabilities, MULTI_CLASSES),
    )
    assert math.isnan(multi["roc_auc"]) and math.isnan(multi["pr_auc"])
    assert multi["accuracy"] == pytest.approx(1 / 3)


def test_multiclass_with_a_class_missing_from_the_test_split_averages_the_present_ones() -> None:
    present = MULTI_TRUE != "bird"
    predictions = multi_predictions()
    subset = Predictions(predictions.values[present], MULTI_PROBABILITIES[present], MULTI_CLASSES)
    metrics = metrics_for("multiclass", MULTI_TRUE[present], subset)
    y = MULTI_TRUE[present]
    expected = np.mean(
        [
            roc_auc_score(y == c, MULTI_PROBABILITIES[present][:, i + 1])
            for i, c in enumerate(("cat", "dog"))
        ]
    )
    assert metrics["roc_auc"] == pytest.approx(expected)


def test_a_true_label_the_model_never_saw_is_named() -> None:
    y = BINARY_TRUE.astype(object)
    y[0] = "maybe"
    with pytest.raises(
        ValueError, match=r"among the model's classes \['no', 'yes'\], found \['maybe'\]"
    ):
        metrics_for("binary", y, binary_predictions())


def test_mismatched_lengths_and_missing_probabilities_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"one prediction per row \(7\), found 8"):
        metrics_for("binary", BINARY_TRUE[:7], binary_predictions())
    with pytest.raises(ValueError, match="labels only"):
        metrics_for("binary", BINARY_TRUE, Predictions(binary_predictions().values))
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(8, 3\)"):
        Predictions(BINARY_TRUE, np.ones((8, 2)), ("a", "b", "c"))
    with pytest.raises(ValueError, match="expected a task among"):
        metrics_for("ranking", BINARY_TRUE, binary_predictions())


def test_regression_metrics_match_the_evaluation_module() -> None:
    y_true = np.array([3.0, 5.0, 0.0, 8.0])
    y_pred = np.array([2.5, 5.5, 1.0, 7.0])
    metrics = metrics_for("regression", y_true, Predictions(y_pred))
    assert metrics == pytest.approx(evaluation_regression_metrics(y_true, y_pred))
    assert metrics == pytest.approx(regression_metrics(y_true, y_pred))
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    # MAPE leaves out the zero target.
    assert metrics["mape"] == pytest.approx(100 * np.mean([0.5 / 3, 0.5 / 5, 1 / 8]))


def test_custom_metrics_get_labels_or_probabilities() -> None:
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def brier(y: np.ndarray, p: np.ndarray) -> float:
        seen["brier"] = (y, p)
        return float(brier_score_loss(y, p))

    def yes_rate(y: np.ndarray, labels: np.ndarray) -> float:
        seen["yes_rate"] = (y, labels)
        return float(np.mean(labels == "yes"))

    custom = {
        "brier": Metric("brier", brier, greater_is_better=False, uses="probability"),
        "yes_rate": Metric("yes_rate", yes_rate, greater_is_better=True),
    }
    metrics = metrics_for("binary", BINARY_TRUE, binary_predictions(), custom=custom)
    assert metrics["brier"] == pytest.approx(np.mean((P_YES - (BINARY_TRUE == "yes")) ** 2))
    assert list(seen["brier"][0]) == [0, 1, 1, 0, 1, 0, 0, 1]
    assert seen["brier"][1] == pytest.approx(P_YES)
    assert list(seen["yes_rate"][0]) == list(BINARY_TRUE)
    assert metrics["yes_rate"] == pytest.approx(5 / 8)
    assert type(metrics["yes_rate"]) is float


def test_custom_multiclass_probability_metric_gets_class_indices_and_the_matrix() -> None:
    custom = {
        "my_log_loss": Metric(
            "my_log_loss", lambda y, p: log_loss(y, p, labels=[0, 1, 2]), False, uses="probability"
        )
    }
    metrics = metrics_for("multiclass", MULTI_TRUE, multi_predictions(), custom=custom)
    assert metrics["my_log_loss"] == pytest.approx(metrics["log_loss"])


def test_custom_regression_metric_and_failures_are_named() -> None:
    max_error = Metric("max_error", lambda y, p: np.max(np.abs(y - p)), greater_is_better=False)
    metrics = metrics_for(
        "regression",
        np.array([1.0, 2.0]),
        Predictions(np.array([1.5, 4.0])),
        custom={"max_error": max_error},
    )
    assert metrics["max_error"] == pytest.approx(2.0)

    broken = Metric("broken", lambda y, p: 1 / 0, greater_is_better=True)
    with pytest.raises(
        ValueError, match=r"custom metric 'broken' \(prediction\): .*ZeroDivisionError"
    ):
        metrics_for(
            "regression", np.array([1.0]), Predictions(np.array([1.0])), custom={"broken": broken}
        )
    clash = Metric("rmse", lambda y, p: 0.0, greater_is_better=False)
    with pytest.raises(ValueError, match="custom metric 'rmse': a built-in regression metric"):
        metrics_for(
            "regression", np.array([1.0]), Predictions(np.array([1.0])), custom={"rmse": clash}
        )


def test_higher_is_better() -> None:
    custom = {"cost": Metric("cost", lambda y, p: 0.0, greater_is_better=False)}
    assert higher_is_better("roc_auc") and not higher_is_better("log_loss")
    assert not higher_is_better("cost", custom)
    with pytest.raises(ValueError, match="found 'speed'"):
        higher_is_better("speed", custom)


def test_regression_baseline_is_the_training_mean() -> None:
    baseline = baseline_predictions(
        "regression", pd.Series([1.0, 2.0, 6.0, None]), rows=3, classes=None
    )
    assert list(baseline.values) == [3.0, 3.0, 3.0]
    assert baseline.probabilities is None
    assert baseline_description("regression") == "training mean"


def test_classification_baseline_is_the_class_prior() -> None:
    train = pd.Series(["b", "a", "b", "c", "b", "a"])
    baseline = baseline_predictions("multiclass", train, rows=4, classes=("c", "b", "a"))
    assert baseline.classes == ("c", "b", "a")
    assert baseline.probabilities is not None
    assert baseline.probabilities.shape == (4, 3)
    assert baseline.probabilities[0] == pytest.approx([1 / 6, 3 / 6, 2 / 6])
    assert list(baseline.values) == ["b"] * 4
    assert baseline_description("binary") == "class prior (majority class)"
    # A constant score ranks nothing: the prior's ROC AUC is exactly chance.
    y = np.array(["a", "b", "c", "b"])
    assert metrics_for("multiclass", y, baseline)["roc_auc"] == pytest.approx(0.5)


def test_binary_baseline_default_classes_and_unknown_labels() -> None:
    baseline = baseline_predictions("binary", pd.Series([True, False, False]), rows=2)
    assert baseline.classes == (False, True)
    assert list(baseline.values) == [False, False]
    assert positive_class_probability(baseline) == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(
        ValueError, match=r"training labels among the classes \['a', 'b'\], found \['c'\]"
    ):
        baseline_predictions("binary", pd.Series(["a", "c"]), rows=1, classes=("a", "b"))
    with pytest.raises(ValueError, match="expected a training target with values"):
        baseline_predictions("binary", pd.Series([None, None]), rows=1)


def test_predict_classifier_in_chunks_matches_one_pass() -> None:
    inputs = pd.DataFrame({"x": np.linspace(-2, 2, 11)})
    labels = np.where(inputs["x"] > 0.3, "high", "low")
    model = LogisticRegression().fit(inputs, labels)
    chunked = predict(model, inputs, "binary", chunk_rows=3)
    whole = predict(model, inputs, "binary")
    assert chunked.probabilities is not None and whole.probabilities is not None
    assert np.array_equal(chunked.probabilities, whole.probabilities)
    assert chunked.probabilities == pytest.approx(model.predict_proba(inputs))
    assert chunked.classes == ("high", "low") and type(chunked.classes[0]) is str
    assert list(chunked.values) == list(model.predict(inputs))
    empty = predict(model, inputs.iloc[:0], "binary")
    assert (
        len(empty) == 0 and empty.probabilities is not None and empty.probabilities.shape == (0, 2)
    )


def test_predict_regressor_and_wrong_model_kind() -> None:
    inputs = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = LinearRegression().fit(inputs, [1.0, 3.0, 5.0, 7.0])
    predictions = predict(model, inputs, "regression", chunk_rows=3)
    assert predictions.values == pytest.approx([1.0, 3.0, 5.0, 7.0])
    assert predictions.values.dtype == np.float64 and predictions.probabilities is None
    with pytest.raises(
        ValueError, match=r"a binary target needs a classifier .* found LinearRegression"
    ):
        predict(model, inputs, "binary")
