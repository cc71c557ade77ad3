"""Sensor reaction under a real `dagster dev`: from a file landing to its rescoring run starting.

A small champion is trained first (its own landing folder), then `dagster dev` runs the dev
deployment on the same TABML_HOME with an empty landing folder. Each repeat lands one day's
file (a hard link: the file appears whole, at once) and polls the webserver's GraphQL API for
the run the landing sensor requests for that day.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

from benchmarks import workspace as ws

if TYPE_CHECKING:
    from benchmarks.run import Bench

log = logging.getLogger("tabml.bench")
# Sensors are named for their project: the dev deployment benchmarks the nyc_taxi example.
SENSOR_NAME = "nyc_taxi_landing_sensor"
FIRST_DAY = dt.date(2025, 10, 1)
ROWS_PER_FILE = 20_000
SETUP_ROWS_PER_DAY = 5_000
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
DONE = ("SUCCESS", "FAILURE", "CANCELED")

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime } }
    ... on PythonError { message }
  }
}
"""
SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { minIntervalSeconds sensorState { status ticks(limit: 1) { timestamp status } } }
    ... on PythonError { message }
  }
}
"""


def _runs(server: Any, tags: list[dict[str, str]] | None = None, statuses: list[str] | None = None) -> list[dict[str, Any]]:
    run_filter: dict[str, Any] = {}
    if tags:
        run_filter["tags"] = tags
    if statuses:
        run_filter["statuses"] = statuses
    data = server.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
    if data["__typename"] != "Runs":
        raise RuntimeError(f"runsOrError: expected Runs, found {data}")
    return data["results"]


def _sensor(server: Any) -> dict[str, Any]:
    selector = {"repositoryLocationName": "tabml_assets", "repositoryName": "__repository__", "sensorName": SENSOR_NAME}
    data = server.graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"]
    if data["__typename"] != "Sensor":
        raise RuntimeError(f"sensorOrError for {SENSOR_NAME}: expected Sensor, found {data}")
    return data


def _wait(condition: Any, what: str, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"sensor benchmark: {what} did not happen within {timeout:.0f}s")


def measure(bench: Bench) -> dict[str, Any]:
    from tabml_assets_tests.dagster_dev_server import dagster_dev

    setup = ws.create_workspace(bench.work, "sensor_setup", profile_overrides={"data_source": {"landing_folder": "landing_setup"}})
    window = ws.days_ending(ws.TRAINING_DAY, bench.spec_window())
    ws.link_files([ws.land_trips(bench.cache, [day], SETUP_ROWS_PER_DAY) for day in [*window, ws.SCORING_DAY]], setup.landing)
    trained = bench.run("tabml_end_to_end", {**setup.as_args(), **bench.end_to_end_args()}, env=setup.env())
    if not trained.ok:
        raise RuntimeError(f"sensor setup (a champion to score with) failed: {trained.error}")
    live = ws.create_workspace(bench.work, "sensor_live", home=setup.home)
    live.landing.mkdir(parents=True, exist_ok=True)
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(bench.sizes.repeats)]
    files = {day: ws.land_trips(bench.cache, [day], ROWS_PER_FILE) for day in days}

    reactions: list[dict[str, Any]] = []
    started = time.perf_counter()
    with dagster_dev(live.home, live.dagster_home, deployment=ws.DEPLOYMENT,
                     extra_env={"TABML_CONF_DIR": str(live.conf_dir)}) as server:
        startup_seconds = time.perf_counter() - started
        sensor = _wait(lambda: (s := _sensor(server))["sensorState"]["ticks"] and s, "the landing sensor's first tick", 180)
        interval = sensor["minIntervalSeconds"]
        for day in days:
            # Other sensors (champion, retraining) may have started runs; land into a quiet system.
            _wait(lambda: not _runs(server, statuses=list(IN_FLIGHT)), "a quiet run queue", 300)
            target = live.landing / files[day].name
            os.link(files[day], target)
            landed = time.time()
            tags = [{"key": "dagster/partition", "value": day.isoformat()}]
            run = _wait(lambda t=tags: next((r for r in _runs(server, t) if r["startTime"]), None),
                        f"a started run for {day} after landing {target.name}", 240 + interval, interval=0.25)
            finished = _wait(lambda t=tags: next((r for r in _runs(server, t) if r["status"] in DONE), None),
                             f"the run for {day} to finish", 600)
            reaction = {
                "day": day.isoformat(),
                "run_id": run["runId"],
                "landed_to_run_created_seconds": run["creationTime"] - landed,
                "landed_to_run_started_seconds": run["startTime"] - landed,
                "landed_to_run_finished_seconds": (finished["endTime"] or time.time()) - landed,
                "status": finished["status"],
            }
            log.info("sensor reaction for %s: %s", day, reaction)
            reactions.append(reaction)

    def figure(key: str) -> dict[str, Any]:
        values = [r[key] for r in reactions]
        return {"median": statistics.median(values) if values else None, "runs": values}

    return {
        "available": True,
        "sensor": SENSOR_NAME,
        "sensor_interval_seconds": interval,
        "rows_per_file": ROWS_PER_FILE,
        "dagster_dev_startup_seconds": startup_seconds,
        "landed_to_run_created_seconds": figure("landed_to_run_created_seconds"),
        "landed_to_run_started_seconds": figure("landed_to_run_started_seconds"),
        "landed_to_run_finished_seconds": figure("landed_to_run_finished_seconds"),
        "reactions": reactions,
    }
