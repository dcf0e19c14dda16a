"""
### dialinsight_snapshot_check

Scheduled on the **`dialinsight_snapshot`** asset: it runs when, and only when,
`dialinsight_nightly` published a snapshot, which `publish` does only after every quality gate
passed. A failed gate emits no asset event, so this DAG does not run.

**Task:** `check` reads the snapshot named in the triggering asset event back as its users will.
It checks the `data/` rows and record ids against the manifest, the `rejected/` rows, every
`exports/` file, and the dataset card's `configs` (what `datasets.load_dataset` reads). Then it
logs where the snapshot is. The asset event's extra holds the snapshot id, its URI, the counts,
the accept rate and the gate suites. In the UI the event shows under *Assets → dialinsight_snapshot*.

Later consumers (an evaluation DAG, an export to a training cluster) subscribe to the same asset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, dag, get_current_context, task
from dialinsight_airflow.callbacks import default_args, quiet_libraries

from dialinsight_core.config import load_settings

_settings = load_settings()  # YAML + env only: no DB, no connections at parse time
SNAPSHOT_ASSET = Asset(name="dialinsight_snapshot", group="dialinsight")


@dag(
    dag_id="dialinsight_snapshot_check",
    schedule=[SNAPSHOT_ASSET],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(_settings),
    doc_md=__doc__,
    tags=["dialinsight", "snapshot"],
)
def dialinsight_snapshot_check() -> None:
    @task
    def check() -> dict[str, Any]:
        from dialinsight_airflow.context import run_context  # lazy: builds settings from the running task's context

        from dialinsight_core.runs import snapshot  # lazy: the stages import pyarrow; parse time stays light

        quiet_libraries()
        context = get_current_context()
        events = context["triggering_asset_events"][SNAPSHOT_ASSET]
        extra = events[-1].extra
        result = snapshot.run_check(run_context(context), extra["uri"])
        print(f"snapshot {result['snapshot_id']} reads back as published: {result['accepted']} accepted rows, "
              f"{result['rejected']} rejected; exports {result['export_lines']}\n{extra['uri']}")
        return result

    check()


dialinsight_snapshot_check()
