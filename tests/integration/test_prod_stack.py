"""The production topology, for real, on this machine (issue 14): PostgreSQL metadata DB, Redis
broker, Airflow with the CeleryExecutor and two workers (queues ``default`` and ``gpu``), an
S3-protocol server reached through the ``aws_default`` connection. A nightly runs through the real
scheduler; label tasks must run on the gpu worker only, the snapshot must land in the bucket, and
nothing may be left running afterwards. The engine is the OpenAI-compatible test server: the engine
itself is covered by test_local_airflow.py, this test is about where work runs and where it lands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.support.fake_openai import planted
from tests.support.procs import procs_with_arg, procs_with_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_nightly_on_celery_postgres_redis_s3(tmp_path, fake_openai):
    srv = fake_openai(planted(0.25, "repeat"))
    home = tmp_path / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DIALINSIGHT_AIRFLOW_HOME=str(home), DIALINSIGHT_UI_PORT="0",
               DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
               DIALINSIGHT__INGEST__MAX_DIALOGUES="3", DIALINSIGHT__LABELING__SHARDS="2",
               DIALINSIGHT__AIRFLOW__RETRIES="0",
               # a few records: too few for the batch floors (the row gate still applies)
               DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.0", DIALINSIGHT__GATES__MIN_ROWS="0",
               DIALINSIGHT__GATES__MIN_MEAN_OVERALL="0.0", DIALINSIGHT__GATES__MIN_MEAN="{}")
    script = [sys.executable, str(ROOT / "scripts" / "prod_stack.py")]
    pg_base = None
    try:
        up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        stack = json.loads(up.stdout.strip().splitlines()[-1])
        pg_base = json.loads((home / "run" / "postgres.json").read_text())["base"]
        night = subprocess.run([*script, "nightly", "--max-dialogues", "4", "--timeout", "600"], env=env,
                               capture_output=True, text=True, timeout=700)
        assert night.returncode == 0, night.stdout[-3000:] + night.stderr[-3000:]
        out = json.loads(night.stdout[night.stdout.index("\n{") + 1:])
        assert out["state"] == "success"
        host = socket.gethostname()
        where = {(t["task_id"], t["map_index"]): (t["queue"], t["hostname"]) for t in out["tasks"]}
        labels = [v for k, v in where.items() if k[0] == "label"]
        assert labels and set(labels) == {("gpu", f"worker-gpu.{host}")}
        for task in ("ingest", "build_prompts", "gate", "publish"):
            assert where[(task, -1)] == ("default", f"worker-default.{host}"), task
        assert where[("score", -1)] == ("gpu", f"worker-gpu.{host}")  # the judge shares the engine queue
        # the metadata DB is the Postgres cluster; the Celery workers received the tasks through Redis
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={stack['postgres_port']} user=airflow dbname=airflow") as conn:
            (n,) = conn.execute("select count(*) from task_instance where run_id = %s", (out["run_id"],)).fetchone()
        assert n == len(out["tasks"])
        logs = home / "logs" / "components"
        received = {w: (logs / f"{w}.log").read_text(errors="replace").count("execute_workload") for w in
                    ("worker-default", "worker-gpu")}
        assert all(received.values()), received
        # the snapshot landed in the bucket, written with the connection's credentials
        s3 = boto3.client("s3", endpoint_url=stack["s3_url"], region_name="us-east-1",
                          aws_access_key_id="stack-access-key", aws_secret_access_key="stack-secret-key")
        latest = json.loads(s3.get_object(Bucket="dialinsight", Key="dialinsight/snapshots/latest.json")["Body"].read())
        manifest = json.loads(s3.get_object(Bucket="dialinsight", Key=f"dialinsight/{latest['manifest']}")["Body"].read())
        assert manifest["counts"]["dialogues_read"] >= 3 and manifest["uri"].startswith("s3://dialinsight/dialinsight/")
        assert srv.requests_by_kind()["label"] >= manifest["counts"]["prompts"] - manifest["counts"]["quarantined"]

        # a backfill of a date range (Airflow 3 backfills, as the UI makes them), twice: idempotent per
        # logical date, the same snapshot ids, nothing resent the second time
        def backfill() -> list[dict]:
            res = subprocess.run([*script, "backfill", "2026-11-20", "2026-11-21"], env=env, capture_output=True,
                                 text=True, timeout=900)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            return json.loads(res.stdout[res.stdout.rindex("\n[") + 1:])

        first = backfill()
        assert [r["ds"] for r in first] == ["2026-11-20", "2026-11-21"] and {r["state"] for r in first} == {"success"}
        assert all(r["run_id"].startswith("backfill__") for r in first)
        sent = srv.total
        second = backfill()
        assert [(r["run_id"], r["snapshot_id"]) for r in second] == [(r["run_id"], r["snapshot_id"]) for r in first]
        assert srv.total == sent  # every label and judge answer came from the request cache
        for r in first:
            key = f"dialinsight/snapshots/ds={r['ds']}/"
            listed = s3.list_objects_v2(Bucket="dialinsight", Prefix=key)["Contents"]
            assert sum(o["Key"].endswith("/manifest.json") for o in listed) == 1, key  # one snapshot per date
    finally:
        down = subprocess.run([*script, "down"], env=env, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert procs_with_env("AIRFLOW_HOME", str(home)) == []  # api-server, scheduler, workers, redis, s3 server
    assert pg_base and not Path(pg_base).exists() and procs_with_arg(pg_base) == []  # Postgres stopped and removed
