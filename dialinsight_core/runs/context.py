"""The run context every stage runner gets: settings, logical date, run id, params, the object
store and where this run's work tables live. Airflow builds it from a task's context
(``plugins/dialinsight_airflow/context.py``), the CLI from its arguments.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

from dialinsight_core import __version__
from dialinsight_core.config import PROJECT_ROOT, Settings
from dialinsight_core.storage import ObjectStore, RunPaths, store_from_settings


@dataclass
class RunContext:
    settings: Settings
    ds: str
    run_id: str
    params: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def store(self) -> ObjectStore:
        return store_from_settings(self.settings)

    @cached_property
    def paths(self) -> RunPaths:
        return RunPaths(self.ds, self.run_id)

    def key(self, name: str) -> str:
        """A key under this run's work prefix (``work/ds=…/run=…/``)."""
        return f"{self.paths.work}/{name}"

    def write_stage(self, stage: str, tables: dict[str, pa.Table], stats: Any) -> dict[str, str]:
        """Write a stage's tables and stats under the work prefix; returns the table keys."""
        keys = {}
        for name, tbl in tables.items():
            key = self.key(f"{stage}/{name}.parquet")
            self.store.write_table(key, tbl)
            keys[name] = key
        self.store.write_json(self.key(f"{stage}/stats.json"), stats)
        return keys


def code_version() -> str:
    """Package version plus the git commit, when the code runs from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip()
    except OSError:
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__
