"""Run the embedded-default Airflow 3 deployment on this machine, and the demo on top of it.

    python scripts/local_airflow.py start   # api-server, scheduler, dag-processor, triggerer
    python scripts/local_airflow.py demo    # start (if needed), trigger dialinsight_nightly, wait, summary
    python scripts/local_airflow.py status
    python scripts/local_airflow.py stop    # ends every process group it started

Each component runs in its own process group (``setsid``) so ``stop`` ends it with all the
children it spawned (``airflow standalone`` leaves children behind, see STACK.md). Everything
lives under ``var/airflow`` (AIRFLOW_HOME, SQLite DB, logs, pids). The UI binds 127.0.0.1 on
port 8080, or a free port when 8080 is taken; SimpleAuthManager keeps auth on.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
DAG_ID = "dialinsight_nightly"
CHECK_DAG_ID = "dialinsight_snapshot_check"  # scheduled on the snapshot asset that publish emits
EVAL_DAG_ID = "dialinsight_evaluate"  # also on the snapshot asset; paused until `make evaluate` (minutes of CPU each)
LOCAL_MAX_DIALOGUES = int(os.environ.get("DEMO_MAX_DIALOGUES", "24"))  # per source, for every run of this deployment


def home() -> Path:
    return Path(os.environ.get("DIALINSIGHT_AIRFLOW_HOME", ROOT / "var" / "airflow")).resolve()


def state_file() -> Path:
    return home() / "run" / "state.json"


def load_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is fine
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def secrets_for(h: Path) -> dict[str, str]:
    """JWT/API secrets shared by all components (each process would otherwise invent its own)."""
    path = h / "secrets.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}))
        path.chmod(0o600)
    return json.loads(path.read_text())


def airflow_env(port: int, log_ports: tuple[int, int] | None = None) -> dict[str, str]:
    h = home()
    worker_log_port, trigger_log_port = log_ports or (free_port(0), free_port(0))
    sec = secrets_for(h)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(h),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: the default 32 spawns 32 workers
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__SECRET_KEY": sec["api"],
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # log servers default to fixed ports 8793/8794: the machine is shared, take free ones
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine inside the task process (STACK.md)
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")) if p),
    })
    # the embedded default labels on 2 CPU cores: its scheduled nightly (and the slot that unpausing
    # starts) reads a bounded sample, so the first snapshot comes in minutes; 0 = all (production)
    env.setdefault("DIALINSIGHT__INGEST__MAX_DIALOGUES", str(LOCAL_MAX_DIALOGUES))
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _stat(pid_dir: Path) -> tuple[str, int] | None:
    """(state, process group) from /proc/<pid>/stat, or None when the process is gone."""
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
    return fields[0], int(fields[2])


def _live_members() -> dict[int, list[int]]:
    """pgid -> pids of its processes that are not zombies (an exited child that its parent has not
    reaped still answers ``kill(pid, 0)``, so signals alone would call it alive)."""
    groups: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        st = _stat(d) if d.name.isdigit() else None
        if st and st[0] != "Z":
            groups.setdefault(st[1], []).append(int(d.name))
    return groups


def pid_alive(pid: int) -> bool:
    st = _stat(Path("/proc") / str(pid))
    return st is not None and st[0] != "Z"


def group_alive(pgid: int) -> bool:
    return pgid in _live_members()


def init(env: dict[str, str]) -> None:
    """Create/upgrade the DB and the engine pool (idempotent)."""
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    from dialinsight_core.config import load_settings

    cfg = load_settings().airflow
    subprocess.run([airflow_bin(), "pools", "set", cfg.engine_pool, str(cfg.engine_pool_slots),
                    "LLM engines held at once (each holds GBs of memory)"], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def api(port: int, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 10) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def password() -> str:
    path = home() / "simple_auth_manager_passwords.json.generated"
    return json.loads(path.read_text())["admin"]


def login(port: int) -> str:
    return api(port, "POST", "/auth/token", {"username": "admin", "password": password()})["access_token"]


def healthy(port: int) -> dict[str, Any] | None:
    try:
        health = api(port, "GET", "/api/v2/monitor/health", timeout=5)
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return health if all((health.get(p) or {}).get("status") == "healthy" for p in parts) else None


def running() -> bool:
    st = load_state()
    return bool(st) and all(group_alive(p) for p in st.get("pgids", {}).values())


def start(timeout: float = 180, extra_env: dict[str, str | None] | None = None,
          extra: tuple[tuple[str, list[str], dict[str, str]], ...] = ()) -> dict[str, Any]:
    """Start the components (and ``extra`` ones: name, argv, env), each in its own process group.
    ``extra_env`` is laid over the Airflow environment; a None value removes the variable."""
    if running():
        st = load_state()
        print(f"already running: {st['url']}")
        return st
    stop(quiet=True)
    port = free_port(int(os.environ.get("DIALINSIGHT_UI_PORT", "8080")))
    env = airflow_env(port)
    for k, v in (extra_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    init(env)
    logs = home() / "logs" / "components"
    logs.mkdir(parents=True, exist_ok=True)
    pgids: dict[str, int] = {}
    procs = [(c, [airflow_bin(), *c.split()], {}) for c in COMPONENTS] + list(extra)
    for name, argv, own_env in procs:
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, env={**env, **own_env}, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        pgids[name] = proc.pid
    st = {"port": port, "url": f"http://127.0.0.1:{port}", "pgids": pgids, "home": str(home())}
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(st))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(port):
            print(f"Airflow is up: {st['url']}  (login: admin / {password()})")
            return st
        dead = [c for c, p in pgids.items() if not pid_alive(p)]
        if dead:
            stop(quiet=True)
            raise SystemExit(f"component(s) {dead} exited at start; see {logs}/<component>.log")
        time.sleep(1)
    stop(quiet=True)
    raise SystemExit(f"Airflow not healthy after {timeout:.0f}s; see {logs}")


def wait_groups_gone(pgids: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_alive(pg) for pg in pgids):
        time.sleep(0.2)


def stop(quiet: bool = False, grace: float = 30) -> None:
    """SIGTERM every component's process group, SIGKILL what is left after ``grace`` seconds."""
    st = load_state()
    groups = st.get("pgids", {})
    for pg in groups.values():
        if group_alive(pg):
            os.killpg(pg, signal.SIGTERM)
    wait_groups_gone(groups.values(), grace)
    for comp, pg in groups.items():
        if group_alive(pg):
            print(f"{comp} did not stop within {grace:.0f}s: killing its process group")
            os.killpg(pg, signal.SIGKILL)
    wait_groups_gone(groups.values(), 10)
    if state_file().exists():
        state_file().unlink()
    if not quiet:
        print(f"stopped {len(groups)} component group(s)" if groups else "nothing was running")


def wait_for_dag(port: int, token: str, timeout: float = 120, dag_id: str = DAG_ID) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api(port, "GET", f"/api/v2/dags/{dag_id}", token=token)
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        errors = api(port, "GET", "/api/v2/importErrors", token=token)
        mtime = (ROOT / "dags" / f"{dag_id}.py").stat().st_mtime
        ours = [e for e in errors.get("import_errors", []) if dag_id in e.get("filename", "")
                and datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() > mtime]
        if ours:
            raise SystemExit(f"{dag_id} failed to import:\n{ours[0]['stack_trace']}")
        time.sleep(2)
    errors = api(port, "GET", "/api/v2/importErrors", token=token)
    raise SystemExit(f"{dag_id} not parsed after {timeout:.0f}s; import errors: {json.dumps(errors)[:2000]}")


def unpause(port: int, token: str) -> None:
    api(port, "PATCH", f"/api/v2/dags/{CHECK_DAG_ID}", {"is_paused": False}, token=token)  # runs on each snapshot
    api(port, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False}, token=token)


def trigger(port: int, token: str, conf: dict[str, Any]) -> str:
    unpause(port, token)
    run = api(port, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}, token=token)
    return run["dag_run_id"]


def task_instances(port: int, token: str, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
    """Every task instance of a run, page by page: the API returns at most 50 by default (and
    ``api.maximum_page_limit``, 100, per page), and a night of 256 label shards has more."""
    quoted = urllib.request.quote(run_id, safe="")
    out: list[dict[str, Any]] = []
    while True:
        page = api(port, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100&offset={len(out)}",
                   token=token)
        out += page.get("task_instances", [])
        if not page.get("task_instances") or len(out) >= page.get("total_entries", 0):
            return out


def _label_progress(port: int, token: str, quoted: str, ti: dict[str, Any]) -> str | None:
    """The last 'label progress' line of a running label task's log (answered, rate, time left)."""
    path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}"
            f"?map_index={ti['map_index']}&full_content=true")
    try:
        log = api(port, "GET", path, token=token, timeout=10)
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None
    events = [e.get("event", "") if isinstance(e, dict) else str(e) for e in (log or {}).get("content", [])]
    found = [e for e in events if "label progress:" in e]
    return found[-1].split("label progress:", 1)[1].strip() if found else None


def run_progress(port: int, token: str, run_id: str) -> tuple[dict[str, Any], str]:
    """(run, one line): tasks done of total, what is running, and a running label task's progress."""
    quoted = urllib.request.quote(run_id, safe="")
    run = api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}", token=token)
    tis = task_instances(port, token, run_id)
    name = {id(t): t["task_id"] + ("" if t["map_index"] < 0 else f"[{t['map_index']}]") for t in tis}
    done = sum(t["state"] in ("success", "skipped") for t in tis)
    running = [t for t in tis if t["state"] == "running"]
    parts = [f"{done}/{len(tis)} tasks done"] + ([f"running: {', '.join(name[id(t)] for t in running)}"] if running else [])
    for t in running:
        if t["task_id"] == "label":
            prog = _label_progress(port, token, quoted, t)
            if prog:
                parts.append(f"{name[id(t)]}: {prog}")
    failed = [name[id(t)] for t in tis if t["state"] == "failed"]
    if failed:
        parts.append(f"FAILED: {', '.join(failed)}")
    upstream = sum(t["state"] == "upstream_failed" for t in tis)
    if upstream:
        parts.append(f"{upstream} not run (upstream failed)")
    return run, "; ".join(parts)


def wait_run(port: int, run_id: str, timeout: float) -> dict[str, Any]:
    """Wait for ``run_id``, showing the progress of whatever run is going: while it queues behind
    another run (max_active_runs=1), that run's."""
    deadline = time.monotonic() + timeout
    token, last = login(port), ""
    while time.monotonic() < deadline:
        try:
            run, line = run_progress(port, token, run_id)
            if run["state"] == "queued":
                ahead = api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?state=running", token=token).get("dag_runs", [])
                if ahead:
                    _, other = run_progress(port, token, ahead[0]["dag_run_id"])
                    line = f"queued behind {ahead[0]['dag_run_id']} ({other})"
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                token = login(port)
                continue
            raise
        if line != last:
            print(f"  [{time.strftime('%H:%M:%S')}] {run['state']}: {line}", flush=True)
            last = line
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    raise SystemExit(f"run {run_id} not finished after {timeout:.0f}s")


def summary(port: int, run: dict[str, Any]) -> None:
    from dialinsight_core.config import load_settings
    from dialinsight_core.storage import LATEST_KEY, store_from_settings

    token = login(port)
    quoted = urllib.request.quote(run["dag_run_id"], safe="")
    xcom = api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/publish/xcomEntries/return_value",
               token=token)
    result = xcom["value"] if isinstance(xcom.get("value"), dict) else json.loads(xcom["value"])
    latest, _ = store_from_settings(load_settings()).read_pointer(LATEST_KEY)
    moved = result.get("latest") or {}
    c = result["counts"]
    print("\n=== dialinsight demo: run succeeded ===")
    print(f"dag run        : {run['dag_run_id']} ({run['state']})")
    print(f"dialogues read : {c['dialogues_read']}   prompts: {c['prompts']}")
    print(f"accepted       : {c['accepted']}")
    print(f"rejected       : {c['rejected']}")
    print(f"quarantined    : {c['quarantined_dialogues']} dialogues, {c['quarantined_prompts']} prompts  "
          f"{c['quarantined_by_stage']}")
    print(f"snapshot       : {result['snapshot_uri']}")
    print(f"run report     : {result['snapshot_uri']}/report.html")
    print(f"dataset card   : {result['snapshot_uri']}/README.md   (datasets.load_dataset(<snapshot folder>))")
    print(f"exports        : {result['snapshot_uri']}/exports/openai/train.jsonl (+ sharegpt, alpaca)")
    check = wait_check(port, token, run["start_date"])
    print(f"asset event    : dialinsight_snapshot -> {CHECK_DAG_ID} run {check}")
    print(f"latest.json    : {latest['snapshot_id'] if latest else 'none yet'}"
          + ("  (this run's snapshot)" if moved.get("moved") else f"  (not moved: {moved.get('why', '?')})"))
    print(f"UI             : http://127.0.0.1:{port}/dags/{DAG_ID}  (login: admin / {password()})")
    print("stop with      : make stop")


def wait_check(port: int, token: str, after: str, timeout: float = 180) -> str:
    """The snapshot check run the publish's asset event started: '<run id>: <state>'."""
    deadline = time.monotonic() + timeout
    found = "not started"
    while time.monotonic() < deadline:
        runs = api(port, "GET", f"/api/v2/dags/{CHECK_DAG_ID}/dagRuns?order_by=-run_after&limit=5", token=token)
        mine = [r for r in runs.get("dag_runs", []) if (r.get("run_after") or "") >= after[:19]]
        if mine:
            found = f"{mine[0]['dag_run_id']}: {mine[0]['state']}"
            if mine[0]["state"] in ("success", "failed"):
                return found
        time.sleep(3)
    return found


def demo(max_dialogues: int, timeout: float) -> None:
    st = start()
    port = st["port"]
    token = login(port)
    wait_for_dag(port, token)
    wait_for_dag(port, token, dag_id=CHECK_DAG_ID)
    # a demo run sets max_dialogues: it publishes its snapshot beside latest.json without moving it
    # (docs/reliability.md); the summary says which snapshot latest.json points at
    run_id = trigger(port, token, {"max_dialogues": max_dialogues})
    print(f"triggered {DAG_ID} run {run_id} (max_dialogues={max_dialogues}); UI: {st['url']}")
    time.sleep(3)  # let the scheduler create the nightly slot that unpausing may have started
    others = [r for r in api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?state=queued&state=running",
                             token=token).get("dag_runs", []) if r["dag_run_id"] != run_id]
    for r in others:
        print(f"note: {r['dag_run_id']} ({r['run_type']}) runs first (max_active_runs=1): unpausing a catchup=False "
              "DAG runs its latest nightly slot. This deployment's runs read "
              f"{os.environ.get('DIALINSIGHT__INGEST__MAX_DIALOGUES', LOCAL_MAX_DIALOGUES)} dialogues per source, "
              "and yours then finds most labels in the request cache.")
    run = wait_run(port, run_id, timeout)
    if run["state"] != "success":
        raise SystemExit(f"run {run_id} {run['state']}: see {st['url']}/dags/{DAG_ID} and {home()}/logs")
    summary(port, run)


def evaluate(snapshot_uri: str | None, timeout: float) -> dict[str, Any]:
    """Trigger dialinsight_evaluate on a snapshot (default: the one latest.json points at), show its
    progress, print its before -> after table. Unpausing it also lets every later snapshot trigger it."""
    st = load_state()
    if not st:
        raise SystemExit("Airflow is not running: make demo (or make start) first")
    port, token = st["port"], login(st["port"])
    wait_for_dag(port, token, dag_id=EVAL_DAG_ID)
    api(port, "PATCH", f"/api/v2/dags/{EVAL_DAG_ID}", {"is_paused": False}, token=token)
    run = api(port, "POST", f"/api/v2/dags/{EVAL_DAG_ID}/dagRuns",
              {"logical_date": None, "conf": {"snapshot_uri": snapshot_uri}}, token=token)
    run_id, quoted = run["dag_run_id"], urllib.request.quote(run["dag_run_id"], safe="")
    print(f"triggered {EVAL_DAG_ID} run {run_id}; UI: http://127.0.0.1:{port}/dags/{EVAL_DAG_ID}", flush=True)
    deadline, last, t0 = time.monotonic() + timeout, "", time.monotonic()
    while time.monotonic() < deadline:
        token = login(port)
        run = api(port, "GET", f"/api/v2/dags/{EVAL_DAG_ID}/dagRuns/{quoted}", token=token)
        tis = task_instances(port, token, run_id, EVAL_DAG_ID)
        line = ", ".join(f"{t['task_id']}{'' if t['map_index'] < 0 else '[' + str(t['map_index']) + ']'} {t['state']}"
                         for t in tis)
        if line != last:
            print(f"  [{time.strftime('%H:%M:%S')}] {run['state']}: {line}", flush=True)
            last = line
        if run["state"] in ("success", "failed"):
            break
        time.sleep(5)
    else:
        raise SystemExit(f"{EVAL_DAG_ID} run {run_id} not finished after {timeout:.0f}s")
    if run["state"] != "success":
        raise SystemExit(f"{EVAL_DAG_ID} run {run_id} failed: see http://127.0.0.1:{port}/dags/{EVAL_DAG_ID} and {home()}/logs")
    xcom = api(port, "GET", f"/api/v2/dags/{EVAL_DAG_ID}/dagRuns/{quoted}/taskInstances/report/xcomEntries/return_value",
               token=token)
    out = xcom["value"] if isinstance(xcom.get("value"), dict) else json.loads(xcom["value"])
    print(f"\n=== dialinsight evaluation: {time.monotonic() - t0:.0f} s ===\n{out['headline_md']}")
    print(f"report         : {out['asset_extra']['report']}")
    return out


def backfill(start_date: str, end_date: str, conf: dict[str, Any] | None = None, reprocess: str = "completed",
             timeout: float = 1800) -> list[dict[str, Any]]:
    """An Airflow 3 backfill of the nightly over [start_date, end_date] (the REST call the UI's Backfill
    dialog makes; CLI: ``airflow backfill create``). One run per logical date, one at a time; a date
    that already has a run is cleared and rerun (``reprocess``), so its run id, and the snapshot id
    made from it, stay the same: a second backfill of a range publishes the same snapshots and
    resends nothing (the request cache has every answer). Returns date, run id, state, snapshot id."""
    st = load_state()
    if not st:
        raise SystemExit("Airflow is not running: make start (or make prod-up)")
    port, token = st["port"], login(st["port"])
    wait_for_dag(port, token)
    unpause(port, token)
    body = {"dag_id": DAG_ID, "from_date": f"{start_date}T00:00:00Z", "to_date": f"{end_date}T23:59:59Z",
            "reprocess_behavior": reprocess, "max_active_runs": 1, "dag_run_conf": conf or {}}
    bf = api(port, "POST", "/api/v2/backfills", body, token=token)
    print(f"backfill {bf['id']} of {DAG_ID}: {start_date} .. {end_date} (reprocess: {reprocess})", flush=True)
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        token = login(port)
        runs = [r for r in api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100", token=token)["dag_runs"]
                if r.get("logical_date") and start_date <= r["logical_date"][:10] <= end_date]
        line = ", ".join(f"{r['logical_date'][:10]} {r['state']}" for r in sorted(runs, key=lambda r: r["logical_date"]))
        if line != last:
            print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)
            last = line
        done = api(port, "GET", f"/api/v2/backfills/{bf['id']}", token=token).get("completed_at")
        if done and runs and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    else:
        raise SystemExit(f"backfill {bf['id']} not finished after {timeout:.0f}s")
    out = []
    for r in sorted(runs, key=lambda r: r["logical_date"]):
        snapshot = None
        if r["state"] == "success":
            quoted = urllib.request.quote(r["dag_run_id"], safe="")
            xcom = api(port, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/publish/xcomEntries/"
                       "return_value", token=token)
            value = xcom["value"] if isinstance(xcom.get("value"), dict) else json.loads(xcom["value"])
            snapshot = value["asset_extra"]["snapshot_id"]
        out.append({"ds": r["logical_date"][:10], "run_id": r["dag_run_id"], "state": r["state"], "snapshot_id": snapshot})
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("start")
    sub.add_parser("stop")
    sub.add_parser("status")
    d = sub.add_parser("demo")
    d.add_argument("--max-dialogues", type=int, default=int(os.environ.get("DEMO_MAX_DIALOGUES", "12")))
    d.add_argument("--timeout", type=float, default=1200)
    e = sub.add_parser("evaluate", help="trigger dialinsight_evaluate and print its before -> after table")
    e.add_argument("--snapshot-uri", default=None, help="default: the snapshot latest.json points at")
    e.add_argument("--timeout", type=float, default=3600)
    b = sub.add_parser("backfill", help="backfill the nightly over a date range (idempotent per logical date)")
    b.add_argument("start_date", help="YYYY-MM-DD")
    b.add_argument("end_date", help="YYYY-MM-DD")
    b.add_argument("--conf", default="{}", help="run conf (the Trigger form's Params) as JSON")
    b.add_argument("--reprocess", default="completed", choices=["none", "failed", "completed"])
    args = parser.parse_args()
    if args.cmd == "start":
        start()
    elif args.cmd == "stop":
        stop()
    elif args.cmd == "status":
        st = load_state()
        print(json.dumps({**st, "running": running(), "healthy": bool(st and healthy(st["port"]))}, indent=2))
    elif args.cmd == "evaluate":
        evaluate(args.snapshot_uri, args.timeout)
    elif args.cmd == "backfill":
        runs = backfill(args.start_date, args.end_date, json.loads(args.conf), args.reprocess)
        if any(r["state"] != "success" for r in runs):
            raise SystemExit(1)
    else:
        demo(args.max_dialogues, args.timeout)


if __name__ == "__main__":
    main()
