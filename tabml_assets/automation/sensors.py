"""Sensors: rescore when data lands or the champion moves, retrain when the model goes stale,
and alert on failed runs. Each keeps its state in a JSON cursor the daemon persists."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    MetadataValue,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    run_failure_sensor,
    sensor,
)

from tabml_assets.automation.inflight import days_being_written
from tabml_assets.automation.jobs import SCORING_ASSET_NAMES, TRAINING_ASSET_NAMES
from tabml_assets.automation.landing import (
    FileReport,
    LandingChanges,
    blocking_files,
    files_from_json,
    files_to_json,
    forget_gone_files,
    landing_run_key,
    report_file,
    scan_landing_folder,
)
from tabml_assets.dagster_compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    UnresolvedAssetJobDefinition,
    current_datetime,
)
from tabml_assets.keys import (
    CHAMPION_SENSOR,
    LANDING_SENSOR,
    RETRAINING_SENSOR,
    RUN_FAILURE_SENSOR,
    SCORING_JOB,
    TRAINING_JOB,
)
from tabml_assets.resources.data_sources import LANDING_FORMATS, DataSource, LandingFolderSource
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry
from tabml_assets.resources.notifier import NotificationError, Notifier
from tabml_assets.spec import LoadedSpec, Profile

TRIGGER_TAG = "tabml/trigger"
# A landing tick stays bounded however many files land at once: it reads changed files for at
# most this long and requests at most this many runs; the rest waits in its cursor.
LANDING_SCAN_SECONDS = 20.0
MAX_LANDING_RUNS_PER_TICK = 50
NOTE_CHARS = 2000


def load_cursor(cursor: str | None) -> dict[str, Any]:
    return json.loads(cursor) if cursor else {}


def dump_cursor(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True)


def today_utc() -> str:
    """Today's UTC date; its partition does not exist until the day closes."""
    return current_datetime().date().isoformat()


def latest_materialization(
    instance: DagsterInstance, asset: AssetKey, partition: str | None = None
) -> EventLogRecord | None:
    """The newest materialization of `asset` (of its `partition`, when given), or None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def latest_partition_metadata(
    instance: DagsterInstance, asset: AssetKey, partition: str
) -> dict[str, Any]:
    record = latest_materialization(instance, asset, partition)
    if record is None or record.asset_materialization is None:
        return {}
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def short_list(names: list[str], limit: int = 200, separator: str = ",") -> str:
    text = separator.join(names)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_of(profile: Profile) -> DefaultSensorStatus:
    return DefaultSensorStatus(profile.sensors.default_status)


def build_landing_sensor(spec: LoadedSpec, scoring_job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    """New or changed files in the landing folder -> scoring_job for exactly the days they touch."""
    start_day = spec.pipeline.partitions.start_date.isoformat()
    keys = spec.keys
    raw_data, features = keys.raw_data, keys.features
    scoring_assets = keys.assets(*SCORING_ASSET_NAMES)

    @sensor(
        name=keys.sensor(LANDING_SENSOR),
        job=scoring_job,
        minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
        default_status=status_of(spec.profile),
        description=(
            f"Watches {spec.name}'s landing folder. A new, changed or deleted file runs the scoring "
            "job (ingest, features, predictions) for each UTC day its rows touch, once per file "
            "content. A file that cannot be used holds back only its own days, is reported on "
            "raw_data's observations and alerted; fixing or removing it runs those days."
        ),
        required_resource_keys={keys.source_resource, keys.registry_resource, "notifier"},
    )
    def landing_sensor(context: SensorEvaluationContext) -> SensorResult:
        source: DataSource = getattr(context.resources, keys.source_resource)
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        if not isinstance(source, LandingFolderSource):
            return SensorResult(skip_reason=f"the data source is {source.describe()}, not a landing folder")
        state = load_cursor(context.cursor)
        paths = source.landed_files()
        reader = source.index.reader
        previous = files_from_json(state.get("files", {}))
        if state.get("reader", reader) != reader:
            # The dataset spec changed (a declared encoding or date order, say): files it refused
            # are read again as if new, so the days they hold run once they can be used.
            previous = {n: f for n, f in previous.items() if f.error is None}
        deadline = time.monotonic() + LANDING_SCAN_SECONDS
        changes = scan_landing_folder(paths, previous, source, deadline=deadline)
        today = today_utc()
        changed = merge_changed_days(
            context.instance, raw_data, changes, state.get("pending", {}), paths, start_day
        )
        pending = forget_gone_files(changed, changes.files, today)
        reports = {n: report_file(n, facts, start_day, today) for n, facts in changes.examined.items()}
        unsupported = source.unsupported_files()
        problems = [r.summary for r in reports.values() if r.error is not None or r.before_start]
        problems += [
            f"{name} ignored: not a landing file (expected {', '.join(LANDING_FORMATS)}, any case)"
            for name in sorted(set(unsupported) - set(state.get("unsupported", [])))
        ]
        alert_landing_problems(context, spec.name, problems)

        plan = plan_landing_runs(
            pending, changes, days_being_written(context.instance, scoring_assets), today,
            MAX_LANDING_RUNS_PER_TICK,
        )
        has_champion = model_registry.version_for_alias(CHAMPION) is not None
        run_requests = [
            RunRequest(
                run_key=pending[day]["run_key"],
                partition_key=day,
                # Without a champion there is nothing to score with yet: ingest only.
                asset_selection=None if has_champion else [raw_data, keys.quarantine, features],
                tags={TRIGGER_TAG: "landing", "tabml/landing_files": short_list(pending[day]["files"])},
            )
            for day in plan.run_days
        ]
        notes = [*problems, *plan.notes]
        for note in notes:
            context.log.info(note)
        state = {
            "files": files_to_json(changes.files),
            "pending": {d: e for d, e in pending.items() if d not in plan.run_days},
            "unsupported": unsupported,
            "reader": reader,
        }
        observations = file_observations(raw_data, changes, reports)
        cursor = dump_cursor(state)
        if run_requests:
            return SensorResult(run_requests=run_requests, cursor=cursor, asset_events=observations)
        return SensorResult(
            skip_reason=short_list(notes, NOTE_CHARS, "; ") or "no new or changed landing files",
            cursor=cursor,
            asset_events=observations,
        )

    return landing_sensor


@dataclass(frozen=True)
class LandingPlan:
    """Which pending days a tick requests, and why the others wait."""

    run_days: list[str]
    notes: list[str]


def plan_landing_runs(
    pending: dict[str, dict[str, Any]],
    changes: LandingChanges,
    busy: dict[str, str],
    today: str,
    cap: int,
) -> LandingPlan:
    """Closed days that no run is writing and no unusable file holds back, at most `cap`."""
    blocked = blocking_files(changes.files)
    run_days: list[str] = []
    notes: list[str] = []
    held_back = 0
    for day in sorted(pending):
        if day >= today:
            continue  # the partition exists once the day has closed
        if day in busy:
            notes.append(f"{day} waits for run {busy[day]}")
        elif day in blocked:
            notes.append(f"{day} waits for {', '.join(blocked[day])}: cannot be used (fix or remove it)")
        elif len(run_days) >= cap:
            held_back += 1
        else:
            run_days.append(day)
    if held_back:
        notes.append(f"{held_back} more day(s) are requested on the next ticks ({cap} per tick)")
    if changes.deferred:
        notes.append(f"{len(changes.deferred)} changed file(s) are read on the next tick")
    set_aside = sorted(n for n, f in changes.files.items() if f.error is not None and not f.days)
    if set_aside:
        notes.append(f"set aside, holding no known day: {short_list(set_aside)}")
    waiting = sorted(d for d in pending if d >= today)
    if waiting:
        notes.append(f"{len(waiting)} day(s) wait for their day to close: {short_list(waiting)}")
    return LandingPlan(run_days, notes)


def merge_changed_days(
    instance: DagsterInstance,
    raw_data: AssetKey,
    changes: LandingChanges,
    pending: dict[str, dict[str, Any]],
    paths: list[Path],
    start_day: str,
) -> dict[str, dict[str, Any]]:
    """Pending days plus the days the changes touch, each with one run key for all its changes."""
    pending = dict(pending)
    mtimes = {p.name: p.stat().st_mtime for p in paths if p.name in changes.files and p.exists()}
    for day, names in sorted(changes.days_changed_by.items()):
        if day < start_day:
            continue  # no partition will ever hold it: reported per file instead
        gone = any(changes.changed[n] == "deleted" or n not in mtimes for n in names)
        ingested = latest_materialization(instance, raw_data, day)
        if not gone and ingested is not None and ingested.timestamp >= max(mtimes[n] for n in names):
            # raw_data for this day was built after the file was written: it already has its rows.
            continue
        run_key = landing_run_key(day, changes.changed, names)
        if day in pending:
            # A later change to a day still waiting: one run, keyed by both changes.
            combined = hashlib.sha256(f"{pending[day]['run_key']}|{run_key}".encode()).hexdigest()[:16]
            run_key = f"landing:{day}:{combined}"
            names = sorted(set(names) | set(pending[day]["files"]))
        pending[day] = {"run_key": run_key, "files": sorted(names)}
    return pending


def alert_landing_problems(context: SensorEvaluationContext, project: str, problems: list[str]) -> None:
    """One alert per tick for files newly found unusable, rows no partition holds, unread files."""
    if not problems:
        return
    notifier: Notifier = context.resources.notifier
    try:
        notifier.notify(f"tabml {project}: {len(problems)} landing file problem(s)", "\n".join(problems))
    except NotificationError as exc:
        # The tick still runs the good days; the problems stay in its log and observations.
        context.log.warning(f"landing alert not delivered: {exc}")


def file_observations(
    raw_data: AssetKey, changes: LandingChanges, reports: dict[str, FileReport]
) -> list[AssetObservation]:
    """A per-file status on raw_data (its Events tab in the UI): rows, days, and why it is set aside."""
    observations = []
    for name, report in sorted(reports.items()):
        metadata: dict[str, Any] = {
            "landing_file": MetadataValue.text(name),
            "status": MetadataValue.text("cannot be used" if report.error else "usable"),
            "sha256": MetadataValue.text(changes.changed[name]),
            "rows": MetadataValue.int(report.rows),
            "rows_per_partition": MetadataValue.json(report.in_range),
            "rows_before_first_partition": MetadataValue.int(report.before_start),
            "rows_for_days_not_closed": MetadataValue.int(report.not_closed),
        }
        if report.error is not None:
            metadata["reason"] = MetadataValue.text(report.error)
        observations.append(AssetObservation(raw_data, description=report.summary, metadata=metadata))
    for name, sha in sorted(changes.changed.items()):
        if sha == "deleted":
            metadata = {"landing_file": MetadataValue.text(name), "status": MetadataValue.text("deleted")}
            description = f"{name} removed from the landing folder"
            observations.append(AssetObservation(raw_data, description=description, metadata=metadata))
    return observations


def last_scored_partitions(instance: DagsterInstance, predictions: AssetKey, count: int) -> list[str]:
    """The `count` most recent days that have predictions."""
    return sorted(instance.get_materialized_partitions(predictions))[-count:] if count else []


def build_champion_sensor(spec: LoadedSpec) -> SensorDefinition:
    """The champion alias moved -> rescore the last K prediction days scored by another version."""
    last_k = spec.pipeline.automation.rescore_partitions_on_new_champion
    keys = spec.keys
    predictions = keys.batch_predictions

    @sensor(
        name=keys.sensor(CHAMPION_SENSOR),
        asset_selection=[predictions],
        minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
        default_status=status_of(spec.profile),
        required_resource_keys={keys.registry_resource},
        description=(
            f"Polls the registry's `{CHAMPION}` alias. When it moves, rescores the last {last_k} "
            "batch_predictions days that another model version scored."
        ),
    )
    def champion_sensor(context: SensorEvaluationContext) -> SensorResult:
        model_registry: ModelRegistry = getattr(context.resources, keys.registry_resource)
        state = load_cursor(context.cursor)
        champion = model_registry.version_for_alias(CHAMPION)
        if champion is None:
            return SensorResult(skip_reason=f"no `{CHAMPION}` alias on {model_registry.model_name} yet")
        pending: dict[str, str] = state.get("pending", {})
        if champion.version != state.get("version"):
            # Detection time in the key: a rollback to an earlier version rescores again.
            seen_at = int(current_datetime().timestamp())
            pending = {
                day: f"rescore:{day}:{champion.name}:v{champion.version}:{seen_at}"
                for day in last_scored_partitions(context.instance, predictions, last_k)
                if str(latest_partition_metadata(context.instance, predictions, day).get("model_version"))
                != champion.version
            }
        busy = days_being_written(context.instance, [predictions])
        run_requests = [
            RunRequest(
                run_key=run_key,
                partition_key=day,
                asset_selection=[predictions],
                tags={TRIGGER_TAG: "new_champion", "tabml/champion_version": champion.version},
            )
            for day, run_key in sorted(pending.items())
            if day not in busy
        ]
        pending = {day: key for day, key in pending.items() if day in busy}
        cursor = dump_cursor({"version": champion.version, "pending": pending})
        if run_requests:
            return SensorResult(run_requests=run_requests, cursor=cursor)
        reason = (
            f"{len(pending)} day(s) wait for runs writing them" if pending
            else f"predictions of the last {last_k} scored days already use champion version {champion.version}"
        )
        return SensorResult(skip_reason=reason, cursor=cursor)

    return champion_sensor


def build_retraining_sensor(spec: LoadedSpec, training_job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    """The model is stale, or enough new feature days landed -> training_job on the newest day."""
    automation = spec.pipeline.automation
    fail_after = dt.timedelta(hours=automation.model_freshness_fail_hours)
    new_days_needed = automation.retrain_after_new_partitions
    keys = spec.keys
    training_assets = keys.assets(*TRAINING_ASSET_NAMES)

    @sensor(
        name=keys.sensor(RETRAINING_SENSOR),
        job=training_job,
        minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
        default_status=status_of(spec.profile),
        description=(
            f"Requests training_job when trained_model is older than its freshness fail window "
            f"({automation.model_freshness_fail_hours:g} h) or {new_days_needed} feature days newer "
            "than its training window have landed."
        ),
    )
    def retraining_sensor(context: SensorEvaluationContext) -> SensorResult:
        instance = context.instance
        last = latest_materialization(instance, keys.trained_model)
        if last is None:
            return SensorResult(skip_reason="no trained_model yet: materialize training_job once (make run does)")
        trained_on = last.partition_key or ""
        feature_days = sorted(instance.get_materialized_partitions(keys.features))
        if not feature_days:
            return SensorResult(skip_reason="no features partitions to train on")
        new_days = [d for d in feature_days if d > trained_on]
        age = current_datetime() - dt.datetime.fromtimestamp(last.timestamp, dt.UTC)
        if age > fail_after:
            reason = "stale_model"
        elif len(new_days) >= new_days_needed:
            reason = "new_feature_partitions"
        else:
            return SensorResult(
                skip_reason=(
                    f"trained_model ({trained_on}) is {age.total_seconds() / 3600:.1f} h old, fails after "
                    f"{fail_after.total_seconds() / 3600:g} h; {len(new_days)} of {new_days_needed} new "
                    "feature days"
                )
            )
        if days_being_written(instance, training_assets):
            return SensorResult(skip_reason="a training run is already queued or running")
        newest = feature_days[-1]
        request = RunRequest(
            # One retraining per previous training and newest day: a failed run is not retried
            # in a loop, but the next landed day tries again.
            run_key=f"retrain:{newest}:after-{last.storage_id}",
            partition_key=newest,
            tags={TRIGGER_TAG: reason, "tabml/new_feature_days": str(len(new_days))},
        )
        return SensorResult(run_requests=[request])

    return retraining_sensor


def describe_failed_run(context: RunFailureSensorContext) -> tuple[str, str]:
    """Alert title and body: which job, which partitions, which steps, and why."""
    run = context.dagster_run
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        partitions = tags[PARTITION_NAME_TAG]
    elif ASSET_PARTITION_RANGE_START_TAG in tags:
        partitions = f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags.get(ASSET_PARTITION_RANGE_END_TAG)}"
    else:
        partitions = "unpartitioned"
    lines = [
        f"run {run.run_id} of {run.job_name}, partitions {partitions}, trigger {tags.get(TRIGGER_TAG, 'manual')}",
        f"reason: {context.failure_event.message or 'unknown'}",
    ]
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        message = error.message.strip().splitlines()[0] if error and error.message.strip() else "no message"
        lines.append(f"step {event.step_key}: {message}")
    return f"tabml run failed: {run.job_name} [{partitions}]", "\n".join(lines)


def build_run_failure_sensor(profile: Profile) -> SensorDefinition:
    """Any failed tabml run, of any pipeline -> one alert through the deployment's notifier."""

    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        minimum_interval_seconds=profile.sensors.minimum_interval_seconds,
        default_status=status_of(profile),
        description="Sends an alert through the notifier resource (log in dev, Slack in prod) when a run fails.",
    )
    def run_failure_alert_sensor(context: RunFailureSensorContext, notifier: Notifier) -> None:
        title, body = describe_failed_run(context)
        notifier.notify(title, body)

    return run_failure_alert_sensor


def build_sensors(spec: LoadedSpec, jobs: dict[str, UnresolvedAssetJobDefinition]) -> list[SensorDefinition]:
    """One pipeline's sensors (the run-failure alert is the deployment's, built once)."""
    sensors = [
        build_champion_sensor(spec),
        build_retraining_sensor(spec, jobs[TRAINING_JOB]),
    ]
    if spec.profile.data_source.kind == "landing_folder":
        sensors.insert(0, build_landing_sensor(spec, jobs[SCORING_JOB]))
    return sensors

