"""The production topology on this machine, for real, without Docker (docs/operations.md).

    python scripts/prod_stack.py up        # PostgreSQL, Redis, S3 server, Airflow (CeleryExecutor, 2 workers)
    python scripts/prod_stack.py nightly   # trigger dialinsight_nightly, wait, say where each task ran
    python scripts/prod_stack.py backfill 2026-11-20 2026-11-21   # an Airflow backfill, one run per date
    python scripts/prod_stack.py down      # stop every process it started, remove the Postgres cluster

What runs, each in its own process group, on free loopback ports:
- PostgreSQL 15 (the machine image's) as the metadata DB: a private cluster in a temporary folder
  (``initdb`` + ``pg_ctl``, as the ``postgres`` user when run as root), ``postgresql+psycopg://``;
- Redis (Debian's ``redis-server``, installed by ``make prod-deps``) as the Celery broker;
- an S3-protocol server (moto with atomic conditional writes, ``scripts/s3_server.py``; no MinIO
  binary exists for this machine, STACK.md) with a bucket; the platform reaches it through the
  Airflow connection ``aws_default`` (key, secret and ``endpoint_url`` extra), never through
  AWS_* variables of the components;
- Airflow 3: api-server, scheduler, dag-processor, triggerer, and two Celery workers: ``default``
  and ``gpu``. Label tasks are routed to ``gpu`` (``DIALINSIGHT__AIRFLOW__LABEL_QUEUE=gpu``), as in
  docker-compose.yml.
Everything lives under ``var/prod-stack`` (or ``$DIALINSIGHT_AIRFLOW_HOME``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DIALINSIGHT_AIRFLOW_HOME", str(ROOT / "var" / "prod-stack"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import local_airflow as la  # noqa: E402 - the shared start/stop/REST helpers of the local deployment

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BUCKET = "dialinsight"
S3_KEY, S3_SECRET = "stack-access-key", "stack-secret-key"  # the S3 server's credentials: only in the connection
WORKERS = {"worker-default": "default", "worker-gpu": "gpu"}


def _pg_file() -> Path:
    return la.home() / "run" / "postgres.json"


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres() -> dict[str, Any]:
    port = la.free_port(0)
    # outside AIRFLOW_HOME: a pytest tmp folder is not readable by the postgres user
    base = Path(tempfile.mkdtemp(prefix="dialinsight-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data = base / "data"
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "airflow", "-A", "trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, stdout=subprocess.DEVNULL)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-o", opts,
                                 "-w", "start"]), check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"], check=True)
    pg = {"port": port, "base": str(base), "data": str(data)}
    _pg_file().parent.mkdir(parents=True, exist_ok=True)
    _pg_file().write_text(json.dumps(pg))
    return pg


def stop_postgres() -> None:
    try:
        pg = json.loads(_pg_file().read_text())
    except (OSError, json.JSONDecodeError):
        return
    if Path(pg["data"]).exists():
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", pg["data"], "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(pg["base"], ignore_errors=True)
    _pg_file().unlink()


def _wait_http(url: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def up(timeout: float = 240) -> dict[str, Any]:
    redis = shutil.which("redis-server")
    if not redis:
        raise SystemExit("redis-server is not installed: run `make prod-deps` (Debian's redis-server package)")
    down(quiet=True)
    pg = start_postgres()
    redis_port, s3_port = la.free_port(0), la.free_port(0)
    s3_url = f"http://127.0.0.1:{s3_port}"
    db = f"postgresql+psycopg://airflow@127.0.0.1:{pg['port']}/airflow"
    env: dict[str, str | None] = {
        "AIRFLOW__CORE__EXECUTOR": "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",  # > the longest task (task_timeout_s)
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": S3_KEY, "password": S3_SECRET,
                                                "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"}}),
        "DIALINSIGHT__STORAGE__URI": f"s3://{BUCKET}/dialinsight",
        "DIALINSIGHT__STORAGE__S3_ENDPOINT_URL": None,
        "DIALINSIGHT__AIRFLOW__LABEL_QUEUE": "gpu",
        # the object store's credentials come from the connection only
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_ENDPOINT_URL": None,
        "AWS_PROFILE": None,
    }
    extra: list[tuple[str, list[str], dict[str, str]]] = [
        ("redis", [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(la.home())], {}),
        ("s3", [sys.executable, str(Path(__file__).with_name("s3_server.py")), "-H", "127.0.0.1", "-p", str(s3_port)],
         {}),
    ]
    for name, queue in WORKERS.items():
        extra.append((name, [la.airflow_bin(), "celery", "worker", "--queues", queue, "--celery-hostname",
                             f"{queue}@dialinsight", "--concurrency", "1" if queue == "gpu" else "2"],
                      {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(la.free_port(0)),
                       # task instances record which worker ran them (plugins/dialinsight_airflow/hostnames.py)
                       "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dialinsight_airflow.hostnames.worker_hostname",
                       "DIALINSIGHT_WORKER_NAME": f"{name}.{socket.gethostname()}"}))
    try:
        st = la.start(timeout, extra_env=env, extra=tuple(extra))
    except BaseException:
        stop_postgres()  # la.start stopped what it started
        raise
    _wait_http(s3_url)
    import boto3  # lazy: only the bucket bootstrap needs it

    boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id=S3_KEY,
                 aws_secret_access_key=S3_SECRET).create_bucket(Bucket=BUCKET)
    _wait_workers(timeout=120)
    st.update({"postgres_port": pg["port"], "redis_port": redis_port, "s3_url": s3_url, "bucket": BUCKET,
               "workers": {f"{name}.{socket.gethostname()}": q for name, q in WORKERS.items()}})
    la.state_file().write_text(json.dumps(st))
    print(json.dumps({k: st[k] for k in ("url", "postgres_port", "redis_port", "s3_url", "bucket", "workers")}))
    return st


def _wait_workers(timeout: float) -> None:
    """Both Celery workers have connected to the broker (their log says 'ready')."""
    logs = la.home() / "logs" / "components"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all("ready." in (logs / f"{w}.log").read_text(errors="replace") for w in WORKERS):
            return
        time.sleep(1)
    raise SystemExit(f"Celery workers not ready after {timeout:.0f}s; see {logs}/worker-*.log")


def nightly(conf: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Trigger the nightly, wait, and report where each task ran (worker hostname and queue)."""
    st = la.load_state()
    port = st["port"]
    token = la.login(port)
    la.wait_for_dag(port, token)
    run_id = la.trigger(port, token, conf)
    run = la.wait_run(port, run_id, timeout)
    placed = [{"task_id": t["task_id"], "map_index": t["map_index"], "state": t["state"], "queue": t["queue"],
               "hostname": t["hostname"]} for t in la.task_instances(port, la.login(port), run_id)]
    out = {"run_id": run_id, "state": run["state"], "tasks": placed}
    print(json.dumps(out, indent=1))
    return out


def down(quiet: bool = False) -> None:
    la.stop(quiet=quiet)
    stop_postgres()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    n = sub.add_parser("nightly")
    n.add_argument("--max-dialogues", type=int, default=6)
    n.add_argument("--engine-base-url", default=None, help="an OpenAI-compatible server; default: the config's engine")
    n.add_argument("--timeout", type=float, default=900)
    b = sub.add_parser("backfill", help="backfill the nightly over a date range (idempotent per logical date)")
    b.add_argument("start_date")
    b.add_argument("end_date")
    b.add_argument("--conf", default="{}", help="run conf as JSON")
    sub.add_parser("down")
    args = ap.parse_args()
    if args.cmd == "up":
        up()
    elif args.cmd == "nightly":
        conf: dict[str, Any] = {"max_dialogues": args.max_dialogues, "promote": True}
        if args.engine_base_url:
            conf.update(engine="openai", engine_base_url=args.engine_base_url)
        if nightly(conf, args.timeout)["state"] != "success":
            raise SystemExit(1)
    elif args.cmd == "backfill":
        if any(r["state"] != "success" for r in la.backfill(args.start_date, args.end_date, json.loads(args.conf))):
            raise SystemExit(1)
    else:
        down()


if __name__ == "__main__":
    main()
