"""Early stopping of boosted trees on the window's validation split, and the fixed-size refit.

`split.early_stopping_rounds: N` fits the model on the train split, adding trees until the
validation split's loss has not improved for N rounds; `with_iterations` then gives the same
pipeline with exactly that many trees and no early stopping, for the refit on train +
validation (which has no holdout left to stop on). The test split is never seen.

Each library names the mechanism differently:

- HistGradientBoosting*: `early_stopping=True, n_iter_no_change=N`, `fit(X_val=, y_val=)`;
  the count is `n_iter_`, refit with `max_iter`.
- LGBM*: `fit(eval_set=, callbacks=[lightgbm.early_stopping(N)])`; the count is
  `best_iteration_`, refit with `n_estimators`.
- XGB*: `early_stopping_rounds=N`, `fit(eval_set=)`; the count is `best_iteration + 1`, refit
  with `n_estimators`. XGBClassifier sits in `LabelEncodedClassifier`, whose labels the
  validation targets are encoded to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from tabml_assets.ml.estimators import LabelEncodedClassifier

SUPPORTED = "HistGradientBoosting*, LGBM* and XGB* estimators"


def _family(estimator: Any) -> str:
    name = type(estimator).__name__
    for prefix in ("HistGradientBoosting", "LGBM", "XGB"):
        if name.startswith(prefix):
            return prefix
    raise ValueError(
        f"split.early_stopping_rounds: supported for {SUPPORTED}, found {name}; remove the key "
        "or choose one of those estimators"
    )


def fit_with_early_stopping(
    model: Pipeline, X: Any, y: np.ndarray, X_val: Any, y_val: np.ndarray, rounds: int
) -> int:
    """Fit `model` in place on (X, y), stopping on (X_val, y_val); return the trees it kept.

    The preprocessing is fitted on the train rows only and transforms the validation rows, as
    the fitted Pipeline would at scoring time.
    """
    if len(X_val) == 0:
        raise ValueError(
            "split.early_stopping_rounds: needs validation rows to stop on, found an empty "
            "validation split (split.validation is 0 or the window too small)"
        )
    estimator = model.steps[-1][1]
    wrapped = estimator if isinstance(estimator, LabelEncodedClassifier) else None
    inner = wrapped.estimator if wrapped is not None else estimator
    family = _family(inner)
    preprocess = Pipeline(model.steps[:-1]) if len(model.steps) > 1 else None
    X_fit = preprocess.fit_transform(X, y) if preprocess is not None else X
    X_stop = preprocess.transform(X_val) if preprocess is not None else X_val
    if wrapped is not None:
        y_val = _encoded_like_training(y, y_val)
    if family == "HistGradientBoosting":
        estimator.set_params(early_stopping=True, n_iter_no_change=rounds)
        estimator.fit(X_fit, y, X_val=X_stop, y_val=y_val)
        return int(estimator.n_iter_)
    if family == "LGBM":
        import lightgbm

        estimator.fit(
            X_fit, y, eval_set=[(X_stop, y_val)],
            callbacks=[lightgbm.early_stopping(rounds, verbose=False)],
        )
        return int(estimator.best_iteration_) or int(estimator.n_estimators)
    target = wrapped if wrapped is not None else estimator
    if wrapped is not None:
        wrapped.set_params(estimator__early_stopping_rounds=rounds)
    else:
        estimator.set_params(early_stopping_rounds=rounds)
    target.fit(X_fit, y, eval_set=[(X_stop, y_val)], verbose=False)
    booster_owner = wrapped.estimator_ if wrapped is not None else estimator
    return int(booster_owner.best_iteration) + 1


def _encoded_like_training(y: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    encoder = LabelEncoder().fit(y)
    unseen = sorted(set(np.unique(y_val).tolist()) - set(encoder.classes_.tolist()))
    if unseen:
        raise ValueError(
            f"split.early_stopping_rounds: the validation split holds classes {unseen} that the "
            f"train split does not ({encoder.classes_.tolist()}); widen the window or drop the key"
        )
    return np.asarray(encoder.transform(y_val))


def with_iterations(model: Pipeline, iterations: int) -> Pipeline:
    """An unfitted copy of `model` that grows exactly `iterations` trees, without early stopping."""
    copy = clone(model)
    estimator = copy.steps[-1][1]
    wrapped = isinstance(estimator, LabelEncodedClassifier)
    family = _family(estimator.estimator if wrapped else estimator)
    if family == "HistGradientBoosting":
        estimator.set_params(max_iter=iterations, early_stopping=False)
    elif family == "LGBM":
        estimator.set_params(n_estimators=iterations)
    elif wrapped:
        estimator.set_params(estimator__n_estimators=iterations, estimator__early_stopping_rounds=None)
    else:
        estimator.set_params(n_estimators=iterations, early_stopping_rounds=None)
    return copy
