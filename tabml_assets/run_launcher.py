"""The run launcher of the dev and single-machine instances: Dagster's DefaultRunLauncher plus
the run worker health check that run monitoring needs.

Dagster's run monitoring marks a STARTED run failed when its launcher reports the run worker
dead, but only launchers that can look (K8sRunLauncher, DockerRunLauncher, ...) implement it;
with the DefaultRunLauncher a run whose worker died with `dagster dev` (kill -9, a reboot, the
OOM killer) stays STARTED forever and holds its partition's slot in the run queue. Here the
worker is a process on this machine, whose pid the run's RUN_START event records, so the check
is whether that process still runs.

`CheckRunHealthResult`, `WorkerStatus` (the answer the monitor expects) and
`GrpcServerCodeLocationOrigin` are not exported by `dagster`; this module is the one place that
imports them from `dagster._core`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher

from tabml_assets.dagster_compat import (
    CheckRunHealthResult,
    GrpcServerCodeLocationOrigin,
    WorkerStatus,
)
from tabml_assets.processes import process_alive_since

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class RunWorker:
    """The process that executes a run, as its latest RUN_START event recorded it."""

    pid: int
    started_at: float


class MonitoredDefaultRunLauncher(DefaultRunLauncher):
    """Launches runs through the code location's gRPC server; tells the monitor when a worker died.

    Resuming a run in a new worker is not supported (the DefaultRunLauncher has no way to start
    one), so instances using it set `run_monitoring.max_resume_run_attempts: 0`: a dead worker's
    run is marked failed and its partition can run again.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not runs_on_this_machine(run):
            # Executed by a script or `dagster job execute` (no code location launched it), or
            # by a standalone gRPC server on another host: its worker is not ours to look at.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not on this machine")
        worker = self.run_worker(run.run_id)
        if worker is None:
            # STARTED before its RUN_START event was stored: the start timeout covers a worker
            # that never gets that far.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not reported yet")
        if process_alive_since(worker.pid, worker.started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker (pid {worker.pid} on this machine) is gone: it exited or was killed "
            "without reporting the end of the run",
        )

    def run_worker(self, run_id: str) -> RunWorker | None:
        records = self._instance.get_records_for_run(
            run_id, of_type=DagsterEventType.RUN_START, limit=1, ascending=False
        ).records
        if not records:
            return None
        entry = records[0].event_log_entry
        event = entry.dagster_event
        if event is None or not event.pid:
            return None
        return RunWorker(pid=int(event.pid), started_at=entry.timestamp)


def runs_on_this_machine(run: DagsterRun) -> bool:
    """True for a run a code location of this machine launched (its worker is a local process)."""
    origin = run.remote_job_origin
    if origin is None:
        return False
    location = origin.repository_origin.code_location_origin
    if isinstance(location, GrpcServerCodeLocationOrigin):
        return location.host in LOCAL_HOSTS
    return True
