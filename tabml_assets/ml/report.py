"""The evaluation step card: plots, a markdown card for the Dagster UI and a self-contained HTML
report. Pure functions: arrays and frames in, PNG bytes and strings out, no I/O.

Plots are drawn on bare `Figure`s with the Agg canvas, never through pyplot, so rendering keeps
no global state and works the same in a worker process, a thread or a Databricks step.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from tabml_assets.ml.evaluation import GateResult
from tabml_assets.spec import HIGHER_IS_BETTER

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHALLENGER = "challenger"
CHAMPION = "champion"
BASELINE = "naive baseline"
METRIC_LABELS = {
    "rmse": "RMSE", "mae": "MAE", "r2": "R²", "mape": "MAPE",
    "roc_auc": "ROC AUC", "pr_auc": "PR AUC", "log_loss": "log loss", "f1": "F1",
    "precision": "precision", "recall": "recall", "accuracy": "accuracy",
}
MODEL_COLOURS = {CHALLENGER: "#4f43dd", CHAMPION: "#e17a00", BASELINE: "#8a8a8a"}
# Small figures keep the card light: four plots add about 100 KB to the materialization event.
FIGURE_SIZE = (5.4, 3.5)
FIGURE_DPI = 90
MAX_SCATTER_POINTS = 2000
IMPORTANCE_SAMPLE_ROWS = 500
IMPORTANCE_REPEATS = 3


@dataclass(frozen=True)
class Plot:
    """One rendered chart: a title, a one-line reading guide and the PNG bytes."""

    title: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class ModelScore:
    """One model's metrics on the test split; `version` is None for the naive baseline."""

    label: str
    metrics: dict[str, float]
    version: str | None = None

    @property
    def name(self) -> str:
        return f"{self.label} v{self.version}" if self.version else self.label


@dataclass(frozen=True)
class StepCard:
    """Everything the card shows; rendered as markdown for Dagster and as HTML for MLflow."""

    title: str
    verdict: str
    facts: list[tuple[str, str]]
    scores: list[ModelScore]
    gate: list[GateResult]
    plots: list[Plot]
    # Which of the project's own metrics are better when larger (built-in ones are known).
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)


def _png(figure: Figure) -> bytes:
    # matplotlib is imported when a report is drawn, not when definitions load (0.4 s).
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


def _new_axes(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE)
    axes: Axes = figure.subplots()
    axes.set_title(title, fontsize=11)
    axes.grid(alpha=0.3)
    return figure, axes


def _check_lengths(y_true: np.ndarray, **others: np.ndarray) -> None:
    for name, values in others.items():
        if len(values) != len(y_true):
            raise ValueError(
                f"report: expected {name} to have one value per test row ({len(y_true)}), "
                f"found {len(values)}"
            )
    if len(y_true) == 0:
        raise ValueError("report: expected at least one test row, found none")


def plot_predicted_vs_actual(
    y_true: np.ndarray, y_pred: np.ndarray, target: str, seed: int = 0
) -> Plot:
    """Challenger predictions against the truth; points on the diagonal are exact."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    _check_lengths(y_true, predictions=y_pred)
    if len(y_true) > MAX_SCATTER_POINTS:
        rows = np.random.default_rng(seed).choice(len(y_true), MAX_SCATTER_POINTS, replace=False)
        y_true, y_pred = y_true[rows], y_pred[rows]
    figure, axes = _new_axes("Predicted vs actual (challenger)")
    axes.scatter(y_true, y_pred, s=7, alpha=0.35, color=MODEL_COLOURS[CHALLENGER], linewidths=0)
    low = float(min(y_true.min(), y_pred.min()))
    high = float(max(y_true.max(), y_pred.max()))
    axes.plot([low, high], [low, high], color="#333333", linewidth=1, linestyle="--", label="exact")
    axes.set_xlabel(f"actual {target}")
    axes.set_ylabel(f"predicted {target}")
    axes.legend(loc="upper left", fontsize=8)
    return Plot(
        "Predicted vs actual",
        "Each test row; the dashed diagonal is a perfect prediction.",
        _png(figure),
    )


def plot_residual_histogram(y_true: np.ndarray, y_pred: np.ndarray, target: str) -> Plot:
    """Distribution of challenger errors (predicted minus actual)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    _check_lengths(y_true, predictions=y_pred)
    residuals = y_pred - y_true
    figure, axes = _new_axes("Residuals (challenger)")
    axes.hist(residuals, bins=40, color=MODEL_COLOURS[CHALLENGER], alpha=0.8)
    axes.axvline(0, color="#333333", linewidth=1, linestyle="--")
    axes.set_xlabel(f"predicted − actual {target}")
    axes.set_ylabel("test rows")
    mean, std = float(residuals.mean()), float(residuals.std())
    axes.text(
        0.98, 0.95, f"mean {mean:+.2f}\nstd {std:.2f}", transform=axes.transAxes,
        ha="right", va="top", fontsize=8,
    )
    return Plot(
        "Residual histogram",
        f"Centred on 0 means unbiased; mean {mean:+.2f}, standard deviation {std:.2f}.",
        _png(figure),
    )


def error_by_hour(
    hours: np.ndarray, y_true: np.ndarray, predictions: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Mean absolute error per event-time hour (rows: hours present in the test split; columns: models)."""
    hours = np.asarray(hours)
    y_true = np.asarray(y_true, float)
    _check_lengths(y_true, hours=hours, **{k: np.asarray(v) for k, v in predictions.items()})
    errors = pd.DataFrame(
        {name: np.abs(np.asarray(pred, float) - y_true) for name, pred in predictions.items()}
    )
    errors["hour"] = hours.astype(int)
    return errors.groupby("hour").mean().sort_index()


def plot_error_by_hour(
    hours: np.ndarray, y_true: np.ndarray, predictions: Mapping[str, np.ndarray], time_column: str = "event time"
) -> Plot:
    """Mean absolute error per event-time hour for each model: where in the day a model struggles."""
    table = error_by_hour(hours, y_true, predictions)
    figure, axes = _new_axes("Error by hour of day")
    for name in table.columns:
        axes.plot(
            table.index, table[name], marker="o", markersize=3, linewidth=1.5,
            color=MODEL_COLOURS.get(name), label=name,
        )
    axes.set_xticks(range(0, 24, 3))
    axes.set_xlim(-0.5, 23.5)
    axes.set_xlabel(f"hour of {time_column} (UTC)")
    axes.set_ylabel("mean absolute error")
    axes.legend(fontsize=8)
    worst = int(table[CHALLENGER].idxmax()) if CHALLENGER in table else int(table.iloc[:, 0].idxmax())
    return Plot(
        "Error by hour of day",
        f"Mean absolute error per hour of {time_column} (UTC) of the test rows; the challenger "
        f"does worst at {worst:02d}:00.",
        _png(figure),
    )


def feature_importance(
    model: object,
    inputs: pd.DataFrame,
    target: np.ndarray,
    sample_rows: int = IMPORTANCE_SAMPLE_ROWS,
    repeats: int = IMPORTANCE_REPEATS,
    seed: int = 0,
    scoring: Callable[[object, pd.DataFrame, np.ndarray], float] | str = "neg_root_mean_squared_error",
    metric: str = "rmse",
) -> pd.DataFrame:
    """Permutation importance on a sample of the test split: how much `metric` worsens when a
    column is shuffled (`scoring` returns a value where higher is better, as sklearn's do).

    A sample and few repeats keep it to a few hundred predictions per column; the ranking is
    what the card needs, not a precise estimate.
    """
    target = np.asarray(target)
    _check_lengths(target, inputs=inputs.to_numpy())
    if len(inputs) > sample_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(inputs), sample_rows, replace=False))
        inputs, target = inputs.iloc[rows], target[rows]
    result = permutation_importance(
        model, inputs, target, scoring=scoring, n_repeats=repeats, random_state=seed,
    )
    return (
        pd.DataFrame(
            {
                "feature": list(inputs.columns),
                "worsening": result.importances_mean,
                "std": result.importances_std,
            }
        )
        .sort_values("worsening", ascending=False, kind="stable")
        .reset_index(drop=True)
        # The card states what the figure rests on: how many test rows, shuffled how often.
        .assign(metric=metric, sample_rows=len(inputs), repeats=repeats)
    )


def plot_feature_importance(importance: pd.DataFrame) -> Plot:
    """Horizontal bars of `feature_importance`, most important on top."""
    if importance.empty:
        raise ValueError("report: expected at least one feature importance row, found none")
    metric = str(importance["metric"].iloc[0]) if "metric" in importance.columns else "rmse"
    label = METRIC_LABELS.get(metric, metric)
    ordered = importance.iloc[::-1]
    figure, axes = _new_axes("Permutation feature importance (challenger)")
    axes.barh(
        ordered["feature"], ordered["worsening"], xerr=ordered["std"],
        color=MODEL_COLOURS[CHALLENGER], alpha=0.85,
    )
    axes.set_xlabel(f"how much {label} worsens when the column is shuffled")
    top = importance.iloc[0]
    return Plot(
        "Permutation feature importance",
        f"Shuffling {top['feature']} worsens {label} by {top['worsening']:.3g}; "
        "near-zero bars carry little signal."
        + (
            f" Measured on a random sample of {int(top['sample_rows']):,} test rows, each column "
            f"shuffled {int(top['repeats'])} times."
            if "sample_rows" in importance.columns
            else ""
        ),
        _png(figure),
    )


def evaluation_plots(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    hours: np.ndarray,
    importance: pd.DataFrame,
    target: str,
    time_column: str = "event time",
) -> list[Plot]:
    """The card's four plots; `predictions` must hold the challenger's."""
    if CHALLENGER not in predictions:
        raise ValueError(f"report: expected predictions for {CHALLENGER!r}, found {sorted(predictions)}")
    return [
        plot_predicted_vs_actual(y_true, predictions[CHALLENGER], target),
        plot_residual_histogram(y_true, predictions[CHALLENGER], target),
        plot_error_by_hour(hours, y_true, predictions, time_column),
        plot_feature_importance(importance),
    ]


def format_metric(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}%" if metric == "mape" else f"{value:.3f}"


# Text symbols rather than emoji: they render in every font, headless browsers included.
BETTER, WORSE, WARNING = "✓", "✗", "⚠"


def format_delta(
    metric: str, challenger: float, other: float, higher: Mapping[str, bool] | None = None
) -> str:
    """Challenger minus other, marked ✓ when the challenger is better and ✗ when it is worse."""
    if any(v is None or math.isnan(v) for v in (challenger, other)):
        return "n/a"
    delta = challenger - other
    text = f"{delta:+.2f} pp" if metric == "mape" else f"{delta:+.3f}"
    if delta == 0:
        return f"{text} ="
    better = delta > 0 if {**HIGHER_IS_BETTER, **(higher or {})}.get(metric, False) else delta < 0
    return f"{text} {BETTER if better else WORSE}"


def metrics_rows(
    scores: Sequence[ModelScore], higher: Mapping[str, bool] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the metrics table: one row per model, then the challenger's deltas.

    The metrics are the first model's (the task's built-in ones and the project's own);
    `higher` says which of the project's own are better when larger.
    """
    metrics = list(scores[0].metrics) if scores else []
    header = ["model", *(METRIC_LABELS.get(m, m) for m in metrics)]
    rows = [[score.name, *(format_metric(m, score.metrics.get(m)) for m in metrics)] for score in scores]
    challenger = next((s for s in scores if s.label == CHALLENGER), None)
    if challenger is not None:
        for other in scores:
            if other is challenger:
                continue
            rows.append(
                [
                    f"Δ challenger − {other.label}",
                    *(format_delta(m, challenger.metrics[m], other.metrics[m], higher) for m in metrics),
                ]
            )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


DELTA_LEGEND = (
    f"Δ is the challenger minus the other model; {BETTER} marks where the challenger is better "
    f"(lower errors and log loss, higher R², AUC, F1, precision, recall and accuracy), "
    f"{WORSE} where it is worse."
)


def metrics_table(scores: Sequence[ModelScore], higher: Mapping[str, bool] | None = None) -> str:
    """Markdown metrics table with the challenger's deltas and their legend.

    Dagster shows markdown metadata under 1,000 characters inline, so this stays short.
    """
    return markdown_table(*metrics_rows(scores, higher)) + "\n\n" + DELTA_LEGEND


def gate_rows(gate: Sequence[GateResult]) -> tuple[list[str], list[list[str]]]:
    header = ["check", "value", "required", "result"]
    rows = [
        [
            f"gate_{g.check_name}",
            f"{g.metric} = {g.value:.4g}",
            "—" if math.isnan(g.threshold) else f"{g.comparison} {g.threshold:.4g}",
            f"{BETTER} passed" if g.passed else f"{WORSE} failed",
        ]
        for g in gate
    ]
    return header, rows


def verdict(run_mode: str, gate: Sequence[GateResult], challenger: str, champion: str | None) -> str:
    """One line that says whether the challenger is good enough and what happens next."""
    failed = [g for g in gate if not g.passed]
    stays = f"champion stays {champion}" if champion else "no champion is set"
    if run_mode == "disabled":
        return f"Gate disabled: {challenger} will be promoted without checks."
    if not failed:
        return f"{BETTER} Gate passed: {challenger} meets every criterion and will be promoted."
    reasons = "; ".join(g.description for g in failed)
    if run_mode == "dry_run":
        return f"{WARNING} Gate failed (dry run, promotion goes ahead): {reasons}."
    return f"{WORSE} Gate failed: {reasons}. {challenger} is not promoted; {stays}."


def step_card_markdown(card: StepCard) -> str:
    """The card as markdown with the plots inline as base64 PNG (Dagster's `MetadataValue.md`)."""
    parts = [
        f"## {card.title}",
        f"**{card.verdict}**",
        " · ".join(f"**{k}:** {v}" for k, v in card.facts),
        "### Test-split metrics",
        metrics_table(card.scores, card.higher_is_better),
    ]
    if card.gate:
        parts += ["### Promotion gate", markdown_table(*gate_rows(card.gate))]
    for plot in card.plots:
        parts += [f"### {plot.title}", plot.caption, f"![{plot.title}]({plot.data_uri()})"]
    return "\n\n".join(parts) + "\n"


_HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1180px; color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
.verdict { font-size: 1.05rem; font-weight: 600; padding: .6rem .9rem; border-radius: 6px;
           background: #f3f2fd; border-left: 4px solid #4f43dd; }
dl { display: grid; grid-template-columns: max-content auto; gap: .25rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .35rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f6f8fa; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }
figure { margin: 0; } figcaption { color: #57606a; font-size: .9rem; }
img { max-width: 100%; }
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(card: StepCard) -> str:
    """The card as one self-contained HTML page (inline CSS and images, no external requests)."""
    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in card.facts)
    figures = "".join(
        f'<figure><img alt="{html.escape(p.title)}" src="{p.data_uri()}">'
        f"<figcaption><strong>{html.escape(p.title)}.</strong> {html.escape(p.caption)}</figcaption></figure>"
        for p in card.plots
    )
    gate = (
        f"<h2>Promotion gate</h2>{_html_table(*gate_rows(card.gate))}" if card.gate else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(card.title)}</title><style>{_HTML_STYLE}</style></head><body>"
        f"<h1>{html.escape(card.title)}</h1>"
        f'<p class="verdict">{html.escape(card.verdict)}</p>'
        f"<dl>{facts}</dl>"
        f"<h2>Test-split metrics</h2>{_html_table(*metrics_rows(card.scores, card.higher_is_better))}"
        f"<p>{html.escape(DELTA_LEGEND)}</p>"
        f"{gate}"
        f'<h2>Plots</h2><div class="plots">{figures}</div>'
        "</body></html>\n"
    )
