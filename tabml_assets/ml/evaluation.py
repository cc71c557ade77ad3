"""The promotion gate: pure functions, no I/O (metrics live in ml/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from tabml_assets.ml.metrics import regression_metrics
from tabml_assets.spec import HIGHER_IS_BETTER, ValidationSpec

__all__ = ["GateResult", "evaluate_gate", "gate_check_names", "regression_metrics"]


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
    higher_is_better: Callable[[str], bool] | None = None,
) -> list[GateResult]:
    """Compare the challenger's test metrics with the spec's thresholds and the champion.

    `higher_is_better` knows the project's own metrics; the built-in ones by default.
    """
    higher = higher_is_better or HIGHER_IS_BETTER.__getitem__
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
                    comparison="<=" if not higher(primary_metric) else ">=",
                    passed=True,
                    description="passed: no champion yet, nothing to beat",
                )
            )
        else:
            base = champion[primary_metric]
            if higher(primary_metric):
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
