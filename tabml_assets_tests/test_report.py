"""The evaluation step card: pure plot/markdown/HTML functions on tiny arrays, then the
evaluation_report asset materialized for real (metadata, HTML on disk, MLflow artifact)."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LinearRegression

from tabml_assets.definitions import build_definitions
from tabml_assets.ml import report
from tabml_assets.ml.evaluation import GateResult
from tabml_assets.resources.storage import (
    PartitionStore,
    SummaryColumns,
    WrittenPartition,
    frame_to_table,
    schema_of_frame,
    written_metadata,
)
from tabml_assets.seed import plan_seed, run_selection, seed_demo
from tabml_assets.spec import LoadedSpec, load_spec
from tabml_assets_tests.conftest import TODAY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
# The taxi example's event time: the report and the metadata are told its name.
PICKUP = "tpep_pickup_datetime"


def decoded_png(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def scores() -> list[report.ModelScore]:
    return [
        report.ModelScore(report.CHALLENGER, {"rmse": 2.0, "mae": 1.5, "r2": 0.9, "mape": 10.0}, "3"),
        report.ModelScore(report.CHAMPION, {"rmse": 2.5, "mae": 1.4, "r2": 0.85, "mape": 12.0}, "2"),
        report.ModelScore(report.BASELINE, {"rmse": 8.0, "mae": 6.0, "r2": 0.0, "mape": float("nan")}),
    ]


def gate_result(passed: bool) -> GateResult:
    return GateResult(
        check_name="rmse_max", metric="rmse", value=2.0, threshold=1.5 if not passed else 6.0,
        comparison="<=", passed=passed,
        description=f"{'passed' if passed else 'FAILED'}: rmse = 2, required <= {1.5 if not passed else 6}",
    )


@pytest.fixture
def tiny_plots() -> list[report.Plot]:
    rng = np.random.default_rng(1)
    y_true = rng.uniform(3, 40, 60)
    predictions = {report.CHALLENGER: y_true + rng.normal(0, 1, 60), report.BASELINE: np.full(60, y_true.mean())}
    importance = pd.DataFrame({"feature": ["a", "b"], "worsening": [3.0, 0.1], "std": [0.2, 0.05], "metric": "rmse"})
    return report.evaluation_plots(y_true, predictions, rng.integers(0, 24, 60), importance, "fare_amount", PICKUP)


def test_every_plot_is_a_readable_png(tiny_plots: list[report.Plot]) -> None:
    assert [p.title for p in tiny_plots] == [
        "Predicted vs actual", "Residual histogram", "Error by hour of day", "Permutation feature importance",
    ]
    for plot in tiny_plots:
        pixels = decoded_png(plot.png)
        height, width = pixels.shape[:2]
        assert (width, height) == (486, 315)
        # Not a blank canvas: a chart has many distinct colours.
        assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 20
        assert base64.b64decode(plot.data_uri().split(",", 1)[1]) == plot.png
        # Small enough that four of them keep a materialization event light.
        assert len(plot.png) < 60_000
    # The hour plot names the spec's event time, not a column the platform assumes.
    assert f"hour of {PICKUP} (UTC)" in tiny_plots[2].caption


def test_plots_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"one value per test row \(3\), found 2"):
        report.plot_residual_histogram(np.ones(3), np.ones(2), "fare_amount")
    with pytest.raises(ValueError, match="at least one test row"):
        report.plot_predicted_vs_actual(np.array([]), np.array([]), "fare_amount")
    with pytest.raises(ValueError, match=r"expected predictions for 'challenger', found \['champion'\]"):
        report.evaluation_plots(np.ones(2), {report.CHAMPION: np.ones(2)}, np.zeros(2), pd.DataFrame(), "y")


def test_error_by_hour_is_mean_absolute_error_per_hour() -> None:
    table = report.error_by_hour(
        hours=np.array([8, 8, 17]),
        y_true=np.array([10.0, 20.0, 30.0]),
        predictions={report.CHALLENGER: np.array([12.0, 16.0, 30.0]), report.BASELINE: np.array([20.0, 20.0, 20.0])},
    )
    assert list(table.index) == [8, 17]
    assert table.loc[8, report.CHALLENGER] == pytest.approx(3.0)
    assert table.loc[17, report.CHALLENGER] == pytest.approx(0.0)
    assert table.loc[8, report.BASELINE] == pytest.approx(5.0)


def test_permutation_importance_ranks_the_signal_above_noise() -> None:
    rng = np.random.default_rng(0)
    inputs = pd.DataFrame({"noise": rng.normal(size=2000), "signal": rng.normal(size=2000)})
    target = 5 * inputs["signal"].to_numpy()
    model = LinearRegression().fit(inputs, target)
    importance = report.feature_importance(model, inputs, target, sample_rows=200, repeats=2)
    assert list(importance["feature"]) == ["signal", "noise"]
    # By default the worsening is the RMSE increase when a column is shuffled.
    assert set(importance["metric"]) == {"rmse"}
    assert importance.loc[0, "worsening"] > 5
    assert abs(importance.loc[1, "worsening"]) < 0.05
    # Sampling is seeded: the same call gives the same numbers.
    pd.testing.assert_frame_equal(importance, report.feature_importance(model, inputs, target, 200, 2))


def test_deltas_know_which_direction_is_better() -> None:
    assert report.format_delta("rmse", 2.0, 2.5) == "-0.500 ✓"
    assert report.format_delta("mae", 1.5, 1.4) == "+0.100 ✗"
    assert report.format_delta("r2", 0.9, 0.85) == "+0.050 ✓"
    assert report.format_delta("mape", 10.0, 12.0) == "-2.00 pp ✓"
    assert report.format_delta("mape", 10.0, float("nan")) == "n/a"
    assert report.format_delta("rmse", 2.0, 2.0) == "+0.000 ="


def test_metrics_table_has_every_model_and_the_challengers_deltas() -> None:
    table = report.metrics_table(scores())
    lines = table.splitlines()
    assert lines[0] == "| model | RMSE | MAE | R² | MAPE |"
    assert lines[2] == "| challenger v3 | 2.000 | 1.500 | 0.900 | 10.00% |"
    assert lines[4] == "| naive baseline | 8.000 | 6.000 | 0.000 | n/a |"
    assert lines[5] == "| Δ challenger − champion | -0.500 ✓ | +0.100 ✗ | +0.050 ✓ | -2.00 pp ✓ |"
    assert lines[6].startswith("| Δ challenger − naive baseline | -6.000 ✓ |")
    # Dagster renders markdown metadata inline only under 1,000 characters.
    assert len(table) < 1000


def test_verdict_says_what_happens_next() -> None:
    assert report.verdict("enabled", [gate_result(True)], "challenger v3", "champion v2").startswith("✓ Gate passed")
    failed = report.verdict("enabled", [gate_result(False)], "challenger v3", "champion v2")
    assert failed == (
        "✗ Gate failed: FAILED: rmse = 2, required <= 1.5. challenger v3 is not promoted; "
        "champion stays champion v2."
    )
    assert "promotion goes ahead" in report.verdict("dry_run", [gate_result(False)], "challenger v3", None)
    assert report.verdict("disabled", [], "challenger v3", None).startswith("Gate disabled")


def card(plots: list[report.Plot], title: str = "Evaluation of challenger v3") -> report.StepCard:
    return report.StepCard(
        title=title,
        verdict=report.verdict("enabled", [gate_result(True)], "challenger v3", "champion v2"),
        facts=[("training window", "2026-03-06 .. 2026-03-08"), ("test rows", "60")],
        scores=scores(),
        gate=[gate_result(True)],
        plots=plots,
    )


def test_step_card_markdown_embeds_every_plot(tiny_plots: list[report.Plot]) -> None:
    markdown = report.step_card_markdown(card(tiny_plots))
    images = DATA_URI.findall(markdown)
    assert [base64.b64decode(i) for i in images] == [p.png for p in tiny_plots]
    for plot in tiny_plots:
        assert f"![{plot.title}](data:image/png;base64," in markdown
    assert "| gate_rmse_max | rmse = 2 | <= 6 | ✓ passed |" in markdown
    assert "**training window:** 2026-03-06 .. 2026-03-08" in markdown


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                (self.images if tag == "img" else self.urls).append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained_and_escaped(tiny_plots: list[report.Plot]) -> None:
    page = report.html_report(card(tiny_plots, title="Evaluation <script>alert(1)</script>"))
    parsed = _Collector()
    parsed.feed(page)
    assert len(parsed.images) == 4 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert parsed.urls == []  # no stylesheet, script or link to fetch
    assert "<script>" not in page and "&lt;script&gt;" in page
    text = " ".join(parsed.text)
    assert "challenger v3" in text and "-0.500 ✓" in text and "✓ passed" in text


def metadata_of(instance: DagsterInstance, asset: AssetKey, partition: str) -> dict:
    for record in instance.fetch_materializations(asset, limit=20).records:
        if record.asset_materialization.partition == partition:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset.to_user_string()} for partition {partition}")


def test_evaluation_report_materializes_the_step_card(
    test_spec: LoadedSpec, test_defs, instance: DagsterInstance, tabml_home: Path
) -> None:
    keys = test_spec.keys
    plan = seed_demo(test_defs, test_spec, instance, TODAY)
    key = plan.training_day.isoformat()
    # A second training meets a champion: every row and delta shows. On the champion's own
    # window it ties the champion, so it passes the never-worse gate whatever day TODAY is.
    run_selection(test_defs, instance, [keys.trained_model, keys.evaluation_report], partition_key=key)
    metadata = metadata_of(instance, keys.evaluation_report, key)

    card_md = metadata["step_card"]
    assert len(DATA_URI.findall(card_md)) == 4
    for encoded in DATA_URI.findall(card_md):
        decoded_png(base64.b64decode(encoded))
    assert "✓ Gate passed: challenger v2" in card_md and "| champion v1 |" in card_md
    assert "Δ challenger − champion" in metadata["metrics"]
    for prefix in ("challenger", "champion", "baseline"):
        for metric in ("rmse", "mae", "r2", "mape"):
            assert isinstance(metadata[f"{prefix}_{metric}"], float), f"{prefix}_{metric}"

    # The same report as HTML: on disk under the artifact folder and in the evaluation run.
    html_path = Path(metadata["report_html"])
    assert html_path == tabml_home / "artifacts" / "nyc_taxi" / "evaluation_report" / f"{key}.html"
    page = html_path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 4
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(metadata["evaluation_mlflow_run_id"])
    assert run.data.tags["dagster.asset_key"] == "nyc_taxi/evaluation_report"
    logged = Path(client.download_artifacts(run.info.run_id, "evaluation_report.html", str(tabml_home)))
    assert logged.read_text(encoding="utf-8") == page
    assert metadata["report_mlflow_artifact"].endswith(f"{run.info.run_id}/artifacts/evaluation_report.html")

    # Table metadata says which time the rows cover (the seed ingested its days in one run).
    first_day = pd.Timestamp(plan.ingest_days[0].isoformat(), tz="UTC").timestamp()
    for asset in (keys.raw_data, keys.features):
        window = metadata_of(instance, asset, key)
        assert first_day <= window["earliest_event_time"] <= window["latest_event_time"] < first_day + 86_400 * len(plan.ingest_days)


def test_written_metadata_reports_rows_schema_preview_and_time_window(tmp_path: Path) -> None:
    frames = {
        "2026-03-08": pd.DataFrame({PICKUP: pd.to_datetime(["2026-03-08 00:05", "2026-03-08 23:50"]), "fare": [5.0, 7.5]}),
        "2026-03-09": pd.DataFrame({PICKUP: pd.to_datetime(["2026-03-09 12:00"]), "fare": [9.0]}),
    }
    store = PartitionStore(root=str(tmp_path))

    def streamed(key: str, frame: pd.DataFrame) -> WrittenPartition:
        schema = schema_of_frame(frame)
        staged = store.stage("rides", key, schema, SummaryColumns(ranges=(PICKUP,)))
        staged.write(frame_to_table(frame, schema, key))
        return staged.commit()

    metadata = {k: v.value for k, v in written_metadata({k: streamed(k, f) for k, f in frames.items()}, PICKUP, "event_time").items()}
    assert metadata["dagster/row_count"] == 3
    assert [c.name for c in metadata["dagster/column_schema"].columns] == [PICKUP, "fare"]
    assert "2026-03-08 23:50:00" in metadata["preview"] and "7.5" in metadata["preview"]
    assert metadata["rows_per_partition"] == {"2026-03-08": 2, "2026-03-09": 1}
    assert metadata["earliest_event_time"] == pd.Timestamp("2026-03-08 00:05", tz="UTC").timestamp()
    assert metadata["latest_event_time"] == pd.Timestamp("2026-03-09 12:00", tz="UTC").timestamp()
    # A quiet day has no time window to report.
    quiet = streamed("2026-03-10", pd.DataFrame({PICKUP: pd.to_datetime([]), "fare": []}))
    assert "earliest_event_time" not in written_metadata({"2026-03-10": quiet}, PICKUP, "event_time")


def test_a_failed_gate_still_reports_why_in_the_card(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    path = project_dir / "pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    data["validation"].update({"run_mode": "enabled", "criteria": {"rmse": {"max": 0.01}}})
    path.write_text(yaml.safe_dump(data))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    keys = spec.keys
    defs = build_definitions(spec)
    plan = plan_seed(spec, TODAY)
    days = (plan.ingest_days[0].isoformat(), plan.training_day.isoformat())
    run_selection(defs, instance, keys.assets("raw_data", "features"), partition_range=days)
    result = run_selection(
        defs, instance, keys.assets("trained_model", "evaluation_report"), partition_key=days[1], raise_on_error=False
    )
    assert not result.success  # the blocking gate check failed the step

    metadata = metadata_of(instance, keys.evaluation_report, days[1])
    assert "✗ Gate failed: FAILED: rmse =" in metadata["step_card"]
    assert "required <= 0.01" in metadata["step_card"] and "no champion is set" in metadata["step_card"]
    assert "| gate_rmse_max |" in metadata["step_card"] and "✗ failed" in metadata["step_card"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tabml_home}/mlflow.db")
    run = client.get_run(metadata["evaluation_mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id) if a.path.endswith(".html")] == [
        "evaluation_report.html"
    ]
    assert Path(metadata["report_html"]).exists()
