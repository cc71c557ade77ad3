"""The Spark session features and scoring run on when a deployment has one.

On Databricks (staging, prod) the step runs on a cluster whose session already exists; the
resource returns it. Elsewhere (tests, a laptop trying the Spark path) it starts pyspark in
local mode, bound to 127.0.0.1. Assets only ask whether the resource is present.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Local mode serves one process: no UI, no progress bars on stderr, nothing on other
# interfaces, and UTC so naive timestamps mean what they mean in the data.
LOCAL_MODE_CONFIG: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
}


class SparkSessionResource(ConfigurableResource):
    """A Spark session: the cluster's on Databricks, or pyspark local mode (`master: local[N]`)."""

    master: str | None = Field(
        default=None,
        description="None: the session of the cluster the step runs on; 'local[N]': pyspark local mode.",
    )
    app_name: str = "tabml"
    config: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings.")

    def get_session(self) -> SparkSession:
        from pyspark.sql import SparkSession

        if self.master is None:
            # On a Databricks cluster this is the cluster's session; nothing is started.
            builder = SparkSession.builder
            for key, value in self.config.items():
                builder = builder.config(key, value)
            return builder.getOrCreate()
        # Python workers must import tabml_assets, so they run this interpreter (pyspark reads
        # only the environment variable, not a Spark setting).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(self.master).appName(self.app_name)
        for key, value in {**LOCAL_MODE_CONFIG, **self.config}.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session

    def describe(self) -> str:
        return f"spark ({self.master})" if self.master else "spark (cluster session)"
