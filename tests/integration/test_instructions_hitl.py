"""The instructions DAG through the real scheduler with the real CPU vLLM engine (tiny config):
the approval step is answered by this test over the REST API, and the next nightly run uses the
newly approved library version (visible in the snapshot's lineage)."""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _script():
    spec = importlib.util.spec_from_file_location("local_airflow", ROOT / "scripts" / "local_airflow.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(1500)
def test_curator_approves_and_the_next_nightly_uses_the_version(tmp_path, monkeypatch):
    store = tmp_path / "store"
    env = {"DIALINSIGHT_AIRFLOW_HOME": str(tmp_path / "airflow"), "DIALINSIGHT_UI_PORT": "0",
           "DIALINSIGHT__STORAGE__URI": f"file://{store}", "DIALINSIGHT__INGEST__MAX_DIALOGUES": "2",
           "DIALINSIGHT__LABELING__SHARDS": "1", "DIALINSIGHT__AIRFLOW__RETRIES": "0",
           "DIALINSIGHT__AIRFLOW__INSTRUCTIONS_SCHEDULE": "null", "DIALINSIGHT__ENGINE__MAX_TOKENS": "256",
           "DIALINSIGHT__INSTRUCTIONS__SEEDS_PER_CELL": "1", "DIALINSIGHT__INSTRUCTIONS__SEED_FAMILIES": "[summarisation]",
           "DIALINSIGHT__INSTRUCTIONS__MAX_PARENTS": "1", "DIALINSIGHT__INSTRUCTIONS__OPERATORS": "[deepen, reword]",
           # a 4-record nightly batch is too small for the batch floors; row thresholds stay as configured
           "DIALINSIGHT__GATES__MIN_ACCEPT_RATE": "0.0", "DIALINSIGHT__GATES__MIN_ROWS": "0",
           "DIALINSIGHT__GATES__MIN_MEAN_OVERALL": "0.0", "DIALINSIGHT__GATES__MIN_MEAN": "{}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    la = _script()
    try:
        port = la.start()["port"]
        token = la.login(port)
        dag = "dialinsight_instructions"
        deadline = time.monotonic() + 180
        while True:
            try:
                la.api(port, "GET", f"/api/v2/dags/{dag}", token=token)
                break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline, "instructions DAG not parsed"
                time.sleep(2)
        la.api(port, "PATCH", f"/api/v2/dags/{dag}", {"is_paused": False}, token=token)
        run_id = la.api(port, "POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None,
                                                                       "conf": {"max_dialogues": 3}}, token=token)["dag_run_id"]
        quoted = urllib.request.quote(run_id, safe="")
        hitl = f"/api/v2/dags/{dag}/dagRuns/{quoted}/taskInstances/review/-1/hitlDetails"
        deadline = time.monotonic() + 900
        while True:  # wait until the review task is really waiting for a human
            assert time.monotonic() < deadline, "review step never waited for input"
            token = la.login(port)
            run = la.api(port, "GET", f"/api/v2/dags/{dag}/dagRuns/{quoted}", token=token)
            assert run["state"] != "failed", f"instructions run failed: {run}"
            ti = la.api(port, "GET", f"/api/v2/dags/{dag}/dagRuns/{quoted}/taskInstances/review", token=token)
            if ti["state"] in ("awaiting_input", "deferred"):
                break
            time.sleep(3)
        # Answering within a second of the pause races the executor's report of the paused process
        # (Airflow 3.3 LocalExecutor marks the task failed); a human never answers that fast.
        time.sleep(10)
        la.api(port, "PATCH", hitl, {"chosen_options": ["Approve"],
                                     "params_input": {"edits": {}, "note": "prefer short tasks"}}, token=token)
        deadline = time.monotonic() + 300
        while (run := la.api(port, "GET", f"/api/v2/dags/{dag}/dagRuns/{quoted}", token=la.login(port)))["state"] not in (
                "success", "failed"):
            assert time.monotonic() < deadline
            time.sleep(3)
        assert run["state"] == "success"
        pointer = json.loads((store / "library" / "approved.json").read_text())
        manifest = json.loads((store / pointer["manifest"]).read_text())
        assert manifest["status"] == "approved" and manifest["review_note"] == "prefer short tasks"
        assert manifest["yield"] and manifest["diversity"]["instructions"] > 0
        # the real model's candidates went through evolution and elimination; each kept a reason or survived
        rows = pq.read_table(store / pointer["instructions"]).to_pylist()
        new = [r for r in rows if r["origin"] == "evolved" or r["instruction_id"].startswith("seed-")]
        assert new and {r["operator"] for r in new if r["origin"] == "evolved"} == {"deepen", "reword"}
        assert all(r["status"] == "approved" or r["reason_code"] for r in new)
        # the next nightly uses the approved version: it is in the lineage of every published row
        la.demo(max_dialogues=2, timeout=900)
        latest = json.loads((store / "snapshots" / "latest.json").read_text())
        snap = json.loads((store / latest["manifest"]).read_text())
        assert snap["library_version"] == [pointer["version"]] or snap["counts"]["accepted"] == 0
        prompts = list((store / "work").rglob("prompts/prompts.parquet"))
        versions = {v for p in prompts for v in pq.read_table(p).column("library_version").to_pylist()}
        assert versions == {pointer["version"]}
    finally:
        la.stop(quiet=True)
