"""Failure callbacks: one clear log line per failed task, with what to look at next."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("dialinsight")


def on_task_failure(context: Any) -> None:
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    dag_run = context.get("dag_run")
    log.error(
        "dialinsight task failed: dag=%s task=%s map_index=%s run=%s try=%s error=%s: %s",
        getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), getattr(ti, "map_index", -1),
        getattr(dag_run, "run_id", "?"), getattr(ti, "try_number", "?"), type(exc).__name__ if exc else None, exc,
    )
