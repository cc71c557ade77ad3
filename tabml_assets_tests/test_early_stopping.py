"""split.early_stopping_rounds: boosted trees stop on the validation split, and the refit on
train + validation grows the number of trees chosen; with negative cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tabml_assets.ml.training import fit_model, split_chronologically
from tabml_assets.spec import PipelineSpec

# Far more trees than a few hundred noisy rows support, so early stopping has to cut them.
MANY_TREES: dict[str, dict[str, Any]] = {
    "HistGradientBoostingRegressor": {"max_iter": 500, "learning_rate": 0.3, "random_state": 0},
    "HistGradientBoostingClassifier": {"max_iter": 500, "learning_rate": 0.3, "random_state": 0},
    "LGBMRegressor": {"n_estimators": 500, "learning_rate": 0.3, "verbose": -1},
    "LGBMClassifier": {"n_estimators": 500, "learning_rate": 0.3, "verbose": -1},
    "XGBRegressor": {"n_estimators": 500, "learning_rate": 0.3, "n_jobs": 1},
    "XGBClassifier": {"n_estimators": 500, "learning_rate": 0.3, "n_jobs": 1},
}


def toy_window(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    noise = rng.normal(scale=2.0, size=rows)
    return pd.DataFrame(
        {
            "seen_at": pd.date_range("2026-01-01", periods=rows, freq="min"),
            "size": size,
            "colour": colour,
            "regression": 2 * size + 3 * (colour == "red") + noise,
            "binary": np.where(size + noise / 2 > 0, "yes", "no"),
        }
    )


def toy_spec(task: str, class_name: str, rounds: int | None, validation: float = 0.2) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "toy",
            "dataset": {
                "event_time": "seen_at",
                "columns": {
                    "seen_at": {"type": "datetime"},
                    "colour": {"type": "string"},
                    "size": {"type": "float"},
                    task: {"type": "float" if task == "regression" else "string"},
                },
            },
            "features": {"columns": ["colour", "size"], "categorical": ["colour"]},
            "target": {"column": task, "task": task},
            "partitions": {"start_date": "2026-01-01"},
            "split": {
                "train": 0.8 - validation, "validation": validation, "test": 0.2,
                "early_stopping_rounds": rounds,
            },
            "training_window_days": 7,
            "estimator": {"class": class_name, "params": MANY_TREES.get(class_name, {})},
        }
    )


def trees_of(estimator: Any) -> int:
    inner = getattr(estimator, "estimator_", estimator)
    if hasattr(inner, "n_iter_"):
        return int(inner.n_iter_)
    if hasattr(inner, "booster_"):
        return int(inner.booster_.num_trees())
    return int(inner.get_booster().num_boosted_rounds())


@pytest.mark.parametrize(
    ("task", "class_name"),
    [
        ("regression", "HistGradientBoostingRegressor"),
        ("binary", "HistGradientBoostingClassifier"),
        ("regression", "LGBMRegressor"),
        ("binary", "LGBMClassifier"),
        ("regression", "XGBRegressor"),
        ("binary", "XGBClassifier"),
    ],
)
def test_early_stopping_picks_the_trees_and_the_refit_grows_as_many(task: str, class_name: str) -> None:
    spec = toy_spec(task, class_name, rounds=5)
    frame = toy_window().drop(columns=[t for t in ("regression", "binary") if t != task])
    splits = split_chronologically(frame, spec.split, spec.event_time)
    fit = fit_model(splits, spec, steps=None)
    assert fit.early_stopping_iterations is not None
    assert 1 <= fit.early_stopping_iterations < 500
    # The registered model is the refit on train + validation, with exactly the chosen trees.
    assert fit.fitted_rows == len(splits.train) + len(splits.validation)
    assert trees_of(fit.model.named_steps["estimator"]) == fit.early_stopping_iterations
    full = fit_model(splits, toy_spec(task, class_name, rounds=None), steps=None)
    assert full.early_stopping_iterations is None
    assert trees_of(full.model.named_steps["estimator"]) == 500


def test_early_stopping_without_refit_registers_the_stopped_model() -> None:
    spec = toy_spec("regression", "HistGradientBoostingRegressor", rounds=5)
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"refit_on_validation": False})})
    frame = toy_window().drop(columns=["binary"])
    fit = fit_model(split_chronologically(frame, spec.split, spec.event_time), spec, steps=None)
    assert fit.early_stopping_iterations is not None
    assert fit.model.named_steps["estimator"].n_iter_ == fit.early_stopping_iterations


def test_early_stopping_names_the_key_for_an_estimator_without_it() -> None:
    spec = toy_spec("regression", "RandomForestRegressor", rounds=5)
    frame = toy_window().drop(columns=["binary"])
    with pytest.raises(ValueError, match=r"split.early_stopping_rounds: supported for .*found RandomForestRegressor"):
        fit_model(split_chronologically(frame, spec.split, spec.event_time), spec, steps=None)


def test_early_stopping_needs_a_validation_split() -> None:
    spec = toy_spec("regression", "HistGradientBoostingRegressor", rounds=5, validation=0.0)
    frame = toy_window().drop(columns=["binary"])
    with pytest.raises(ValueError, match="needs validation rows to stop on, found an empty validation split"):
        fit_model(split_chronologically(frame, spec.split, spec.event_time), spec, steps=None)


def test_early_stopping_rounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        toy_spec("regression", "HistGradientBoostingRegressor", rounds=0)
