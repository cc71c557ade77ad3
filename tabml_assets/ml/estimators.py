"""The model pipeline for any task: the spec's estimator behind the preprocessing, with native
categorical splits wherever the estimator has them. Pure functions, no I/O.

Config never imports arbitrary classes: an estimator is one of spec.ESTIMATORS, or a callable
of the project's own steps module (`steps:<name>`).

Native categorical handling, given which columns of the preprocessor's output are ordinal codes:

- HistGradientBoosting*: `categorical_features=<mask>`.
- LightGBM: the constructor parameter `categorical_column=[indices]`, one of the documented
  aliases of LightGBM's `categorical_feature` parameter. LGBM* estimators pass unknown
  constructor parameters on to their Dataset, so the categorical columns travel with the
  estimator (through `clone`, `set_params` and serialization) and no fit-time argument has to
  cross the Pipeline. The alias and not `categorical_feature` itself: that name collides with
  `fit(categorical_feature=...)` and LightGBM warns on every fit that it found it in params.
- XGBoost: `enable_categorical=True` with `feature_types` ("c" categorical, "q" numeric), which
  XGBoost accepts for numpy input as well as for pandas categoricals.

An unseen category is NaN after tabml's OrdinalEncoder; all three route it like a missing value.
For an estimator that rejects NaN (GradientBoosting*), unseen and missing categories are coded -1.

Every built-in estimator, in its Pipeline, saves with skops (MLflow's default format): LightGBM's
and XGBoost's boosters pickle their state as a model string / raw bytes, which skops stores
without pickle. The types to trust beyond sklearn's are `lightgbm.basic.Booster`,
`lightgbm.sklearn.LGBM*`, `collections.OrderedDict`, `xgboost.core.Booster`,
`xgboost.sklearn.XGB*` and `tabml_assets.ml.estimators.LabelEncodedClassifier`; loading such a
model needs lightgbm / xgboost installed (`pip_requirements_extra`) and, for XGBClassifier,
tabml_assets importable.

LGBM* and XGB* take any keyword parameter and hand it to their native library, which only
warns about a name it does not know (LightGBM not even that with verbose=-1); a misspelt
parameter of theirs is therefore not a ValueError here, unlike scikit-learn's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    LabelEncoder,
    MaxAbsScaler,
    MinMaxScaler,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from tabml_assets.ml.features import build_preprocessor
from tabml_assets.spec import ESTIMATORS, STEPS_PREFIX

if TYPE_CHECKING:
    from tabml_assets.spec import EstimatorSpec, PipelineSpec
    from tabml_assets.steps import ProjectSteps

# The estimator kind each task needs.
TASK_KINDS = {"regression": "regressor", "binary": "classifier", "multiclass": "classifier"}
# LightGBM's aliases of `categorical_feature`; a spec that sets one of them keeps its own.
LIGHTGBM_CATEGORICAL_PARAMS = (
    "categorical_feature",
    "cat_feature",
    "categorical_column",
    "cat_column",
    "categorical_features",
)
# Transformers that turn one input column into one output column, so output positions can be
# read off a ColumnTransformer before it is fitted.
_ONE_TO_ONE = (OrdinalEncoder, StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
# Distributions tabml's model registry pins for every model already.
BASE_DISTRIBUTIONS = frozenset({"scikit-learn", "pandas", "numpy", "scipy", "skops"})
BASE_MODULES = frozenset({"sklearn", "pandas", "numpy", "scipy", "skops"})


class LabelEncodedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that accepts any labels (strings, booleans, integers) for an estimator that
    needs them as 0..k-1 (XGBoost's sklearn API).

    `classes_` are the original labels, sorted; `predict_proba`'s columns follow them, and
    `predict` returns the most probable one, so labels and probabilities always agree.
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any, **fit_params: Any) -> LabelEncodedClassifier:
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        encoded = self.label_encoder_.transform(y)
        self.estimator_ = clone(self.estimator).fit(X, encoded, **fit_params)
        if hasattr(self.estimator_, "n_features_in_"):
            self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(probabilities, axis=1)])

    def __sklearn_tags__(self) -> Any:
        # Missing values are fine exactly when they are for the wrapped estimator.
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = _allows_nan(self.estimator)
        return tags


def _check_kind(estimator: EstimatorSpec, task: str) -> None:
    info = estimator.info
    if task not in TASK_KINDS:
        raise ValueError(f"target.task: expected one of {list(TASK_KINDS)}, found {task!r}")
    if info is not None and info.kind != TASK_KINDS[task]:
        fitting = sorted(name for name, i in ESTIMATORS.items() if i.kind == TASK_KINDS[task])
        raise ValueError(
            f"estimator.class: a {task} target needs a {TASK_KINDS[task]}, found "
            f"{estimator.class_name} (a {info.kind}); expected one of {fitting}"
        )


def _instantiate(name: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"estimator.params for {name}: {exc}") from None


def _native_categorical_params(
    class_name: str, params: dict[str, Any], mask: Sequence[bool]
) -> dict[str, Any]:
    """The constructor parameters that make `class_name` split natively on the masked columns;
    none where the spec's params already say how."""
    if not any(mask):
        return {}
    if class_name.startswith("HistGradientBoosting"):
        return {} if "categorical_features" in params else {"categorical_features": list(mask)}
    if class_name.startswith("LGBM"):
        if any(alias in params for alias in LIGHTGBM_CATEGORICAL_PARAMS):
            return {}
        return {"categorical_column": [i for i, is_category in enumerate(mask) if is_category]}
    if class_name.startswith("XGB"):
        if "feature_types" in params or params.get("enable_categorical") is False:
            return {}
        return {
            "enable_categorical": True,
            "feature_types": ["c" if is_category else "q" for is_category in mask],
        }
    return {}


def make_estimator(
    estimator: EstimatorSpec,
    task: str,
    steps: ProjectSteps | None,
    categorical_mask: Sequence[bool] = (),
) -> Any:
    """Instantiate the spec's estimator for `task`.

    `categorical_mask` says which columns of the preprocessor's output are ordinal category
    codes (empty: unknown or none); allow-listed tree estimators split on them natively. A
    `steps:<name>` factory gets the spec's params only: it owns its estimator's configuration.
    XGBClassifier comes wrapped in `LabelEncodedClassifier`, so it takes any labels.
    """
    _check_kind(estimator, task)
    name = estimator.class_name
    params = dict(estimator.params)
    if name.startswith(STEPS_PREFIX):
        if steps is None or steps.module is None:
            raise ValueError(
                f"estimator.class: {name!r} names the project's steps module, but the project "
                "has no steps module"
            )
        model = _instantiate(name, steps.factory(name.removeprefix(STEPS_PREFIX)), params)
        _check_custom_estimator(name, model, task)
        return model
    info = ESTIMATORS.get(name)
    if info is not None and info.module == "xgboost.spark":
        raise ValueError(
            f"estimator.class: {name} trains on Spark from the window's files "
            "(tabml_assets.ml.spark_training.fit_window_on_spark), not inside a scikit-learn Pipeline"
        )
    if info is None:
        # A spec that skipped validation still never makes training import a class by path.
        raise ValueError(
            f"estimator.class: expected one of {sorted(ESTIMATORS)} or '{STEPS_PREFIX}<callable in "
            f"the project's steps module>', found {name!r}"
        )
    estimator_class = getattr(importlib.import_module(info.module), name)
    native = _native_categorical_params(name, params, categorical_mask)
    model = _instantiate(name, estimator_class, {**params, **native})
    if name == "XGBClassifier":
        return LabelEncodedClassifier(model)
    return model


def _check_custom_estimator(name: str, model: Any, task: str) -> None:
    needed = ["fit", "predict"] if task == "regression" else ["fit", "predict_proba"]
    missing = [method for method in needed if not callable(getattr(model, method, None))]
    if missing:
        raise ValueError(
            f"estimator.class: expected {name!r} to return a {TASK_KINDS[task]} with "
            f"{needed}, found {type(model).__name__} without {missing}"
        )


def _is_one_to_one(transformer: Any) -> bool:
    if isinstance(transformer, str):
        return transformer == "passthrough"
    if isinstance(transformer, Pipeline):
        return all(_is_one_to_one(step) for _, step in transformer.steps)
    return isinstance(transformer, _ONE_TO_ONE)


def _encodes_categories(transformer: Any) -> bool:
    if isinstance(transformer, Pipeline):
        return any(_encodes_categories(step) for _, step in transformer.steps)
    return isinstance(transformer, OrdinalEncoder)


def categorical_mask(preprocessor: Any) -> list[bool]:
    """Which output columns of an unfitted preprocessor are ordinal category codes.

    Read off a ColumnTransformer whose transformers map one column to one column (ordinal
    encoding, passthrough, scaling) and that drops the rest; empty for anything else (one-hot
    encoding, a project's own preprocessor), where no native categorical hints are given.
    """
    if not isinstance(preprocessor, ColumnTransformer) or preprocessor.remainder != "drop":
        return []
    mask: list[bool] = []
    for _, transformer, columns in preprocessor.transformers:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if not isinstance(columns, list | tuple) or not _is_one_to_one(transformer):
            return []
        mask += [_encodes_categories(transformer)] * len(columns)
    return mask


def estimator_family(estimator: EstimatorSpec) -> str:
    """How the preprocessor encodes features for this estimator: "tree" (ordinal codes, no
    scaling) or "linear" (one-hot, scaled). A `steps:` estimator counts as "tree"; its project
    can bring a `build_preprocessor` of its own."""
    info = estimator.info
    return info.family if info is not None else "tree"


def _ordinal_encoders(transformer: Any) -> list[OrdinalEncoder]:
    if isinstance(transformer, OrdinalEncoder):
        return [transformer]
    if isinstance(transformer, ColumnTransformer):
        return [e for _, step, _ in transformer.transformers for e in _ordinal_encoders(step)]
    if isinstance(transformer, Pipeline):
        return [e for _, step in transformer.steps for e in _ordinal_encoders(step)]
    return []


def code_unknown_categories_as_number(preprocessor: Any) -> Any:
    """Ordinal-encode unseen and missing categories as -1 instead of NaN, for an estimator
    that rejects NaN input (GradientBoosting*): without it, scoring a row with a category the
    training window never saw fails."""
    for encoder in _ordinal_encoders(preprocessor):
        if encoder.handle_unknown == "use_encoded_value" and np.isnan(encoder.unknown_value):
            encoder.set_params(unknown_value=-1, encoded_missing_value=-1)
    return preprocessor


def _allows_nan(estimator: Any) -> bool:
    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:
        # Not an sklearn estimator: numeric codes are the safe assumption.
        return False


def build_model_pipeline(pipeline_spec: PipelineSpec, steps: ProjectSteps | None) -> Pipeline:
    """Preprocessing then the estimator: the steps module's `build_preprocessor` when it has
    one, else tabml's; the whole Pipeline is what gets registered and scored."""
    family = estimator_family(pipeline_spec.estimator)
    project_preprocessor = steps.build_preprocessor if steps is not None else None
    if project_preprocessor is not None:
        preprocessor = project_preprocessor(pipeline_spec.features, family)
    else:
        preprocessor = build_preprocessor(
            pipeline_spec.feature_columns,
            pipeline_spec.categorical_columns,
            tree_model=family == "tree",
        )
    estimator = make_estimator(
        pipeline_spec.estimator, pipeline_spec.task, steps, categorical_mask(preprocessor)
    )
    if project_preprocessor is None and not _allows_nan(estimator):
        preprocessor = code_unknown_categories_as_number(preprocessor)
    return Pipeline([("preprocess", preprocessor), ("estimator", estimator)])


def _model_objects(model: Any) -> list[Any]:
    objects = [model]
    if hasattr(model, "get_params"):
        objects += list(model.get_params(deep=True).values())
    return objects


def pip_requirements_extra(model: Any) -> list[str]:
    """Pins for the libraries a model's estimators come from beyond tabml's base requirements
    (e.g. `lightgbm==4.7.0`, `xgboost-cpu==3.2.0`), so a loading environment installs them."""
    modules = {type(value).__module__.split(".")[0] for value in _model_objects(model)}
    # tabml's own code (and the project's) is where the model loads, not a requirement.
    modules -= {*BASE_MODULES, *sys.stdlib_module_names, "tabml_assets", "tabml_projects"}
    if not modules:
        return []
    # Scanning the installed distributions takes a moment; only models with extra libraries do.
    distributions = importlib.metadata.packages_distributions()
    pins = {
        f"{distribution}=={importlib.metadata.version(distribution)}"
        for module in modules
        for distribution in distributions.get(module, [])
        if distribution not in BASE_DISTRIBUTIONS
    }
    return sorted(pins)
