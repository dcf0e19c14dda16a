"""The two kinds of failure a run can meet, as exception classes (no imports: the DAG glue and the
notifiers read them without loading a stage).

A ``DataVerdict`` is a judgement on the data or the configuration: running the task again gives
the same answer, so Airflow fails it at once, without retries (docs/operations.md). Everything else
(an object store or LLM server that did not answer, a worker that died) is transient and retried
with exponential backoff.
"""

from __future__ import annotations


class DataVerdict(Exception):
    """A failure that a retry cannot change: bad data, a failed gate, an invalid config."""

    #: what a person should look at first (one line), shown in the log and in notifications
    next_step: str = "read the error above; the task is not retried because the same input gives the same answer"


class BatchGateFailed(DataVerdict, RuntimeError):
    """The batch gate rejected the run; nothing was published."""

    def __init__(self, failures: list[str], evidence: str, written: dict | None = None) -> None:
        self.failures = list(failures)
        self.evidence = evidence
        #: what the gate wrote before it stopped the run (its ``GateOut``): the accepted and rejected
        #: records and the evidence; nothing downstream reads it in a nightly
        self.written = written
        self.next_step = (f"open the Data Docs ({evidence}) for the failed expectations and the rejected rows' "
                          "reasons; nothing was published and snapshots/latest.json still points at the last good snapshot")
        if any(f.startswith("task_mix_") for f in self.failures):
            self.next_step += ("; the accepted task mix missed its targets: this run's per-stratum outcomes are recorded, "
                               "and the next logical date's prompts are re-weighted towards the families the gates "
                               "rejected (prompts.adaptive; the gate stats' `mix` shows every stratum)")
        super().__init__("batch gate failed, nothing published. Failed expectations:\n  - "
                         + "\n  - ".join(self.failures) + f"\nevidence: {evidence}")


class TooManyFailures(RuntimeError):
    """A label shard failed more requests than ``labeling.max_failure_rate`` allows (transient:
    the server may come back; retried, and a retry resends only what was not answered)."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.summary, self.hint = message, hint
        super().__init__(message + (" " + hint if hint else ""))
