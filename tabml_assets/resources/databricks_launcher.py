"""dagster-databricks' step launcher with two changes to how a remote step ends (see
databricks.py, which configures it). Imported when a step is launched: dagster-databricks brings
the Databricks SDK, about two seconds no process that only loads the code location should pay.
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import DagsterEvent, Failure, StepExecutionContext
from dagster_databricks.databricks import DatabricksError
from dagster_databricks.databricks_pyspark_step_launcher import DatabricksPySparkStepLauncher

from tabml_assets.dagster_compat import SerializableErrorInfo
from tabml_assets.resources.databricks import remote_start_failure


class TabmlStepLauncher(DatabricksPySparkStepLauncher):
    """dagster-databricks' step launcher, ending remote start failures and failed runs cleanly."""

    def step_events_iterator(
        self, step_context: StepExecutionContext, step_key: str, databricks_run_id: int
    ) -> Iterator[DagsterEvent]:
        start_failure: SerializableErrorInfo | None = None
        try:
            for event in super().step_events_iterator(step_context, step_key, databricks_run_id):
                if event.is_resource_init_failure:
                    # Already in the run's event log, where it shows the cluster's error. Passed
                    # on, the multiprocess executor would take it for its own step worker's and
                    # start a retry while this attempt still waits for its Databricks run.
                    start_failure = event.engine_event_data.error
                    continue
                yield event
        except DatabricksError as exc:
            if start_failure is None:
                raise self._failed_run(databricks_run_id, exc) from exc
        if start_failure is not None:
            raise remote_start_failure(
                step_key,
                databricks_run_id,
                start_failure,
                self.secrets,
                step_context.op_retry_policy,
                step_context.previous_attempt_count,
            )

    def _failed_run(self, databricks_run_id: int, exc: DatabricksError) -> Failure:
        error = self.task_error(databricks_run_id)
        return Failure(
            description=f"{exc}" + (f" The task's error: {error}" if error else ""),
            metadata={"databricks_run_id": databricks_run_id},
        )

    def task_error(self, databricks_run_id: int) -> str | None:
        """The error Databricks recorded for the run's task, e.g. a secret that does not exist."""
        jobs = self.databricks_runner.client.workspace_client.jobs
        try:
            run = jobs.get_run(databricks_run_id)
            # A submitted run has one task; its output lives under the task's own run id.
            task_run_id = run.tasks[0].run_id if run.tasks and run.tasks[0].run_id else databricks_run_id
            return jobs.get_run_output(task_run_id).error
        except Exception:
            # Only detail for a failure that is reported either way.
            return None
