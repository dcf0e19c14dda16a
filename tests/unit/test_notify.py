"""What a person is told (dialinsight_core.notify) and which failures are retried (callbacks.verdicts)."""

from __future__ import annotations

import pytest

from dialinsight_core.config import ConfigError
from dialinsight_core.errors import BatchGateFailed, DataVerdict, TooManyFailures
from dialinsight_core.ingest.adapters import SourceError
from dialinsight_core.instructions import LibraryError
from dialinsight_core.notify import describe_failure, failure_message, late_message, scrub, success_message
from dialinsight_core.pii import find_pii


def test_scrub_masks_secrets_credentials_and_pii():
    text = ("POST http://svc:hunter2pass@llm.internal:8000/v1 failed; token=abc123def456 "
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc; key AKIAABCDEFGHIJKLMNOP; sk-proj-abcdefghijklmnopqrstu; "
            "password: s3cr3t!; customer 王小明 电话13812345678, ben.smith@example.com; my-own-secret-value")
    out = scrub(text, secrets=["my-own-secret-value"])
    for leaked in ("hunter2pass", "abc123def456", "eyJhbGciOiJIUzI1NiJ9", "AKIAABCDEFGHIJKLMNOP", "abcdefghijklmnopqrstu",
                   "s3cr3t!", "13812345678", "ben.smith@example.com", "王小明", "my-own-secret-value"):
        assert leaked not in out, leaked
    assert find_pii(out) == []
    assert "llm.internal:8000/v1" in out and "[PHONE_1]" in out  # what is not secret stays readable
    assert len(scrub("x" * 5000, limit=100)) == 100


def test_scrub_keeps_uris_and_ids_readable():
    uri = "s3://bucket/dialinsight/snapshots/ds=2026-11-24/run=manual__2026-11-24T02:00:00+00:00/report.html"
    assert scrub(f"see {uri}") == f"see {uri}"


def test_gate_failure_lists_each_expectation_and_where_to_look():
    exc = BatchGateFailed(["accept_rate_below_min: expect_column_mean_to_be_between(accepted) observed 0.1, expected >= 0.99",
                           "mean_schema_valid_below_min: expect_column_mean_to_be_between(q_schema_valid) observed 0.5, "
                           "expected >= 0.8"], "file:///store/work/gate/gx/x/data_docs/index.html")
    f = describe_failure(_wrapped(exc))
    assert f.kind == "data_verdict" and f.error_type == "BatchGateFailed" and len(f.details) == 2
    assert "2 expectation(s) not met" in f.summary and "data_docs/index.html" in f.next_step
    msg = failure_message(dag_id="dialinsight_nightly", run_id="scheduled__2026-11-25T02:00:00+00:00", task_id="gate",
                          map_index=-1, try_number=1, max_tries=2, logical_date="2026-11-25T02:00:00+00:00",
                          log_url="http://airflow/dags/dialinsight_nightly/runs/r/tasks/gate", failure=f)
    assert msg.lines[0].startswith("FAILED: task gate of dialinsight_nightly") and "not retried" in msg.lines[0]
    assert "  - accept_rate_below_min" in msg.text() and msg.payload()["details"] == list(f.details)
    assert "<li>accept_rate_below_min" in msg.html()


def _wrapped(exc: BaseException) -> BaseException:
    """As Airflow sees it: our exception is the cause of an AirflowFailException-like wrapper."""
    try:
        try:
            raise exc
        except DataVerdict as inner:
            raise RuntimeError("AirflowFailException: wrapped") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("exc", "kind"), [
    (ConfigError("invalid dialinsight config (overrides):\n  engine: kind 'openai' needs base_url"), "data_verdict"),
    (SourceError("source star: nothing to read at file:///x"), "data_verdict"),
    (LibraryError("library entry 3: unknown task family"), "data_verdict"),
    (TooManyFailures("shard 0: 4/4 requests failed", "Engine: ... curl -s http://h/v1/models."), "transient"),
    (ConnectionError("object store did not answer"), "transient"),
    (KeyError("unexpected"), "error"),
])
def test_each_failure_class_is_described_with_a_next_step(exc, kind):
    f = describe_failure(_wrapped(exc) if isinstance(exc, DataVerdict) else exc)
    assert f.kind == kind and f.next_step and f.summary
    if isinstance(exc, TooManyFailures):
        assert f.summary == "shard 0: 4/4 requests failed" and "curl -s" in f.next_step


def test_success_and_late_messages():
    event = {"snapshot_id": "2026-11-24__r", "uri": "file:///s/snapshots/ds=2026-11-24/run=r", "ds": "2026-11-24",
             "run_id": "r", "report": "file:///s/snapshots/ds=2026-11-24/run=r/report.html",
             "counts": {"dialogues_read": 20, "prompts": 40, "accepted": 30, "rejected": 8, "quarantined": 3,
                        "quarantined_dialogues": 1, "quarantined_prompts": 2},
             "accept_rate": 0.7895, "top_reject_reasons": {"repetitive": 5, "truncated": 3}}
    msg = success_message(dag_id="dialinsight_nightly", event=event, run_url="http://airflow/dags/x/runs/r")
    assert msg.subject == "[dialinsight] OK dialinsight_nightly 2026-11-24: 30 accepted (accept rate 79.0%)"
    assert "Top reject reasons: repetitive 5, truncated 3." in msg.text() and msg.payload()["counts"]["accepted"] == 30
    late = late_message(dag_run={"dag_id": "dialinsight_nightly", "dag_run_id": "scheduled__x", "state": "running",
                                 "logical_date": "2026-11-24T02:00:00Z"}, deadline_time="2026-11-24 08:00:00+00:00",
                        hours=6, run_url=None)
    assert late.severity == "warning" and "not finished 6 h after its slot" in late.subject


def test_runs_created_after_their_deadline_raise_no_late_alert():
    from dialinsight_core.notify import created_late

    deadline = "2026-12-02 08:00:00+00:00"
    assert created_late({"run_type": "scheduled", "queued_at": "2026-12-02T09:04:35.1+00:00"}, deadline)  # catch-up
    assert created_late({"run_type": "backfill", "queued_at": "2026-12-02T07:00:00Z"}, deadline)
    assert not created_late({"run_type": "scheduled", "queued_at": "2026-12-02T02:00:01Z"}, deadline)


def test_verdicts_fail_at_once_and_let_transient_faults_retry():
    from airflow.sdk.exceptions import AirflowFailException
    from dialinsight_airflow.callbacks import verdicts

    for exc in (ConfigError("bad key"), SourceError("empty"), BatchGateFailed(["x: observed 0, expected >= 1"], "e")):
        with pytest.raises(AirflowFailException, match="Next: ") as err, verdicts():
            raise exc
        assert err.value.__cause__ is exc
    for exc in (ConnectionError("store"), TooManyFailures("shard 0", "hint"), OSError("disk")):
        with pytest.raises(type(exc)), verdicts():
            raise exc


def test_evaluation_message_carries_the_headline_and_flags_a_regression():
    from dialinsight_core.notify import eval_message

    extra = {"snapshot_id": "2026-12-03/r1", "snapshot_uri": "file:///s", "base_model": "smollm2",
             "report": "file:///s/eval/report.html", "domain_before": 0.625, "domain_after": 0.679,
             "domain_after_ablation": 0.626, "general_before": 0.278, "general_after": 0.292,
             "general_delta_points": 1.4, "general_delta_ci95": [-1.3, 4.1], "regressed": False}
    msg = eval_message(dag_id="dialinsight_evaluate", event=extra, run_url="http://ui/run")
    assert msg.event == "evaluated" and msg.severity == "info"
    assert "domain 0.625 -> 0.679" in msg.subject and "+1.4 points" in msg.subject
    assert any("file:///s/eval/report.html" in ln for ln in msg.lines) and msg.lines[-1] == "Run: http://ui/run"
    bad = eval_message(dag_id="dialinsight_evaluate", event=extra | {"regressed": True, "general_delta_points": -7.0},
                       run_url=None)
    assert bad.severity == "warning" and "REGRESSION" in bad.subject and bad.text().startswith("WARNING")
