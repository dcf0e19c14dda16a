"""Does the scheduler keep up with 256 label shards? One nightly through the real Airflow 3
scheduler (LocalExecutor, ``scripts/local_airflow.py``) with ``labeling.shards`` set to 256.

The engine is the test suite's OpenAI-compatible server in its own process (answers at once), so
each label task's own work is small and what shows is Airflow's: creating 256 mapped task
instances, queueing them, starting a task process for each, and handing over to ``score`` once the
last one succeeded. The corpus is the bundled sample (334 dialogues, two to three prompts per
shard). The batch floors of the gate are set to zero: a scheduling run makes no quality claim, and
the gate still runs.

Printed: the run's wall time; the label stage's span (first label start to last label end); each
label task's wait from scheduled to start and its own run time (median, p95, max); the **hand-over**
(last label end to score start, the issue's measure); and how much of the span the executor's
slots were busy (sum of label run times / (span x parallelism)).

    .venv/bin/python benchmarks/shards_bench.py [--shards 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _t(s: str | None) -> float | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(tis: list[dict[str, Any]], parallelism: int) -> dict[str, Any]:
    labels = [t for t in tis if t["task_id"] == "label"]
    score = next(t for t in tis if t["task_id"] == "score")
    starts = [_t(t["start_date"]) for t in labels]
    ends = [_t(t["end_date"]) for t in labels]
    runs = [e - s for s, e in zip(starts, ends, strict=True)]
    waits = [_t(t["start_date"]) - _t(t["scheduled_when"]) for t in labels if t.get("scheduled_when")]
    span = max(ends) - min(starts)
    first = min(_t(t["start_date"]) for t in tis if t["start_date"])
    last = max(_t(t["end_date"]) for t in tis if t["end_date"])
    return {
        "label_tasks": len(labels), "states": sorted({str(t["state"]) for t in tis}),
        "run_wall_s": round(last - first, 1), "label_span_s": round(span, 1),
        "label_run_s": {"median": round(statistics.median(runs), 2), "p95": round(_pct(runs, 0.95), 2),
                        "max": round(max(runs), 2)},
        "label_wait_s": {"median": round(statistics.median(waits), 2), "p95": round(_pct(waits, 0.95), 2),
                         "max": round(max(waits), 2)} if waits else None,
        "handover_s": round(_t(score["start_date"]) - max(ends), 2),
        "slots_busy": round(sum(runs) / (span * parallelism), 3) if span else None,
        "labels_per_min": round(len(labels) / span * 60, 1) if span else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=3000)
    args = ap.parse_args()
    from benchmarks.nightly_bench import openai_server

    work = Path(tempfile.mkdtemp(prefix="shards-bench-"))
    with openai_server({**os.environ, "PYTHONPATH": str(ROOT)}) as base_url:
        try:
            print(json.dumps(run(work, base_url, args.shards, args.timeout), indent=1))
        finally:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, base_url: str, shards: int, timeout: float) -> dict[str, Any]:
    """One nightly on a fresh local deployment whose label shards are ``shards``, measured."""
    os.environ.update({
        "DIALINSIGHT_AIRFLOW_HOME": str(work / "airflow"), "DIALINSIGHT_UI_PORT": "0",
        "DIALINSIGHT__STORAGE__URI": f"file://{work / 'store'}", "DIALINSIGHT__ENGINE__KIND": "openai",
        "DIALINSIGHT__ENGINE__BASE_URL": base_url, "DIALINSIGHT__LABELING__SHARDS": str(shards),
        "DIALINSIGHT__AIRFLOW__RETRIES": "0", "DIALINSIGHT__QUALITY__JUDGE__ENABLED": "false",
        "DIALINSIGHT__INGEST__MAX_DIALOGUES": "0",  # all 334 (the local deployment reads 24 unless told)
        "DIALINSIGHT__GATES__MIN_ACCEPT_RATE": "0.0", "DIALINSIGHT__GATES__MIN_ROWS": "0",
        "DIALINSIGHT__GATES__MIN_MEAN_OVERALL": "0.0", "DIALINSIGHT__GATES__MIN_MEAN": "{}",
    })
    spec = importlib.util.spec_from_file_location("local_airflow", ROOT / "scripts" / "local_airflow.py")
    la = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(la)
    try:
        port = la.start()["port"]
        token = la.login(port)
        la.wait_for_dag(port, token, timeout=180)
        # unpausing starts the latest nightly slot (catch-up): that scheduled run is the one measured
        la.unpause(port, token)
        deadline = time.monotonic() + 300
        while not (runs := la.api(port, "GET", f"/api/v2/dags/{la.DAG_ID}/dagRuns", token=token)["dag_runs"]):
            if time.monotonic() > deadline:
                raise SystemExit("no run started after unpausing")
            time.sleep(2)
        run_id = runs[0]["dag_run_id"]
        dag_run = la.wait_run(port, run_id, timeout)
        tis = la.task_instances(port, la.login(port), run_id)
        parallelism = int(la.airflow_env(port)["AIRFLOW__CORE__PARALLELISM"])
        return {"shards": shards, "run_id": run_id, "state": dag_run["state"],
                "parallelism": parallelism, "cores": os.cpu_count(), **measure(tis, parallelism)}
    finally:
        la.stop(quiet=True)


if __name__ == "__main__":
    main()
