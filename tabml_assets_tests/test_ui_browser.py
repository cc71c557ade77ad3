"""The Dagster UI tried as a user would, in a real headless Chromium: the asset graph renders,
a training run launched with the UI's own Materialize dialog succeeds, and the evaluation
report's step card shows its plots.

Drives Debian's /usr/bin/chromium through Playwright; nothing downloads a browser. Screenshots
land in test-artifacts/ui/ (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from tabml_assets.definitions import build_definitions
from tabml_assets.seed import SeedPlan, seed_demo
from tabml_assets.spec import load_spec
from tabml_assets_tests.dagster_dev_server import (
    REPO_ROOT,
    DagsterDev,
    dagster_dev,
    write_instance_yaml,
)

playwright_api = pytest.importorskip("playwright.sync_api", reason="install the dev extra: pip install -e '.[dev]'")

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
# Every name of the example project's pipeline carries the project: groups, jobs and asset keys.
PROJECT = "nyc_taxi"
ASSETS = ["raw_data", "features", "trained_model", "evaluation_report", "champion_model", "batch_predictions"]
GROUPS = [f"{PROJECT}_{stage}" for stage in ("ingestion", "features", "training", "inference")]
TRAINING_JOB = f"{PROJECT}_training_job"
RUN_TIMEOUT_MS = 180_000


@pytest.fixture
def seeded_ui(tabml_home: Path, tmp_path: Path) -> Iterator[tuple[DagsterDev, SeedPlan]]:
    """The demo seeded into a fresh DAGSTER_HOME, then `dagster dev` serving it."""
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    spec = load_spec("test", tabml_home=tabml_home)
    # The UI's partitions run up to yesterday (UTC), so seed for the real today.
    today = dt.datetime.now(dt.UTC).date()
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        plan = seed_demo(build_definitions(spec), spec, instance, today)
    with dagster_dev(tabml_home, dagster_home, deployment="test") as server:
        try:
            yield server, plan
        finally:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(server.log_path, SCREENSHOTS / "dagster_dev.log")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, as `make test` does)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(60_000)
        browser_page = context.new_page()
        try:
            yield browser_page
        finally:
            # Whatever the outcome, keep what the browser showed last.
            browser_page.screenshot(path=str(SCREENSHOTS / "last.png"))
            context.close()


def shot(page: object, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_ui_materializes_the_demo_and_renders_the_step_card(seeded_ui: tuple[DagsterDev, SeedPlan], page) -> None:
    server, plan = seeded_ui
    # The seed's own training day: the same window, so challenger v2 ties champion v1 and passes
    # the never-worse gate on any day the test runs (a later window may well be worse).
    partition = plan.training_day.isoformat()
    expect = playwright_api.expect
    # `expect` keeps its own 5 s default, which a loaded 2-core machine overruns while the UI loads.
    expect.set_options(timeout=60_000)

    # 1. The asset graph: every group and every asset of the pipeline renders.
    page.goto(f"{server.url}/asset-groups")
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()
    if server.graphql("{ shouldShowNux }")["shouldShowNux"]:
        # A fresh instance greets its first visitor with a newsletter dialog; skip it, as a user would.
        page.get_by_role("button", name="Skip").click()
        expect(page.get_by_role("dialog")).to_have_count(0)
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    page.keyboard.press("Alt+e")  # the graph's own shortcut: expand all groups
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    shot(page, "01-asset-graph")

    # 2. Materialize nyc_taxi_training_job for the seed's training day with the UI's Materialize dialog.
    page.goto(f"{server.url}/locations/tabml_assets/jobs/{TRAINING_JOB}")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(partition)
    partitions.press("Enter")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    shot(page, "02-materialize-dialog")
    launch.click()
    toast = page.get_by_text("Launched run")
    expect(toast).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()  # the toast's link to the run

    # 3. The run page: the run succeeds.
    finished = page.get_by_text("RUN_SUCCESS", exact=True).or_(page.get_by_text("RUN_FAILURE", exact=True))
    expect(finished.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    shot(page, "03-run")
    run_id = page.url.rstrip("/").split("/")[-1]
    status = server.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { status jobName tags { key value } } } }",
        {"id": run_id},
    )["runOrError"]
    assert status["status"] == "SUCCESS", f"run {run_id} ended {status['status']}; see {SCREENSHOTS / '03-run.png'}"
    assert status["jobName"] == TRAINING_JOB
    assert {"key": "dagster/partition", "value": partition} in status["tags"]
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()

    # 4. The evaluation report: metrics inline, and the step card with its four plots.
    page.goto(f"{server.url}/assets/{PROJECT}/evaluation_report")
    metrics_row = page.locator("tr", has_text="metrics").filter(has_text="Δ challenger − champion").first
    expect(metrics_row).to_contain_text("challenger v2")
    expect(metrics_row).to_contain_text("champion v1")
    shot(page, "04-evaluation-report")
    page.locator("tr", has_text="step_card").get_by_text("[Show Markdown]").click()
    card = page.get_by_role("dialog")
    expect(card).to_contain_text(f"Evaluation of challenger v2 · {PROJECT} · partition {partition}")
    expect(card).to_contain_text("Gate passed")
    images = card.locator("img")
    expect(images).to_have_count(4)
    titles = ["Predicted vs actual", "Residual histogram", "Error by hour of day", "Permutation feature importance"]
    for index, title in enumerate(titles):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        expect(image).to_have_attribute("alt", title)
        # Decoded and laid out by the browser, not just present in the DOM.
        size = image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
        assert size[0] > 300 and size[1] > 200, f"{title}: rendered as {size}"
        if index == 0:
            shot(page, "05-step-card")
    shot(page, "06-step-card-plots")
