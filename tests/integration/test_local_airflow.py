"""The README's demo path with the real Airflow 3 scheduler (LocalExecutor) and the real CPU vLLM engine.

STACK.md: an in-task vLLM engine works under ``airflow dags test`` but failed under the real
scheduler until it ran in-process, so this path is tested through the scheduler itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.procs import procs_with_env
from tests.support.receivers import SmtpReceiver, WebhookReceiver, connections_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _api(port: int, path: str, token: str | None = None, body: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _task_log(port: int, token: str, run_id: str, task: str, map_index: int) -> list[dict]:
    quoted = urllib.request.quote(run_id, safe="")
    log = _api(port, f"/api/v2/dags/dialinsight_nightly/dagRuns/{quoted}/taskInstances/{task}/logs/1"
                     f"?map_index={map_index}&full_content=true", token)
    return [e for e in log["content"] if isinstance(e, dict)]


@pytest.fixture
def receivers():
    with SmtpReceiver("alerts", "smtp-secret-2b7c") as smtp, WebhookReceiver() as hook:
        yield smtp, hook


def _wait_for(pred, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = pred()
        if found:
            return found
        time.sleep(2)
    return pred()


@pytest.mark.timeout(1200)
def test_demo_through_the_real_scheduler_then_stop_leaves_nothing(tmp_path, receivers):
    home = tmp_path / "airflow"
    smtp, hook = receivers
    env = dict(os.environ, DIALINSIGHT_AIRFLOW_HOME=str(home), DIALINSIGHT_UI_PORT="0",
               **connections_env(smtp, hook, "smtp-secret-2b7c", "hook-token-9d1e"),
               # a nightly is late 3.6 s after its slot (see the run triggered with logical_date=now below)
               DIALINSIGHT__NOTIFICATIONS__DEADLINE_HOURS="0.001",
               DIALINSIGHT__STORAGE__URI=f"file://{tmp_path / 'store'}", DIALINSIGHT__INGEST__MAX_DIALOGUES="3",
               DIALINSIGHT__LABELING__SHARDS="1", DIALINSIGHT__AIRFLOW__RETRIES="0",
               DIALINSIGHT__ENGINE__MAX_TOKENS="128",
               # a 6-record batch is too small for the batch floors (128 tokens truncates some answers);
               # row thresholds stay as configured
               DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.0", DIALINSIGHT__GATES__MIN_ROWS="0",
               DIALINSIGHT__GATES__MIN_MEAN_OVERALL="0.0", DIALINSIGHT__GATES__MIN_MEAN="{}")
    script = [sys.executable, str(ROOT / "scripts" / "local_airflow.py")]
    try:
        first = subprocess.run([*script, "demo", "--max-dialogues", "3", "--timeout", "600"], env=env,
                               capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "run succeeded" in first.stdout and "accepted" in first.stdout and "login: admin /" in first.stdout
        # the demo run sets max_dialogues: published beside latest.json, which stays on the nightly slot's snapshot
        assert "latest.json    : " in first.stdout and "(not moved: override run (max_dialogues)" in first.stdout
        # publish's asset event scheduled the snapshot check DAG, which read the snapshot back
        check_line = next(ln for ln in first.stdout.splitlines() if ln.startswith("asset event"))
        assert "dialinsight_snapshot_check run" in check_line and check_line.endswith(": success"), check_line
        state = json.loads((home / "run" / "state.json").read_text())
        port = state["port"]
        assert _api(port, "/api/v2/monitor/health")["scheduler"]["status"] == "healthy"
        # re-running the demo on the running deployment works too
        again = subprocess.run([*script, "demo", "--max-dialogues", "2", "--timeout", "600"], env=env,
                               capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = _api(port, "/auth/token", body={"username": "admin", "password": password})["access_token"]
        runs = _api(port, "/api/v2/dags/dialinsight_nightly/dagRuns", token)["dag_runs"]
        manual = [r for r in runs if r["run_type"] == "manual"]
        assert len(manual) == 2 and all(r["state"] == "success" for r in manual)
        checks = _api(port, "/api/v2/dags/dialinsight_snapshot_check/dagRuns", token)["dag_runs"]
        assert checks and {r["run_type"] for r in checks} == {"asset_triggered"}
        events = _api(port, "/api/v2/assets/events?source_dag_id=dialinsight_nightly", token)["asset_events"]
        assert {e["source_task_id"] for e in events} == {"publish"} and all(e["extra"]["uri"] for e in events)
        # through the real scheduler: the run summaries came from the worker (publish's success callback),
        # the late alert from the triggerer (DeadlineAlert -> AsyncCallback -> the notifier's async hooks)
        ok = [p.body for p in hook.posts if p.body["event"] == "run_succeeded"]
        assert {b["run_id"] for b in ok} >= {r["dag_run_id"] for r in manual}
        scheduled = [r["dag_run_id"] for r in runs if r["run_type"] == "scheduled"]
        # a run whose slot is now and that takes longer than its (4 s) deadline is late: the scheduler
        # finds the missed deadline and the triggerer sends the alert
        now = datetime.now(UTC).isoformat()
        late_run = _api(port, "/api/v2/dags/dialinsight_nightly/dagRuns", token,
                        {"logical_date": now, "conf": {"max_dialogues": 2}})["dag_run_id"]
        late = _wait_for(lambda: [p.body for p in hook.posts if p.body["event"] == "run_late"], 240)
        assert late and {b["run_id"] for b in late} == {late_run}, [p.body for p in hook.posts]
        assert late[0]["text"].startswith(f"*[dialinsight] LATE dialinsight_nightly run {late_run}")
        # the catch-up slot that unpausing started was created after its deadline: its lateness is not news
        assert not [b for b in late if b["run_id"] in scheduled]
        late_mail = _wait_for(lambda: [m for m in smtp.mails if m.subject.startswith("[dialinsight] LATE")], 60)
        assert late_mail and "not finished 0.001 h after its slot" in late_mail[0].body
        assert {m.subject.split()[1] for m in smtp.mails} >= {"OK", "LATE"}
        # logs a person can read: a successful task logs no ERROR line (the engine's start-up output is not
        # an error), library INFO is hidden, and the stage's verdict line is there
        # (the slot run unpausing started went first, so its label task is the one that built the engine)
        for task, map_index, verdict in (("label", 0, "label OK: "), ("gate", -1, "gate OK: ")):
            lines = _task_log(port, token, scheduled[0], task, map_index)
            assert not [e for e in lines if e.get("level") in ("error", "critical")], lines
            assert not [e for e in lines if str(e.get("logger", "")).startswith("great_expectations")], lines
            assert any(str(e.get("event", "")).startswith(verdict) for e in lines), lines
        # latest.json is the scheduled (full) run's snapshot: the manual runs set max_dialogues
        latest = json.loads((tmp_path / "store" / "snapshots" / "latest.json").read_text())
        manifest = json.loads((tmp_path / "store" / latest["manifest"]).read_text())
        assert manifest["engine"]["kind"] == "vllm" and manifest["run_id"] == scheduled[0]
        assert manifest["counts"]["dialogues_read"] == 3
    finally:
        stop = subprocess.run([*script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert procs_with_env("AIRFLOW_HOME", str(home)) == []
