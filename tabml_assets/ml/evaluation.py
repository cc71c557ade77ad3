"""The promotion gate: pure functions, no I/O (metrics live in ml/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from tabml_assets.ml.metrics import regression_metrics
from tabml_assets.spec import HIGHER_IS_BETTER, ValidationSpec

__all__ = [
    "BEATS_CHAMPION",
    "NO_WORSE_THAN_CHAMPION",
    "GateResult",
    "champion_comparisons",
    "deciding_rule",
    "evaluate_gate",
    "gate_check_names",
    "regression_metrics",
]

NO_WORSE_THAN_CHAMPION = "no_worse_than_champion"
BEATS_CHAMPION = "beats_champion"


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
    results += champion_comparisons(validation, primary_metric, challenger, champion, higher)
    return results


def deciding_rule(gate: list[GateResult], has_champion: bool) -> str:
    """Which rule decided the verdict, in words the step card shows."""
    failed = [g.check_name for g in gate if not g.passed]
    if failed:
        return "failed " + ", ".join(failed)
    if not gate:
        return "no gate"
    compared = [g.check_name for g in gate if g.check_name in (NO_WORSE_THAN_CHAMPION, BEATS_CHAMPION)]
    if compared and has_champion:
        return "passed the absolute criteria and " + ", ".join(compared)
    return "first model: the absolute criteria alone" if not has_champion else "passed the absolute criteria"


def gate_check_names(validation: ValidationSpec) -> list[str]:
    """The check names `evaluate_gate` reports, known when definitions load."""
    names = [
        f"{metric}_{side}"
        for metric, bound in validation.criteria.items()
        for side, value in (("max", bound.max), ("min", bound.min))
        if value is not None
    ]
    if validation.max_worse_than_champion_pct is not None:
        names.append(NO_WORSE_THAN_CHAMPION)
    if validation.min_improvement_over_champion_pct is not None:
        names.append(BEATS_CHAMPION)
    return names


def champion_comparisons(
    validation: ValidationSpec,
    primary_metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    higher: Callable[[str], bool],
) -> list[GateResult]:
    """The rules that compare the challenger with the current champion on the same test split.

    `no_worse_than_champion` (on by default) allows at most `max_worse_than_champion_pct`
    percent worse; `beats_champion` (opt-in) wants `min_improvement_over_champion_pct` better.
    Without a champion both pass and say so: a first model meets the absolute criteria only.
    """
    rules = [
        (NO_WORSE_THAN_CHAMPION, validation.max_worse_than_champion_pct, -1.0),
        (BEATS_CHAMPION, validation.min_improvement_over_champion_pct, 1.0),
    ]
    value = challenger[primary_metric]
    comparison = ">=" if higher(primary_metric) else "<="
    results = []
    for check_name, pct, direction in rules:
        if pct is None:
            continue
        if champion is None:
            results.append(
                GateResult(
                    check_name=check_name, metric=primary_metric, value=value,
                    threshold=float("nan"), comparison=comparison, passed=True,
                    description="passed: no champion yet, only the absolute criteria apply",
                )
            )
            continue
        base = champion[primary_metric]
        # Improvement is upwards for a higher-is-better metric, downwards otherwise; a
        # tolerance moves the bound the other way.
        step = abs(base) * pct / 100 * direction
        threshold = base + step if higher(primary_metric) else base - step
        passed = bool(value >= threshold) if comparison == ">=" else bool(value <= threshold)
        if check_name == NO_WORSE_THAN_CHAMPION:
            rule = f"champion {base:.4g}, at most {pct:g}% worse" if pct else f"champion {base:.4g}, no worse"
        else:
            rule = f"champion {base:.4g} improved by {pct:g}%"
        results.append(
            GateResult(
                check_name=check_name, metric=primary_metric, value=value,
                threshold=float(threshold), comparison=comparison, passed=passed,
                description=(
                    f"{'passed' if passed else 'FAILED'}: challenger {primary_metric} = {value:.4g}, "
                    f"required {comparison} {threshold:.4g} ({rule})"
                ),
            )
        )
    return results
