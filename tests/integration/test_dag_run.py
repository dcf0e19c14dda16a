"""Run the real dialinsight_nightly DAG with dag.test(): S3 via moto server, engine via the test server."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import boto3
import pandas as pd
import pytest

from tests.support.dags import load_dag
from tests.support.fake_openai import planted


@pytest.fixture
def s3_env(monkeypatch, moto_s3, s3_bucket, fake_openai):
    srv = fake_openai(planted(0.25, "repeat"))
    env = {
        "DIALINSIGHT__STORAGE__URI": f"s3://{s3_bucket}/dialinsight",
        "DIALINSIGHT__STORAGE__S3_ENDPOINT_URL": moto_s3,
        "DIALINSIGHT__ENGINE__KIND": "openai",
        "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url,
        "DIALINSIGHT__LABELING__SHARDS": "3",
        "DIALINSIGHT__AIRFLOW__RETRIES": "0",  # dag.test() honours retries: fail fast in tests
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    return s3, s3_bucket, srv


def _get(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _snapshot_events(run_id: str) -> list[dict]:
    """Extras of the ``dialinsight_snapshot`` asset events a run emitted (from the metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent.extra, AssetEvent.source_task_id).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).where(
            AssetModel.name == "dialinsight_snapshot", AssetEvent.source_run_id == run_id)).all()
    assert all(task == "publish" for _, task in rows)
    return [extra for extra, _ in rows]


@pytest.mark.timeout(600)
def test_nightly_dag_end_to_end_on_s3(airflow_db, s3_env):
    import json

    s3, bucket, srv = s3_env
    dag = load_dag()
    logical = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    run = dag.test(logical_date=logical, run_conf={"max_dialogues": 20, "promote": True})
    assert run.state == "success"
    tis = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert {k[1] for k in tis if k[0] == "label"} == {0, 1, 2}  # mapped over the configured shards
    assert set(tis.values()) == {"success"}

    latest = json.loads(_get(s3, bucket, "dialinsight/snapshots/latest.json"))
    manifest = json.loads(_get(s3, bucket, f"dialinsight/{latest['manifest']}"))
    snap = latest["manifest"].rsplit("/", 1)[0]
    data = pd.read_parquet(io.BytesIO(_get(s3, bucket, f"dialinsight/{snap}/data/part-00000.parquet")))
    rejected = pd.read_parquet(io.BytesIO(_get(s3, bucket, f"dialinsight/{snap}/rejected/part-00000.parquet")))
    c = manifest["counts"]
    assert c["dialogues_read"] == 20 and c["prompts"] == 40
    assert c["prompts"] == c["accepted"] + c["rejected"] + c["quarantined"] == srv.requests_by_kind()["label"]
    assert len(data) == c["accepted"] > 0 and len(rejected) == c["rejected"] >= srv.requests["repeat"]
    assert "repetitive" in set(rejected.reason_code.str.split(",").explode())
    assert manifest["ds"] == "2026-11-24" and manifest["config_hash"] and manifest["code_version"]
    assert manifest["gx"]["batch_gate_success"] is True
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"dialinsight/{snap}/")["Contents"]}
    assert {f"dialinsight/{snap}/{k}" for k in ("manifest.json", "gx/row_gate.json", "gx/batch_gate.json",
                                                "gx/batch_accepted_gate.json", "gx/summary.json",
                                                "gx/data_docs/index.html", "quarantined/part-00000.parquet")} <= keys
    assert manifest["quality_cost"]["layers"]["rules"] == c["accepted"] + c["rejected"]
    assert manifest["quality_cost"]["judge"]["judged"] <= 0.3 * (c["accepted"] + c["rejected"])
    # a user's snapshot on S3 too: card, exports, complete rows
    assert {f"dialinsight/{snap}/{k}" for k in ("README.md", "report.html", "exports/openai/train.jsonl",
                                                "exports/sharegpt/train.jsonl", "exports/alpaca/train.jsonl")} <= keys
    assert "<svg" in _get(s3, bucket, f"dialinsight/{snap}/report.html").decode()
    assert _get(s3, bucket, f"dialinsight/{snap}/README.md").decode().startswith("---\n")
    openai_rows = _get(s3, bucket, f"dialinsight/{snap}/exports/openai/train.jsonl").decode().splitlines()
    if f"dialinsight/{snap}/exports/openai/validation.jsonl" in keys:  # dialogues held out (the embedded default)
        openai_rows += _get(s3, bucket, f"dialinsight/{snap}/exports/openai/validation.jsonl").decode().splitlines()
    assert len(openai_rows) == c["accepted"]
    assert all(len(m) == 3 and m[-1]["role"] == "assistant" for m in data.messages)
    # the asset event: emitted by publish, with where the snapshot is and what it holds
    (event,) = _snapshot_events(run.run_id)
    assert event["uri"] == manifest["uri"] and event["snapshot_id"] == manifest["snapshot_id"]
    assert event["report"] == f"{manifest['uri']}/report.html" and event["card"] == f"{manifest['uri']}/README.md"
    assert event["counts"]["accepted"] == c["accepted"] and event["run_id"] == run.run_id
    assert event["accept_rate"] == round(c["accepted"] / (c["accepted"] + c["rejected"]), 4)
    assert set(event["suites"]) == {"row_gate", "batch_gate", "batch_accepted_gate"}
    assert manifest["summary_md"].startswith("### dialinsight snapshot") and manifest["uri"] in manifest["summary_md"]


@pytest.mark.timeout(600)
def test_failing_batch_gate_fails_the_gate_task_and_publishes_nothing(airflow_db, s3_env, monkeypatch):
    s3, bucket, _ = s3_env
    monkeypatch.setenv("DIALINSIGHT__GATES__MIN_ACCEPT_RATE", "0.99")
    # retries on: a batch-gate verdict must fail at once (AirflowFailException), not be retried
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRIES", "2")
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRY_DELAY_S", "1")
    dag = load_dag()
    run = dag.test(logical_date=datetime(2026, 11, 25, 2, 0, tzinfo=UTC), run_conf={"max_dialogues": 6})
    assert run.state == "failed"
    tis = {ti.task_id: ti for ti in run.get_task_instances() if ti.map_index < 0}
    assert tis["gate"].state == "failed" and tis["publish"].state == "upstream_failed"
    assert tis["gate"].try_number == 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dialinsight/snapshots/")
    assert listed.get("KeyCount", 0) == 0  # no snapshot, no latest.json
    assert _snapshot_events(run.run_id) == []  # and no asset event: downstream DAGs do not run
    evidence = s3.list_objects_v2(Bucket=bucket, Prefix="dialinsight/work/ds=2026-11-25/")["Contents"]
    keys = {o["Key"].split("/gate/gx/", 1)[-1].split("/", 1)[1] for o in evidence if "/gate/gx/" in o["Key"]}
    assert {"batch_gate.json", "summary.json", "data_docs/index.html"} <= keys


@pytest.mark.timeout(300)
def test_config_error_from_the_run_form_fails_at_once_without_retries(airflow_db, s3_env, monkeypatch):
    """A data verdict (here an invalid config from the Params form: engine=openai without a URL) is
    not retried: the same input gives the same answer an hour later (docs/operations.md)."""
    monkeypatch.setenv("DIALINSIGHT__ENGINE__KIND", "vllm")
    monkeypatch.delenv("DIALINSIGHT__ENGINE__BASE_URL")
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRIES", "2")
    monkeypatch.setenv("DIALINSIGHT__AIRFLOW__RETRY_DELAY_S", "30")  # a retry would show as a 30 s wait and try 2
    run = load_dag().test(logical_date=datetime(2026, 11, 26, 2, 0, tzinfo=UTC),
                           run_conf={"max_dialogues": 2, "engine": "openai"})
    assert run.state == "failed"
    tis = {ti.task_id: ti for ti in run.get_task_instances() if ti.map_index < 0}
    assert tis["ingest"].state == "failed" and tis["ingest"].try_number == 1
    assert tis["publish"].state == "upstream_failed"


@pytest.mark.timeout(600)
def test_same_logical_date_twice_publishes_same_record_ids(airflow_db, s3_env):
    import json

    s3, bucket, srv = s3_env
    logical = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    ids, sent = [], []
    for _ in range(2):
        before = srv.total
        run = load_dag().test(logical_date=logical, run_conf={"max_dialogues": 8, "promote": True})
        assert run.state == "success"
        sent.append(srv.total - before)
        latest = json.loads(_get(s3, bucket, "dialinsight/snapshots/latest.json"))
        snap = latest["manifest"].rsplit("/", 1)[0]
        data = pd.read_parquet(io.BytesIO(_get(s3, bucket, f"dialinsight/{snap}/data/part-00000.parquet")))
        ids.append(sorted(data.prompt_id))
    assert ids[0] == ids[1] and ids[0]
    # the second run found every label and judge verdict in the request cache (checkpoints on S3)
    assert sent[0] >= 16 and sent[1] == 0
    chunks = s3.list_objects_v2(Bucket=bucket, Prefix="dialinsight/cache/label/")["Contents"]
    assert any(o["Key"].endswith(".parquet") for o in chunks)
