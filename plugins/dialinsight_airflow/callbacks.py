"""What every dialinsight DAG shares: retries that mean something, failure notifications, the
nightly's deadline (docs/operations.md).

- ``default_args``: transient faults (object store, LLM server, a lost worker) are retried with
  exponential backoff; every task's ``on_failure_callback`` is the failure notifier, which Airflow
  calls once the last try has failed.
- ``verdicts()``: a data verdict (``dialinsight_core.errors.DataVerdict``: a failed batch gate, an
  invalid config, an empty or missing source, a bad library) is raised as ``AirflowFailException``,
  so the task fails at once: a retry would give the same answer an hour later.
- ``nightly_deadline``: the nightly is late if not finished ``notifications.deadline_hours`` after
  its slot (its logical date); the notifier runs in the triggerer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowFailException

from dialinsight_airflow.notifiers import DialinsightNotifier
from dialinsight_core.errors import DataVerdict


def default_args(settings: Any) -> dict[str, Any]:
    a = settings.airflow
    return {
        "owner": "dialinsight",
        "retries": a.retries,
        "retry_delay": timedelta(seconds=a.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=a.max_retry_delay_s),
        "execution_timeout": timedelta(seconds=a.task_timeout_s),
        "on_failure_callback": [DialinsightNotifier("task_failed")],
    }


def on_run_success() -> list[DialinsightNotifier]:
    """The ``publish`` task's success callback: the run summary."""
    return [DialinsightNotifier("run_succeeded")]


def nightly_deadline(settings: Any) -> DeadlineAlert | None:
    hours = settings.notifications.deadline_hours
    if hours is None:
        return None
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_LOGICAL_DATE, interval=timedelta(hours=hours),
                         callback=AsyncCallback(DialinsightNotifier, kwargs={"event": "run_late"}),
                         name="dialinsight_nightly_late")


# libraries whose INFO lines bury a task's verdict (GX, the engine's start-up, HTTP clients)
NOISY_LOGGERS = ("great_expectations", "vllm", "jieba", "botocore", "boto3", "s3transfer", "urllib3", "httpx",
                 "httpcore", "openai", "matplotlib", "datasets", "filelock", "fsspec", "transformers", "torch")


class _LibraryNoise(logging.Filter):
    """Drops library records below WARNING at the root handlers, whatever level a library sets on
    its own logger when it is imported later (Great Expectations does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(NOISY_LOGGERS)


def quiet_libraries() -> None:
    """Library lines below WARNING become debug-only: shown when the task logs at DEBUG, hidden at
    INFO, so a task's log opens with its own verdict. vLLM configures its logger when imported, so it
    is told through its environment variable (a user's own setting wins)."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG:
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in root.handlers:
        if not any(isinstance(f, _LibraryNoise) for f in handler.filters):
            handler.addFilter(_LibraryNoise())


@contextmanager
def stage() -> Iterator[None]:
    """Every task body: quiet libraries, and data verdicts fail at once."""
    quiet_libraries()
    with verdicts():
        yield


@contextmanager
def verdicts() -> Iterator[None]:
    """Fail at once (no retries) on a data verdict; let anything else be retried."""
    try:
        yield
    except DataVerdict as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}\nNext: {exc.next_step}") from exc
