"""Regression metrics and the promotion gate: pure functions, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tabml_assets.spec import HIGHER_IS_BETTER, ValidationSpec


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² and MAPE (in percent; rows with a zero target are left out of MAPE)."""
    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"metrics: expected equal lengths, found {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("metrics: expected at least one row, found none")
    errors = y_pred - y_true
    ss_res = float(np.sum(errors**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    nonzero = y_true != 0
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
        "mape": float(np.mean(np.abs(errors[nonzero] / y_true[nonzero])) * 100) if nonzero.any() else float("nan"),
    }


@dataclass(frozen=True)
class GateResult:
    """One promotion criterion: which metric, its value, the bound and whether it passed."""

    check_name: str
    metric: str
    value: float
    threshold: float
    comparison: str  # "<=" or ">="
    passed: bool
    description: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate_gate(
    validation: ValidationSpec,
    primary_metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
) -> list[GateResult]:
    """Compare the challenger's test metrics with the spec's thresholds and the champion."""
    results: list[GateResult] = []
    for metric, bound in validation.criteria.items():
        value = challenger[metric]
        for comparison, threshold in (("<=", bound.max), (">=", bound.min)):
            if threshold is None:
                continue
            passed = bool(value <= threshold) if comparison == "<=" else bool(value >= threshold)
            verdict = "passed" if passed else "FAILED"
            results.append(
                GateResult(
                    check_name=f"{metric}_{'max' if comparison == '<=' else 'min'}",
                    metric=metric,
                    value=value,
                    threshold=float(threshold),
                    comparison=comparison,
                    passed=passed,
                    description=f"{verdict}: {metric} = {value:.4g}, required {comparison} {threshold:g}",
                )
            )
    if validation.min_improvement_over_champion_pct is not None:
        pct = validation.min_improvement_over_champion_pct
        if champion is None:
            results.append(
                GateResult(
                    check_name="beats_champion",
                    metric=primary_metric,
                    value=challenger[primary_metric],
                    threshold=float("nan"),
                    comparison="<=" if not HIGHER_IS_BETTER[primary_metric] else ">=",
                    passed=True,
                    description="passed: no champion yet, nothing to beat",
                )
            )
        else:
            base = champion[primary_metric]
            if HIGHER_IS_BETTER[primary_metric]:
                threshold, comparison = base + abs(base) * pct / 100, ">="
                passed = challenger[primary_metric] >= threshold
            else:
                threshold, comparison = base - abs(base) * pct / 100, "<="
                passed = challenger[primary_metric] <= threshold
            verdict = "passed" if passed else "FAILED"
            results.append(
                GateResult(
                    check_name="beats_champion",
                    metric=primary_metric,
                    value=challenger[primary_metric],
                    threshold=float(threshold),
                    comparison=comparison,
                    passed=bool(passed),
                    description=(
                        f"{verdict}: challenger {primary_metric} = {challenger[primary_metric]:.4g}, "
                        f"required {comparison} {threshold:.4g} (champion {base:.4g} improved by {pct:g}%)"
                    ),
                )
            )
    return results


def gate_check_names(validation: ValidationSpec) -> list[str]:
    """The check names `evaluate_gate` reports, known when definitions load."""
    names = [
        f"{metric}_{side}"
        for metric, bound in validation.criteria.items()
        for side, value in (("max", bound.max), ("min", bound.min))
        if value is not None
    ]
    if validation.min_improvement_over_champion_pct is not None:
        names.append("beats_champion")
    return names
