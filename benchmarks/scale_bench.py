"""Scale benchmark: each nightly stage in its own process over a synthetic corpus of N dialogues.

For every N it generates the corpus (``synth_corpus``), then runs ingest, build_prompts, label
(a stand-in engine that answers instantly, so what is measured is the stage's own work: request
keys, cache lookups, checkpoint chunks), score (rules + grounding, no judge), gate (GX row +
batch suites) and publish (snapshot + exports), each in a fresh Python process, as Airflow runs
them. Per stage it prints records/s, wall time, peak RSS (the process's ``ru_maxrss``) and the
*pyarrow floor*: reading the stage's input files and writing its output tables with pyarrow alone,
the least any implementation must pay for the same bytes.

    .venv/bin/python benchmarks/scale_bench.py --sizes 10000 100000 [--stages ingest build_prompts]

Results go to ``build/scale/results.json`` and print as a Markdown table (docs/benchmarks.md).
A gate that blocks the run is recorded (``batch_gate_failed``); publish then refuses, as a
nightly would, unless ``--publish-blocked`` asks to measure it on the gate's records anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("ingest", "build_prompts", "label", "score", "gate", "publish")
DS = "2026-12-01"
RUN_ID = "scale_bench"


def settings_yaml(work: Path, corpus: Path, n: int) -> Path:
    """The embedded config, pointed at the corpus and a fresh local object store; judge off."""
    import yaml

    from benchmarks.synth_corpus import source_config

    cfg = yaml.safe_load((ROOT / "config" / "dialinsight.yaml").read_text())
    cfg["storage"]["uri"] = f"file://{work / 'store'}"
    cfg["sources"] = [source_config("synth", corpus)]
    cfg["quality"]["judge"]["enabled"] = False
    # label shards grow with the corpus as a deployment would set them (2,500 dialogues each, at most 256)
    cfg["labeling"]["shards"] = min(256, max(2, n // 2500))
    path = work / "dialinsight.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


class StandIn:
    """An engine that answers at once from answers prepared before the clock starts ("stored
    answers"): schema-valid JSON built from the prompt by the test suite's fake OpenAI server, 10 %
    of them repetition loops (rejected by the rules). What the label stage then costs is its own
    work: request keys, cache lookups, checkpoint chunks, output tables. Answers are prepared one
    shard at a time, just before that shard runs (off the clock), so the process holds one shard's
    answers, as a label task of a deployment holds one shard's requests."""

    def __new__(cls, schemas: dict[str, Any]) -> Any:
        from dialinsight_core.llm import Engine, LabelResult
        from tests.support.fake_openai import answer, planted

        plan = planted(0.1)

        class _StandIn(Engine):
            name, model = "stand-in", "stand-in"

            def __init__(self) -> None:
                self.answers: dict[str, tuple[str, str]] = {}

            def prepare(self, table: Any) -> None:
                self.answers = {}
                for pid, messages, schema_id in zip(table.column("prompt_id").to_pylist(),
                                                    table.column("messages").to_pylist(),
                                                    table.column("output_schema_id").to_pylist(), strict=True):
                    body = {"messages": json.loads(messages),
                            "response_format": {"json_schema": {"schema": schemas[schema_id]}}}
                    self.answers[pid] = answer(body, plan(body))

            def generate(self, requests: list[Any]) -> list[LabelResult]:
                return [LabelResult(r.prompt_id, *self.answers[r.prompt_id], 0, 0, 0.0) for r in requests]

        return _StandIn()


class WorkerPeak:
    """The largest peak RSS (``VmHWM``) of this process's worker processes, read every 0.5 s while
    they live. Not ``RUSAGE_CHILDREN``: a spawned child's ``ru_maxrss`` includes the parent's RSS
    at the moment it forked to exec the new interpreter, so workers started late in a stage read
    as large as their parent was then (measured: a 1 GiB parent's pool of 2 reads 1,038 MiB)."""

    def __init__(self) -> None:
        import threading

        self.peak_kib, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.wait(0.5):
            for child in me.children(recursive=True):
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def stop(self) -> float:
        """MiB."""
        self._done.set()
        self._thread.join()
        return round(self.peak_kib / 1024, 1)


def run_stage(stage: str, work: Path, publish_blocked: bool = False) -> dict[str, Any]:
    """One stage, in this process, reading the earlier stages' outputs (``outs/<stage>.json``)."""
    from dialinsight_core.config import load_settings
    from dialinsight_core.errors import BatchGateFailed
    from dialinsight_core.runs import nightly

    settings = load_settings(work / "dialinsight.yaml")
    ctx = nightly.RunContext(settings, DS, RUN_ID, {})
    outs = {p.stem: json.loads(p.read_text()) for p in (work / "outs").glob("*.json")}
    engine = None
    if stage == "label":  # the stand-in's answers are made before the clock starts
        from dialinsight_core import schemas
        from dialinsight_core.instructions import load_output_schemas

        engine = StandIn(load_output_schemas(settings))
        shutil.rmtree(work / "store" / "cache", ignore_errors=True)  # every request is new: the first night's cost
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = WorkerPeak()
    start = time.perf_counter()
    off_clock = 0.0  # the stand-in's answers for each label shard, made before that shard's clock starts
    if stage == "ingest":
        out = nightly.run_ingest(ctx)
        n_in, n_out = out["stats"]["files_read"], out["stats"]["dialogues_kept"]
    elif stage == "build_prompts":
        out = nightly.run_build_prompts(ctx, outs["ingest"])
        n_in, n_out = out["stats"]["dialogues_in"], out["stats"]["prompts"]
    elif stage == "label":
        labels, shard_s = [], []
        for shard in outs["build_prompts"]["shards"]:
            t0 = time.perf_counter()
            engine.prepare(ctx.store.read_table(shard["key"], schemas.PROMPTS))
            t1 = time.perf_counter()
            off_clock += t1 - t0
            labels.append(nightly.run_label_shard(ctx, shard, engine))
            shard_s.append(round(time.perf_counter() - t1, 3))  # on the clock: does a later shard cost more?
        engine.answers = {}
        out = {"labels": labels, "shard_seconds": shard_s}
        n_in = sum(o["stats"]["prompts_in"] for o in labels)
        n_out = sum(o["stats"]["labeled"] for o in labels)
    elif stage == "score":
        out = nightly.run_score(ctx, outs["ingest"], outs["build_prompts"], outs["label"]["labels"])
        n_in, n_out = out["stats"]["labels_in"], out["stats"]["scored"]
    elif stage == "gate":
        try:
            out = nightly.run_gate(ctx, outs["score"], outs["ingest"])
        except BatchGateFailed as exc:  # the gate's whole work is done; the nightly stops here, the bench records it
            out = {**(exc.written or {}), "batch_gate_failed": exc.failures}
        n_in, n_out = out["stats"]["scored_in"], out["stats"]["accepted"] + out["stats"]["rejected"]
    elif stage == "publish":
        if outs["gate"].get("batch_gate_failed") and not publish_blocked:
            raise SystemExit("the batch gate failed on this run, so a nightly publishes nothing: "
                             f"{outs['gate']['batch_gate_failed']}. --publish-blocked measures publish on the gate's "
                             "records anyway")
        out = nightly.run_publish(ctx, outs["ingest"], outs["build_prompts"], outs["label"]["labels"], outs["score"],
                                  outs["gate"])
        c = out["asset_extra"]["counts"]
        n_in = n_out = c["accepted"] + c["rejected"] + c["quarantined"]
    else:
        raise ValueError(stage)
    wall = time.perf_counter() - start - off_clock
    worker_peak = workers.stop()
    (work / "outs").mkdir(exist_ok=True)
    (work / "outs" / f"{stage}.json").write_text(json.dumps(out, default=str))
    return {"stage": stage, "records_in": n_in, "records_out": n_out, "wall_s": round(wall, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            # the largest worker process's peak (ingest, score and publish spawn workers for large runs)
            "worker_peak_rss_mib": worker_peak,
            "rss_before_mib": round(rss0 / 1024, 1), "off_clock_s": round(off_clock, 3),
            "work": str(ctx.store.url(ctx.key(""))), **_by_quarter(out.get("shard_seconds")),
            # a gate that blocked the run, and a publish measured on such a gate's records
            **({"batch_gate_failed": out["batch_gate_failed"]} if "batch_gate_failed" in out else {}),
            **({"gate_blocked": True} if stage == "publish" and outs["gate"].get("batch_gate_failed") else {})}


def _by_quarter(seconds: list[float] | None) -> dict[str, Any]:
    """Mean on-clock seconds of a label shard in each quarter of the night, first to last."""
    if not seconds or len(seconds) < 4:
        return {}
    q = len(seconds) // 4
    parts = [seconds[i * q:(i + 1) * q if i < 3 else len(seconds)] for i in range(4)]
    return {"shard_s_by_quarter": [round(sum(p) / len(p), 3) for p in parts]}


def stage_files(stage: str, work: Path) -> tuple[list[Path], list[Path]]:
    """(inputs, outputs) of a stage: the files the pyarrow floor reads and rewrites."""
    store = work / "store"
    run = next(store.glob(f"work/ds={DS}/run={RUN_ID}*"), None)
    assert run is not None, f"no work folder under {store}"
    inputs = {
        "ingest": sorted((work / "corpus").glob("part-*.jsonl")),
        "build_prompts": [run / "ingest" / "dialogues.parquet", run / "ingest" / "turns.parquet"],
        "label": sorted((run / "prompts" / "shards").glob("*.parquet")),
        "score": [*sorted(run.glob("label/*/labels.parquet")), run / "prompts" / "prompts.parquet",
                  run / "ingest" / "turns.parquet", run / "prompts" / "instructions.parquet"],
        "gate": [run / "score" / "scored.parquet"],
        "publish": [run / "gate" / "accepted.parquet", run / "gate" / "rejected.parquet",
                    run / "prompts" / "prompts.parquet", run / "ingest" / "dialogues.parquet"],
    }[stage]
    folder = {"build_prompts": "prompts", "label": "label"}.get(stage, stage)
    if stage == "publish":
        snap = next(store.glob(f"snapshots/ds={DS}/*"))
        outs = sorted(p for p in snap.rglob("*.parquet"))
    else:
        outs = sorted((run / folder).rglob("*.parquet"))
    return inputs, outs


def floor(stage: str, work: Path) -> dict[str, Any]:
    """Read the stage's inputs and write its outputs with pyarrow alone (single process)."""
    import pyarrow.dataset  # noqa: F401 - pq.read_table's first call imports it (~2 s): not the floor's cost
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    inputs, outputs = stage_files(stage, work)
    start = time.perf_counter()
    for p in inputs:
        if p.suffix == ".jsonl":
            pj.read_json(p, read_options=pj.ReadOptions(block_size=1 << 24))
        else:
            pq.read_table(p)
    read_s = time.perf_counter() - start
    tables = [pq.read_table(p) for p in outputs]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, t in enumerate(tables):
            pq.write_table(t, f"{tmp}/{i}.parquet")
    write_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in inputs) + sum(p.stat().st_size for p in outputs)
    return {"floor_s": round(read_s + write_s, 3), "floor_read_s": round(read_s, 3), "floor_write_s": round(write_s, 3),
            "bytes": size}


def child(stage: str, work: Path, publish_blocked: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra = ["--publish-blocked"] if publish_blocked else []
    proc = subprocess.run([sys.executable, __file__, "--child", stage, "--work", str(work), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(n: int, stages: list[str], root: Path, zh_share: float, publish_blocked: bool = False) -> list[dict[str, Any]]:
    from benchmarks.synth_corpus import CorpusSpec, generate

    work = root / f"n{n}"
    meta = generate(CorpusSpec(n=n, zh_share=zh_share), root / f"corpus-{n}")
    if stages[0] == "ingest":
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "corpus").unlink(missing_ok=True)
    (work / "corpus").symlink_to((root / f"corpus-{n}").resolve())
    settings_yaml(work, work / "corpus", n)
    rows = []
    for stage in stages:
        row = {"n": n, "corpus_turns": meta["turns"], **child(stage, work, publish_blocked)}
        row.update(child("floor:" + stage, work))
        row["records_per_s"] = round(row["records_in"] / row["wall_s"], 1) if row["wall_s"] else None
        row["vs_floor"] = round(row["wall_s"] / row["floor_s"], 1) if row["floor_s"] else None
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


DAG_PARSE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"seconds": round(time.perf_counter() - t, 3), "errors": len(bag.import_errors), "dags": len(bag.dags)}))
"""


def dag_parse() -> dict[str, Any]:
    """Seconds to parse each DAG file, each in a fresh interpreter that has already imported Airflow
    (what the DAG processor's parsing process pays for the file; the best of three)."""
    out = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        runs = []
        for _ in range(3):
            env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                   "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
            proc = subprocess.run([sys.executable, "-c", DAG_PARSE, str(path)], capture_output=True, text=True, cwd=ROOT,
                                  env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out[path.name] = min(runs, key=lambda r: r["seconds"])
    return out


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| N dialogues | stage | records in → out | wall | records/s | peak RSS (main / largest worker) | pyarrow floor "
           "| × floor |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        workers = f" / {r['worker_peak_rss_mib']:,.0f}" if r.get("worker_peak_rss_mib") else ""
        out.append(f"| {r['n']:,} | {r['stage']} | {r['records_in']:,} → {r['records_out']:,} | {r['wall_s']:.1f} s | "
                   f"{r['records_per_s']:,.0f} | {r['peak_rss_mib']:,.0f}{workers} MiB | {r['floor_s']:.2f} s | "
                   f"{r['vs_floor']:,}× |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--root", type=Path, default=ROOT / "build" / "scale")
    ap.add_argument("--zh-share", type=float, default=0.5)
    ap.add_argument("--dag-parse", action="store_true", help="only time the parse of each DAG file")
    ap.add_argument("--publish-blocked", action="store_true",
                    help="run publish even when the batch gate failed (a nightly would stop at the gate): "
                         "measures publish's cost on the gate's records; the row says gate_blocked")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        stage = a.child
        res = floor(stage.split(":", 1)[1], a.work) if stage.startswith("floor:") else \
            run_stage(stage, a.work, a.publish_blocked)
        print(json.dumps(res))
        return
    if a.dag_parse:
        print(json.dumps(dag_parse(), indent=1))
        return
    rows = []
    for n in a.sizes:
        rows += bench(n, a.stages, a.root, a.zh_share, a.publish_blocked)
    a.root.mkdir(parents=True, exist_ok=True)
    (a.root / "results.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
