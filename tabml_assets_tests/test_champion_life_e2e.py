"""Rollback as a user does it: `dagster dev` with its daemon, the rollback job launched through
the webserver's GraphQL API with run config (what the UI's launchpad sends), the champion
sensor rescoring the last days with the restored version, and the champion history opened in
a real headless Chromium.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster import DagsterInstance
from mlflow.tracking import MlflowClient

from tabml_assets.resources import build_partition_store
from tabml_assets.seed import run_selection
from tabml_assets_tests.dagster_dev_server import (
    REPO_ROOT,
    DagsterDev,
    dagster_dev,
    write_instance_yaml,
)
from tabml_assets_tests.test_automation import NYC_TAXI_ONLY, edit_profile
from tabml_assets_tests.test_champion_life import (
    KEYS,
    MODEL_NAME,
    TRAINING,
    WEAK_LEARNING_RATE,
    audit_runs,
    reload,
    rollback_config,
    seed_with,
    set_learning_rate,
)

pytestmark = pytest.mark.slow

LOCATION = "tabml_assets"
ROLLBACK_JOB = KEYS.job("rollback_job")
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) { ... on Run { status } }
  logsForRun(runId: $id) {
    ... on EventConnection { events { __typename ... on ExecutionStepFailureEvent { error { message } } } }
  }
}
"""
RESCORE_RUNS = """
query Rescores {
  runsOrError(filter: {tags: [{key: "tabml/trigger", value: "new_champion"}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def launch_rollback(server: DagsterDev, config: dict) -> str:
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "pipelineName": ROLLBACK_JOB},
        "runConfigData": config,
    }
    answer = server.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def wait_for_run(server: DagsterDev, run_id: str, timeout: float = 180) -> tuple[str, list[str]]:
    """The run's final status and its step failure messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = server.graphql(RUN, {"id": run_id})
        status = data["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            events = data["logsForRun"]["events"]
            return status, [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s\n{server.log()[-4000:]}")


def wait_for_rescores(server: DagsterDev, version: str, count: int, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        results = server.graphql(RESCORE_RUNS)["runsOrError"]["results"]
        runs = [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in results]
        runs = [r for r in runs if r["tags"].get("tabml/champion_version") == version]
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"rescoring failed: {failed}\n{server.log()[-4000:]}"
        if len(runs) >= count and all(r["status"] == "SUCCESS" for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"rescoring runs for v{version} after {timeout}s: {runs}\n{server.log()[-4000:]}")


def champion(tabml_home: Path) -> str:
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    return str(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(MODEL_NAME, "champion").version)


def lineage_observations(dagster_home: Path, day: str) -> list[dict]:
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.fetch_observations(KEYS.batch_predictions, limit=100).records
        return [
            {k: v.value for k, v in r.asset_observation.metadata.items()}
            for r in records
            if r.partition_key == day and r.asset_observation is not None
        ]


def test_rollback_through_the_webserver_rescores_with_the_restored_version(
    conf_dir: Path, project_dir: Path, tabml_home: Path, tmp_path: Path
) -> None:
    edit_profile(
        conf_dir, sensors={"default_status": "RUNNING", "minimum_interval_seconds": 2}, projects=NYC_TAXI_ONLY
    )
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        # v1 champion (weak), v2 better and promoted, two days scored by v2, v3 never gated.
        plan = seed_with(conf_dir, project_dir, tabml_home, instance, learning_rate=WEAK_LEARNING_RATE)
        set_learning_rate(project_dir, 0.1)
        spec, defs = reload(conf_dir, tabml_home)
        run_selection(defs, instance, TRAINING, partition_key=plan.training_day.isoformat())
        scored = [plan.training_day.isoformat(), plan.scoring_day.isoformat()]
        for day in scored:
            run_selection(defs, instance, [KEYS.batch_predictions], partition_key=day)
        run_selection(defs, instance, [KEYS.trained_model], partition_key=plan.training_day.isoformat())
    assert champion(tabml_home) == "2"

    with dagster_dev(tabml_home, dagster_home, extra_env={"TABML_CONF_DIR": str(conf_dir)}) as server:
        # A never-gated version without force: refused with a message, nothing changes.
        status, errors = wait_for_run(server, launch_rollback(server, rollback_config("3")))
        assert status == "FAILURE"
        assert any("version 3 never passed the promotion gate" in e and "set force: true" in e for e in errors), errors
        assert champion(tabml_home) == "2"
        assert [r.data.tags["tabml.change.action"] for r in audit_runs(tabml_home)] == ["promotion", "promotion"]

        run_id = launch_rollback(server, rollback_config("1", reason="v2 overprices airport trips"))
        status, errors = wait_for_run(server, run_id)
        assert status == "SUCCESS", errors
        assert champion(tabml_home) == "1"
        audit = audit_runs(tabml_home)[-1]
        assert audit.data.tags["tabml.change.action"] == "rollback"
        assert audit.data.tags["tabml.change.reason"] == "v2 overprices airport trips"
        assert audit.data.tags["dagster.run_id"] == run_id
        assert sorted(audit.data.tags["tabml.change.days_to_rescore"].split(",")) == scored

        # The champion sensor rescores exactly the days v2 had scored, with v1.
        runs = wait_for_rescores(server, "1", len(scored))
        assert sorted(r["tags"]["dagster/partition"] for r in runs) == scored
        for day in scored:
            predictions = build_partition_store(spec).read_frame(KEYS.batch_predictions, day)
            assert set(predictions["model_version"]) == {"1"}
        # Each rescored day says so on batch_predictions itself (the lineage sensor's observation).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            notes = [o.get("rescored_after_rollback", "") for o in lineage_observations(dagster_home, scored[-1])]
            if any(n.startswith("yes: rollback to v1") for n in notes):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no lineage observation of the rescore: {notes}\n{server.log()[-3000:]}")

        with DagsterInstance.from_config(str(dagster_home)) as instance:
            event = instance.get_latest_materialization_event(KEYS.champion_model)
            assert event is not None and event.run_id == run_id
            metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert metadata["action"] == "rollback" and metadata["requested_by"] == "ana"
        assert "rollback: v2 overprices airport trips" in metadata["champion_history"]

        show_in_browser(server)


def show_in_browser(server: DagsterDev) -> None:
    """Open the rollback launchpad and the champion history in Chromium, and keep screenshots."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="install the dev extra: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, as `make test` does)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expect = playwright_api.expect
    # `expect` keeps its own 5 s default, which a loaded 2-core machine overruns while the UI loads.
    expect.set_options(timeout=60_000)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1900, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/locations/{LOCATION}/jobs/{ROLLBACK_JOB}/playground")
            expect(page.get_by_text("Launch Run").first).to_be_visible()
            if server.graphql("{ shouldShowNux }")["shouldShowNux"]:
                # A fresh instance greets its first visitor with a newsletter dialog; skip it.
                page.get_by_role("button", name="Skip").click()
                expect(page.get_by_role("dialog")).to_have_count(0)
            page.screenshot(path=str(SCREENSHOTS / "champion-01-rollback-launchpad.png"))
            page.goto(f"{server.url}/assets/nyc_taxi/champion_model")
            row = page.locator("tr", has_text="champion_history").first
            row.scroll_into_view_if_needed()
            expect(row).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "champion-02-champion-model.png"))
            opener = row.get_by_text("[Show Markdown]")
            if opener.count():
                opener.click()
                history = page.get_by_role("dialog")
            else:
                history = row
            expect(history).to_contain_text("rollback: v2 overprices airport trips")
            expect(history).to_contain_text("now (champion)")
            history.screenshot(path=str(SCREENSHOTS / "champion-03-history.png"))
        finally:
            browser.close()
