"""A whole nightly through Airflow's ``dag.test()`` over a synthetic corpus, with a stand-in engine.

What a 100,000-dialogue night costs end to end when the LLM answers at once: the real
``dialinsight_nightly`` DAG (every task, mapped label shards, callbacks, the asset event) runs in
one process under ``dag.test()`` on a fresh SQLite metadata DB, with the embedded config pointed at
the synthetic corpus (``synth_corpus``, as ``scale_bench.py`` makes it) and a local object store.
The engine is the test suite's OpenAI-compatible server in its own process (schema-valid answers,
10 % repetition loops that the rules reject); the judge is off (its cost is the LLM's).

It prints each task's wall time, the run's state and counts, and the peak RSS of the process that
ran the DAG (``ru_maxrss``) and of its largest worker process (``VmHWM``, read while it lives:
ingest, score and publish spawn workers).

    .venv/bin/python benchmarks/nightly_bench.py --dialogues 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = """
import sys
from tests.support.fake_openai import FakeOpenAIServer, planted
srv = FakeOpenAIServer(planted(0.1)).__enter__()
print(srv.base_url, flush=True)
sys.stdin.read()  # until the parent closes stdin
"""


@contextmanager
def openai_server(env: dict[str, str]) -> Iterator[str]:
    """The test suite's OpenAI-compatible server (10 % repetition loops) in its own process: its
    base URL, and the server stopped at the end."""
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def run_dag(logical: str) -> dict[str, Any]:
    """In the child: the nightly under dag.test(), and what each task took."""
    from benchmarks.scale_bench import WorkerPeak
    from tests.support.dags import load_dag

    dag = load_dag()
    workers = WorkerPeak()
    start = time.perf_counter()
    run = dag.test(logical_date=datetime.fromisoformat(logical))
    wall = time.perf_counter() - start
    worker_peak = workers.stop()
    tasks = []
    for ti in sorted(run.get_task_instances(), key=lambda t: (t.start_date or datetime.max.replace(tzinfo=UTC))):
        tasks.append({"task": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                      "seconds": round((ti.end_date - ti.start_date).total_seconds(), 2) if ti.end_date and ti.start_date
                      else None})
    return {"state": str(run.state), "wall_s": round(wall, 1), "tasks": tasks,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "worker_peak_rss_mib": round(worker_peak)}  # VmHWM of the workers (scale_bench.WorkerPeak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", type=int, default=100_000)
    ap.add_argument("--root", type=Path, default=ROOT / "build" / "scale")
    ap.add_argument("--zh-share", type=float, default=0.5)
    ap.add_argument("--logical-date", default="2026-12-01T02:00:00+00:00")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_dag(args.logical_date)))
        return

    from benchmarks.scale_bench import settings_yaml
    from benchmarks.synth_corpus import CorpusSpec, generate

    n = args.dialogues
    corpus = args.root / f"corpus-{n}"
    generate(CorpusSpec(n=n, zh_share=args.zh_share), corpus)
    work = args.root / f"nightly-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = settings_yaml(work, corpus.resolve(), n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALINSIGHT")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]), "AIRFLOW_HOME": str(work / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "DIALINSIGHT_CONFIG": str(config),
           "DIALINSIGHT__AIRFLOW__RETRIES": "0",  # dag.test() honours retries: a failure shows at once
           # dag.test() cannot run a DAG with a DeadlineAlert (as in tests/conftest.py); the scheduler can
           "DIALINSIGHT__NOTIFICATIONS__DEADLINE_HOURS": "null"})
    with openai_server(env) as base_url:
        # the label tasks keep 32 requests in flight (a GPU server's batch, not the default 8)
        env.update(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=base_url,
                   DIALINSIGHT__ENGINE__MAX_CONCURRENCY="32")
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = subprocess.run([sys.executable, __file__, "--child", "--logical-date", args.logical_date], env=env, cwd=ROOT,
                              capture_output=True, text=True)
    (work / "dag_test.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"dag.test() failed (log: {work / 'dag_test.log'}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads(max((work / "store" / "snapshots").rglob("manifest.json"), key=lambda p: p.stat().st_mtime).read_text())
    out.update(dialogues=n, counts=manifest["counts"])
    (work / "result.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    by_task: dict[str, list[float]] = {}
    for t in out["tasks"]:
        by_task.setdefault(t["task"], []).append(t["seconds"] or 0.0)
    print(f"\nnightly over {n:,} dialogues through dag.test(): {out['state']} in {out['wall_s']:,.0f} s; "
          f"peak RSS {out['peak_rss_mib']:,} MiB (workers {out['worker_peak_rss_mib']:,} MiB)")
    print("| task | instances | seconds (sum) |\n| --- | --- | --- |")
    for task, secs in by_task.items():
        print(f"| {task} | {len(secs)} | {sum(secs):,.1f} |")


if __name__ == "__main__":
    main()
