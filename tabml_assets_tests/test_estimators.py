"""The model pipeline for every task: each built-in estimator fits a frame with a string
category, splits on it natively where it can, and survives an MLflow round trip (skops) with
identical predictions."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow.tracking import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler

from tabml_assets.ml.estimators import (
    LabelEncodedClassifier,
    build_model_pipeline,
    categorical_mask,
    make_estimator,
    pip_requirements_extra,
)
from tabml_assets.ml.features import build_preprocessor
from tabml_assets.ml.metrics import metrics_for, predict
from tabml_assets.spec import ESTIMATORS, EstimatorSpec, PipelineSpec
from tabml_assets.steps import ProjectSteps

FEATURES = ["colour", "size"]
# Small models keep the whole matrix of estimators and tasks to a few seconds.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "HistGradientBoostingRegressor": {"max_iter": 5},
    "HistGradientBoostingClassifier": {"max_iter": 5},
    "GradientBoostingRegressor": {"n_estimators": 5},
    "GradientBoostingClassifier": {"n_estimators": 5},
    "RandomForestRegressor": {"n_estimators": 5, "random_state": 0},
    "RandomForestClassifier": {"n_estimators": 5, "random_state": 0},
    "ExtraTreesRegressor": {"n_estimators": 5, "random_state": 0},
    "ExtraTreesClassifier": {"n_estimators": 5, "random_state": 0},
    "LGBMRegressor": {"n_estimators": 5, "min_child_samples": 2, "verbose": -1},
    "LGBMClassifier": {"n_estimators": 5, "min_child_samples": 2, "verbose": -1},
    "XGBRegressor": {"n_estimators": 5, "n_jobs": 1},
    "XGBClassifier": {"n_estimators": 5, "n_jobs": 1},
}
TARGET_TYPES = {"regression": "float", "binary": "string", "multiclass": "string"}


def training_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], rows)
    size = rng.normal(size=rows)
    frame = pd.DataFrame({"colour": colour, "size": size})
    frame["regression"] = 2 * size + 3 * (colour == "red")
    frame["binary"] = np.where((colour == "red") ^ (size > 0.8), "yes", "no")
    frame["multiclass"] = np.where(
        size > 0.5, "large", np.where(colour == "blue", "blue_small", "small")
    )
    return frame


def scoring_frame() -> pd.DataFrame:
    """Rows to score, with a colour no training row had."""
    return pd.DataFrame(
        {"colour": ["red", "green", "purple", "blue"], "size": [0.1, 1.2, -0.4, 2.0]}
    )


def make_spec(task: str, class_name: str, params: dict[str, Any] | None = None) -> PipelineSpec:
    target_type = "boolean" if task == "binary_bool" else TARGET_TYPES[task]
    return PipelineSpec.model_validate(
        {
            "name": "toy",
            "dataset": {
                "event_time": "seen_at",
                "columns": {
                    "seen_at": {"type": "datetime"},
                    "colour": {"type": "string"},
                    "size": {"type": "float"},
                    "label": {"type": target_type},
                },
            },
            "features": {"columns": FEATURES, "categorical": ["colour"]},
            "target": {"column": "label", "task": "binary" if task == "binary_bool" else task},
            "partitions": {"start_date": "2026-01-01"},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
            "training_window_days": 7,
            "estimator": {
                "class": class_name,
                "params": FAST_PARAMS.get(class_name, {}) if params is None else params,
            },
        }
    )


def cases() -> list[tuple[str, str]]:
    return [
        (task, name)
        for task in ("regression", "binary", "multiclass")
        for name, info in ESTIMATORS.items()
        # SparkXGB* fit on Spark, not in a Pipeline: tabml_assets_tests/test_spark_training.py.
        if (info.kind == "regressor") == (task == "regression") and info.module != "xgboost.spark"
    ]


@pytest.fixture(scope="module")
def experiment_id(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow sqlite store and artifact folder of this module's own; no run left RUNNING."""
    folder = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.create_experiment(
            "estimators", artifact_location=(folder / "artifacts").as_uri()
        )
        client = MlflowClient(tracking_uri=uri)
        running = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="attributes.status = 'RUNNING'",
        )
        assert running == [], "an MLflow run was left RUNNING"
    finally:
        mlflow.set_tracking_uri(previous)


def round_trip(model: Pipeline, experiment_id: str, name: str) -> Any:
    """Log the model as the registry does (skops, trusted types, pinned requirements) and
    load it back."""
    trusted = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    with mlflow.start_run(experiment_id=experiment_id, run_name=name):
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name=name,
            skops_trusted_types=trusted,
            pip_requirements=["scikit-learn", *pip_requirements_extra(model)],
        )
    return mlflow.sklearn.load_model(info.model_uri)


def fit_for(task: str, class_name: str) -> Pipeline:
    frame = training_frame()
    model = build_model_pipeline(make_spec(task, class_name), steps=None)
    return model.fit(frame[FEATURES], frame[task])


def assert_same_predictions(loaded: Any, model: Pipeline, task: str) -> None:
    before, after = predict(model, scoring_frame(), task), predict(loaded, scoring_frame(), task)
    assert np.array_equal(after.values, before.values)
    if task != "regression":
        assert after.classes == before.classes
        assert after.probabilities is not None and before.probabilities is not None
        assert np.array_equal(after.probabilities, before.probabilities)


@pytest.mark.parametrize(("task", "class_name"), cases())
def test_every_built_in_estimator_fits_predicts_and_survives_skops(
    task: str, class_name: str
) -> None:
    model = fit_for(task, class_name)
    frame = training_frame()
    metrics = metrics_for(task, frame[task].to_numpy(), predict(model, frame[FEATURES], task))
    assert all(np.isfinite(value) for value in metrics.values())
    # The scoring rows include a colour no training row had.
    scored = predict(model, scoring_frame(), task)
    if task != "regression":
        assert scored.classes == tuple(sorted(frame[task].unique()))
        assert set(scored.values) <= set(scored.classes)
    # What mlflow.sklearn does with serialization_format="skops", in memory.
    data = skops.io.dumps(model)
    trusted = skops.io.get_untrusted_types(data=data)
    assert_same_predictions(skops.io.loads(data, trusted=trusted), model, task)


# One estimator of each library through a real MLflow store; the full matrix is marked slow.
MLFLOW_CASES = [
    ("binary", "HistGradientBoostingClassifier"),
    ("regression", "LGBMRegressor"),
    ("multiclass", "LGBMClassifier"),
    ("binary", "XGBClassifier"),
    ("regression", "XGBRegressor"),
]


@pytest.mark.parametrize(
    ("task", "class_name"),
    [
        pytest.param(*case, marks=[] if case in MLFLOW_CASES else [pytest.mark.slow])
        for case in cases()
    ],
)
def test_every_built_in_estimator_round_trips_through_mlflow(
    task: str, class_name: str, experiment_id: str
) -> None:
    model = fit_for(task, class_name)
    assert_same_predictions(round_trip(model, experiment_id, f"{task}_{class_name}"), model, task)


def test_gradient_boosting_scores_an_unseen_category() -> None:
    # GradientBoosting* rejects NaN, so unseen (and missing) categories are coded -1 for it.
    model = fit_for("regression", "GradientBoostingRegressor")
    encoder = model.named_steps["preprocess"].named_transformers_["categories"]
    assert encoder.unknown_value == -1 and encoder.encoded_missing_value == -1
    assert np.isfinite(model.predict(scoring_frame())).all()
    hist = fit_for("regression", "HistGradientBoostingRegressor")
    assert np.isnan(hist.named_steps["preprocess"].named_transformers_["categories"].unknown_value)


def _lightgbm_decisions(model: Pipeline) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()

    def walk(node: dict[str, Any]) -> None:
        if "decision_type" in node:
            found.add((node["split_feature"], node["decision_type"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in model.named_steps["estimator"].booster_.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def test_tree_estimators_split_natively_on_the_category() -> None:
    frame = training_frame(rows=200)
    hist = build_model_pipeline(make_spec("regression", "HistGradientBoostingRegressor"), None)
    assert hist.named_steps["estimator"].categorical_features == [True, False]

    lgbm = build_model_pipeline(make_spec("regression", "LGBMRegressor"), None)
    assert lgbm.named_steps["estimator"].get_params()["categorical_column"] == [0]
    lgbm.fit(frame[FEATURES], frame["regression"])
    decisions = _lightgbm_decisions(lgbm)
    assert (0, "==") in decisions and (0, "<=") not in decisions

    xgb = build_model_pipeline(make_spec("binary", "XGBClassifier"), None)
    xgb.fit(frame[FEATURES], frame["binary"])
    booster = xgb.named_steps["estimator"].estimator_.get_booster()
    assert booster.feature_types == ["c", "q"]
    splits = booster.trees_to_dataframe()
    assert splits.loc[splits["Feature"] == "f0", "Category"].notna().any()


def test_spec_params_about_categories_win() -> None:
    spec = make_spec("regression", "LGBMRegressor", {"n_estimators": 5, "cat_feature": []})
    estimator = build_model_pipeline(spec, None).named_steps["estimator"]
    assert "categorical_column" not in estimator.get_params()
    spec = make_spec("regression", "HistGradientBoostingRegressor", {"categorical_features": None})
    assert build_model_pipeline(spec, None).named_steps["estimator"].categorical_features is None


def test_categorical_mask_reads_the_preprocessor_layout() -> None:
    assert categorical_mask(build_preprocessor(["a", "b", "c"], ["b"], tree_model=True)) == [
        True,
        False,
        False,
    ]
    # One-hot output has no fixed width before fitting: no hints.
    assert categorical_mask(build_preprocessor(["a", "b"], ["b"], tree_model=False)) == []
    custom = ColumnTransformer(
        [
            ("numbers", Pipeline([("scale", StandardScaler())]), ["a"]),
            ("codes", OrdinalEncoder(), ["b"]),
        ]
    )
    assert categorical_mask(custom) == [False, True]
    opaque = ColumnTransformer([("log", FunctionTransformer(np.log1p), ["a"])])
    assert categorical_mask(opaque) == []
    assert categorical_mask(FunctionTransformer()) == []


def test_linear_estimator_gets_no_categorical_params() -> None:
    spec = EstimatorSpec.model_validate({"class": "LogisticRegression", "params": {"C": 0.5}})
    estimator = make_estimator(spec, "binary", None, [True, False])
    assert estimator.get_params()["C"] == 0.5


@pytest.mark.parametrize("labels", [["no", "yes"], [False, True], [3, 7], ["a", "b", "c"]])
def test_xgboost_classifier_takes_any_labels(labels: list[Any]) -> None:
    rng = np.random.default_rng(1)
    inputs = pd.DataFrame({"colour": rng.choice(["red", "blue"], 40), "size": rng.normal(size=40)})
    y = np.array(labels, dtype=object)[np.arange(40) % len(labels)]
    model = build_model_pipeline(
        make_spec("multiclass" if len(labels) > 2 else "binary", "XGBClassifier"), None
    )
    model.fit(inputs, y if not isinstance(labels[0], bool) else y.astype(bool))
    assert list(model.classes_) == sorted(labels)
    probabilities = model.predict_proba(inputs)
    assert probabilities.shape == (40, len(labels))
    assert list(model.predict(inputs)) == list(
        np.array(sorted(labels))[probabilities.argmax(axis=1)]
    )
    assert set(model.predict(inputs)) <= set(labels)


def test_label_encoded_classifier_follows_sklearn_conventions() -> None:
    wrapper = LabelEncodedClassifier(RandomForestClassifier(n_estimators=3))
    assert set(wrapper.get_params()) >= {"estimator", "estimator__n_estimators"}
    assert not hasattr(wrapper, "classes_")
    with pytest.raises(NotFittedError):
        wrapper.predict(np.zeros((1, 1)))
    wrapper.fit(np.array([[0.0], [1.0], [2.0]]), ["b", "a", "b"])
    assert list(wrapper.classes_) == ["a", "b"]
    assert wrapper.n_features_in_ == 1
    # The estimator given is a template: the fitted copy is estimator_.
    assert not hasattr(wrapper.estimator, "classes_")


def test_steps_factory_and_preprocessor_come_from_the_project(experiment_id: str) -> None:
    calls: list[tuple[Any, str]] = []

    def forest(**params: Any) -> RandomForestClassifier:
        return RandomForestClassifier(**params)

    def preprocessor(features: Any, family: str) -> ColumnTransformer:
        calls.append((features, family))
        return build_preprocessor(features.columns, features.categorical, tree_model=True)

    module = types.ModuleType("tabml_projects.toy.steps")
    module.forest = forest  # type: ignore[attr-defined]
    steps = ProjectSteps(
        module_name=module.__name__, build_preprocessor=preprocessor, module=module
    )
    spec = make_spec("binary", "steps:forest", {"n_estimators": 4, "random_state": 0})
    model = build_model_pipeline(spec, steps)
    assert isinstance(model.named_steps["estimator"], RandomForestClassifier)
    assert model.named_steps["estimator"].n_estimators == 4
    assert calls == [(spec.features, "tree")]
    frame = training_frame()
    model.fit(frame[FEATURES], frame["binary"])
    loaded = round_trip(model, experiment_id, "steps_forest")
    assert np.array_equal(
        loaded.predict_proba(scoring_frame()), model.predict_proba(scoring_frame())
    )


def test_steps_factory_errors_are_named() -> None:
    module = types.ModuleType("tabml_projects.toy.steps")
    module.regressor = lambda **params: object()  # type: ignore[attr-defined]
    module.strict = lambda alpha: RandomForestClassifier()  # type: ignore[attr-defined]
    steps = ProjectSteps(module=module)
    spec = EstimatorSpec.model_validate({"class": "steps:regressor"})
    with pytest.raises(
        ValueError,
        match=r"'steps:regressor' to return a classifier .* without \['fit', 'predict_proba'\]",
    ):
        make_estimator(spec, "binary", steps)
    with pytest.raises(ValueError, match="the project has no steps module"):
        make_estimator(spec, "binary", None)
    strict = EstimatorSpec.model_validate({"class": "steps:strict", "params": {"beta": 1}})
    with pytest.raises(ValueError, match=r"estimator.params for steps:strict: .*beta"):
        make_estimator(strict, "binary", steps)


def test_unknown_param_and_wrong_kind_give_value_errors() -> None:
    spec = EstimatorSpec.model_validate(
        {"class": "RandomForestClassifier", "params": {"n_trees": 3}}
    )
    with pytest.raises(ValueError, match=r"estimator.params for RandomForestClassifier: .*n_trees"):
        make_estimator(spec, "binary", None)
    regressor = EstimatorSpec.model_validate({"class": "Ridge"})
    with pytest.raises(
        ValueError, match=r"a multiclass target needs a classifier, found Ridge \(a regressor\)"
    ):
        make_estimator(regressor, "multiclass", None)
    with pytest.raises(ValueError, match=r"target\.task: expected one of"):
        make_estimator(regressor, "ranking", None)


def test_pip_requirements_extra_pins_lightgbm_and_xgboost_only_when_used() -> None:
    import lightgbm
    import xgboost

    frame = training_frame()
    for class_name, expected in (
        ("LGBMClassifier", [f"lightgbm=={lightgbm.__version__}"]),
        ("XGBClassifier", [f"xgboost-cpu=={xgboost.__version__}"]),
        ("RandomForestClassifier", []),
    ):
        model = build_model_pipeline(make_spec("binary", class_name), None)
        model.fit(frame[FEATURES], frame["binary"])
        assert pip_requirements_extra(model) == expected, class_name


def test_boolean_target_through_the_pipeline() -> None:
    frame = training_frame()
    y = frame["binary"] == "yes"
    model = build_model_pipeline(make_spec("binary_bool", "LGBMClassifier"), None).fit(
        frame[FEATURES], y
    )
    predictions = predict(model, scoring_frame(), "binary")
    assert predictions.classes == (False, True)
    assert predictions.values.dtype == bool
    assert (
        metrics_for("binary", y.to_numpy(), predict(model, frame[FEATURES], "binary"))["roc_auc"]
        > 0.5
    )


@pytest.fixture(autouse=True)
def _no_stray_mlruns(tmp_path: Path) -> Iterator[None]:
    # Artifacts go to the module's temporary store, never to ./mlruns of the checkout.
    before = Path("mlruns").exists()
    yield
    assert Path("mlruns").exists() == before
