"""The slowest scenario, through the real scheduler (issue 15): the nightly's label task is killed
with ``kill -9`` in the middle of its shard while the scheduler runs it; Airflow retries it, the
retry resends only what the killed attempt had not checkpointed, and the run publishes a complete
snapshot with no record lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.reliability.conftest import Pipeline, resent
from tests.support.fake_openai import is_judge
from tests.support.procs import procs_with_arg, procs_with_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _wait(pred, timeout: float, every: float = 1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = pred()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s")


@pytest.mark.timeout(900)
def test_kill_9_of_a_label_task_the_scheduler_runs_then_its_retry(tmp_path, fake_openai, pipeline_env, record,
                                                                  monkeypatch):
    srv = fake_openai(lambda body: "good" if is_judge(body) else "slow", slow_s=0.4)
    home = tmp_path / "airflow"
    env = pipeline_env(srv, DIALINSIGHT__LABELING__SHARDS="1", DIALINSIGHT__LABELING__CHECKPOINT_EVERY="2",
                       DIALINSIGHT__ENGINE__MAX_CONCURRENCY="1", DIALINSIGHT__INGEST__MAX_DIALOGUES="8",
                       DIALINSIGHT__AIRFLOW__RETRIES="1", DIALINSIGHT__AIRFLOW__RETRY_DELAY_S="1",
                       DIALINSIGHT__GATES__COLLAPSE__MIN_STDEV="0")  # every answer is the same kind here
    full = dict(os.environ, DIALINSIGHT_AIRFLOW_HOME=str(home), DIALINSIGHT_UI_PORT="0", **env)
    monkeypatch.setenv("DIALINSIGHT_AIRFLOW_HOME", str(home))
    script = [sys.executable, str(ROOT / "scripts" / "local_airflow.py")]
    import scripts.local_airflow as la

    try:
        up = subprocess.run([*script, "start"], env=full, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        port = json.loads((home / "run" / "state.json").read_text())["port"]
        token = la.login(port)
        la.wait_for_dag(port, token)
        la.unpause(port, token)  # the scheduler starts the nightly's latest slot
        runs = _wait(lambda: la.api(port, "GET", f"/api/v2/dags/{la.DAG_ID}/dagRuns", token=token)["dag_runs"], 120)
        run_id = runs[0]["dag_run_id"]
        quoted = urllib.parse.quote(run_id, safe="")

        def running_label():
            tis = la.api(port, "GET", f"/api/v2/dags/{la.DAG_ID}/dagRuns/{quoted}/taskInstances", token=token)
            return next((t for t in tis["task_instances"] if t["task_id"] == "label" and t["state"] == "running"), None)

        ti = _wait(running_label, 300)
        chunks = tmp_path / "store" / "cache" / "label" / "chunks"
        _wait(lambda: chunks.is_dir() and len(list(chunks.glob("*.parquet"))) >= 2, 120, 0.2)  # mid-shard
        pids = _wait(lambda: procs_with_arg(f"airflow worker -- {ti['id']}"), 30, 0.2)
        answered_at_kill = sum(srv.answered.values())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        durable = sum(1 for _ in chunks.glob("*.parquet")) * 2  # checkpoint_every=2 results per chunk
        run = la.wait_run(port, run_id, 600)
        assert run["state"] == "success", run
        tis = la.api(port, "GET", f"/api/v2/dags/{la.DAG_ID}/dagRuns/{quoted}/taskInstances", token=token)
        label = next(t for t in tis["task_instances"] if t["task_id"] == "label")
        assert label["try_number"] == 2  # the killed try, then Airflow's retry
        pipe = Pipeline(env, run["logical_date"][:10], run_id)
        n_resent = resent(srv)
        assert n_resent <= answered_at_kill - min(durable, answered_at_kill) + 1  # only what was not checkpointed
        record("kill -9 of a label task under the real scheduler", "SIGKILL of the task process (`airflow worker -- "
               "<ti id>`) after 2 checkpoints; Airflow's retry (try 2) finished the shard", pipe, n_resent)
    finally:
        stop = subprocess.run([*script, "stop"], env=full, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert procs_with_env("AIRFLOW_HOME", str(home)) == []
