"""Notifications reach people (issue 14): the real nightly DAG under ``dag.test()`` sends through a
real SMTP server (aiosmtpd, with AUTH) and a real HTTP webhook receiver, both on free loopback
ports; credentials come from Airflow Connections only. One test per event kind, plus a scan of every
message for secrets, PII and dialogue text."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dialinsight_core.pii import find_pii
from tests.support.dags import load_dag
from tests.support.fake_openai import planted
from tests.support.receivers import SmtpReceiver, WebhookReceiver, connections_env, free_port

SMTP_PASSWORD = "smtp-Pa55word-7f3a9c"
WEBHOOK_TOKEN = "xoxb-webhook-token-5e1d0b2a"
API_KEY = "sk-test-engine-key-4c8d2f7e9a1b"
ENGINE_PASSWORD = "llmProxyPass93"


@pytest.fixture
def channels(monkeypatch, tmp_path):
    with SmtpReceiver("alerts", SMTP_PASSWORD) as smtp, WebhookReceiver() as hook:
        env = {**connections_env(smtp, hook, SMTP_PASSWORD, WEBHOOK_TOKEN),
               "DIALINSIGHT__STORAGE__URI": f"file://{tmp_path / 'store'}",
               "DIALINSIGHT__LABELING__SHARDS": "2",
               "DIALINSIGHT__AIRFLOW__RETRIES": "0",  # dag.test() honours retries: tests that want them set them
               "OPENAI_API_KEY": API_KEY,
               "AIRFLOW__API__BASE_URL": "http://airflow.example.internal:8080"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield smtp, hook, tmp_path / "store"


def _engine(monkeypatch, base_url: str) -> None:
    monkeypatch.setenv("DIALINSIGHT__ENGINE__KIND", "openai")
    monkeypatch.setenv("DIALINSIGHT__ENGINE__BASE_URL", base_url)


def _messages(smtp: SmtpReceiver, hook: WebhookReceiver) -> list[str]:
    return [f"{m.subject}\n{m.body}" for m in smtp.mails] + [json.dumps(p.body, ensure_ascii=False) for p in hook.posts]


def _assert_safe(texts: list[str], store: Path) -> None:
    """No secret, no PII, no dialogue text in any message."""
    turns = [t for f in store.rglob("ingest/turns.parquet") for t in pq.read_table(f, columns=["text"]).column(0).to_pylist()]
    long_turns = {t.strip() for t in turns if t and len(t.strip()) >= 24}
    assert long_turns, "the run read no dialogue text to scan for"
    for text in texts:
        for secret in (SMTP_PASSWORD, WEBHOOK_TOKEN, API_KEY, ENGINE_PASSWORD):
            assert secret not in text
        assert find_pii(text) == [], [m.text for m in find_pii(text)]
        assert not [t for t in long_turns if t in text]


@pytest.mark.timeout(600)
def test_run_summary_on_success_in_both_channels(airflow_db, channels, fake_openai, monkeypatch):
    smtp, hook, store = channels
    _engine(monkeypatch, fake_openai(planted(0.25, "repeat")).base_url)
    run = load_dag().test(logical_date=datetime(2026, 11, 20, 2, 0, tzinfo=UTC), run_conf={"max_dialogues": 12})
    assert run.state == "success"
    # a run that sets max_dialogues publishes beside latest.json without moving it (there is none yet)
    assert not (store / "snapshots" / "latest.json").exists()
    (manifest_path,) = (store / "snapshots").rglob("manifest.json")
    manifest = json.loads(manifest_path.read_text())
    c = manifest["counts"]

    (post,) = hook.posts
    body = post.body
    assert body["event"] == "run_succeeded" and body["severity"] == "info"
    assert body["counts"]["accepted"] == c["accepted"] and body["counts"]["rejected"] == c["rejected"]
    assert body["counts"]["quarantined"] == c["quarantined"]
    assert body["accept_rate"] == round(c["accepted"] / (c["accepted"] + c["rejected"]), 4)
    assert body["snapshot_uri"] == manifest["uri"] and body["report"] == f"{manifest['uri']}/report.html"
    assert "repetitive" in body["top_reject_reasons"]  # the planted defect is the top reason
    assert body["run_url"].startswith("http://airflow.example.internal:8080/dags/dialinsight_nightly/runs/")
    assert body["text"].startswith("*[dialinsight] OK dialinsight_nightly 2026-11-20")
    assert post.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"  # the token from the Connection
    assert post.path == "/hooks/team-data"

    (mail,) = smtp.mails
    assert smtp.logins == ["alerts"] and mail.recipients == ["data-team@example.com"]
    assert mail.sender == "dialinsight@example.com"
    assert mail.subject == body["subject"] and f"Accepted {c['accepted']}, rejected {c['rejected']}" in mail.body
    assert "Top reject reasons: repetitive" in mail.body and manifest["uri"] in mail.body
    assert "latest.json was not moved: override run (max_dialogues)" in mail.body
    _assert_safe(_messages(smtp, hook), store)


@pytest.mark.timeout(600)
def test_failing_gate_alert_names_the_expectation_observed_and_bound(airflow_db, channels, fake_openai, monkeypatch):
    smtp, hook, store = channels
    _engine(monkeypatch, fake_openai(planted(0.25, "repeat")).base_url)
    monkeypatch.setenv("DIALINSIGHT__GATES__MIN_ACCEPT_RATE", "0.99")
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRIES", "2")  # a data verdict is not retried anyway
    run = load_dag().test(logical_date=datetime(2026, 11, 21, 2, 0, tzinfo=UTC), run_conf={"max_dialogues": 8})
    assert run.state == "failed"
    (post,) = hook.posts  # one alert: the gate; publish (upstream failed) and nothing else
    b = post.body
    assert b["event"] == "task_failed" and b["task_id"] == "gate" and b["kind"] == "data_verdict"
    assert b["try_number"] == 1 and b["error_type"] == "BatchGateFailed"
    (detail,) = [d for d in b["details"] if d.startswith("accept_rate_below_min")]
    assert re.search(r"observed 0\.\d+, expected >= 0\.99", detail), detail
    assert "data_docs/index.html" in b["next_step"] and "latest.json" in b["next_step"]
    assert b["log_url"].startswith("http://airflow.example.internal:8080/dags/dialinsight_nightly/runs/")
    assert "/tasks/gate" in b["log_url"]
    (mail,) = smtp.mails
    assert mail.subject.startswith("[dialinsight] FAILED dialinsight_nightly.gate: batch gate failed")
    assert "not retried" in mail.body and "accept_rate_below_min" in mail.body and "Next: open the Data Docs" in mail.body
    _assert_safe(_messages(smtp, hook), store)


@pytest.mark.timeout(600)
def test_label_task_that_cannot_reach_its_server_alerts_after_its_last_try(airflow_db, channels, monkeypatch):
    smtp, hook, store = channels
    port = free_port()  # nothing listens here
    _engine(monkeypatch, f"http://svc:{ENGINE_PASSWORD}@127.0.0.1:{port}/v1")
    monkeypatch.setenv("DIALINSIGHT__ENGINE__MAX_RETRIES", "0")
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRIES", "1")  # transient: retried once, one alert after the last try
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRY_DELAY_S", "0")
    monkeypatch.setenv("DIALINSIGHT__LABELING__SHARDS", "1")
    run = load_dag().test(logical_date=datetime(2026, 11, 22, 2, 0, tzinfo=UTC), run_conf={"max_dialogues": 3})
    assert run.state == "failed"
    label = next(ti for ti in run.get_task_instances() if ti.task_id == "label")
    assert label.try_number == 2
    (post,) = hook.posts
    b = post.body
    assert b["event"] == "task_failed" and b["task_id"] == "label" and b["map_index"] == 0
    assert b["kind"] == "transient" and b["try_number"] == 2 and b["max_tries"] == 1
    assert "connection_error" in b["summary"]
    assert f"curl -s http://127.0.0.1:{port}/v1/models" in b["next_step"]  # the URL, without its credentials
    (mail,) = smtp.mails
    assert "FAILED: task label[0] of dialinsight_nightly" in mail.body and "try 2 of 2" in mail.body
    _assert_safe(_messages(smtp, hook), store)
