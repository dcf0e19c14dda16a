"""Label-stage benchmark: the stage (request cache, checkpoints, ordering) vs plain ``vllm.LLM.chat``.

One in-process vLLM engine is loaded once (load time reported, never counted in a pass); every
pass labels the same prompts (built from the bundled sample exactly as the nightly run builds
them) with the same ``SamplingParams`` and structured-output schemas. vLLM's prefix cache is
reset before each pass, so no pass profits from an earlier one.

Passes:
  plain      ``LLM.chat`` on all prompts, in build order (the reference)
  stage      ``label_prompts`` in ``prefix`` order, writing checkpoints to a fresh file store
  shuffled   the same stage in a seeded random order (what prefix-aware ordering is measured against)
  rerun      the stage again over the ``stage`` store: every request is a cache hit, no engine call
  server     (with ``--openai-url``) the stage with the async HTTP engine against a running
             ``vllm serve`` of the same model (kind=openai, ``--concurrency`` requests in flight)

    .venv/bin/python benchmarks/label_bench.py [--dialogues 48] [--max-tokens 128] [--repeats 1]

Prints a Markdown table (docs/benchmarks.md keeps the results, with the machine they ran on).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogues", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model", default=None, help="model folder (default: engine.model of the config)")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--openai-url", default=None, help="also run the stage against this vllm serve /v1 URL")
    ap.add_argument("--openai-model", default="smollm2-135m-instruct", help="the server's --served-model-name")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    from dialinsight_core.config import load_settings
    from dialinsight_core.inference import label_prompts
    from dialinsight_core.inference.vllm_engine import VLLMEngine
    from dialinsight_core.ingest import ingest
    from dialinsight_core.instructions import load_library, load_output_schemas
    from dialinsight_core.prompts import build_prompts
    from dialinsight_core.storage import open_store

    base = load_settings()
    engine_cfg = base.engine.model_copy(update={"max_tokens": args.max_tokens, "kind": "vllm",
                                                **({"model": args.model} if args.model else {})})
    settings = base.model_copy(update={"engine": engine_cfg})
    ing = ingest(settings, max_dialogues=args.dialogues)
    schemas = load_output_schemas(settings)
    prompts = build_prompts(ing.dialogues, ing.turns, load_library(settings), schemas, settings, "2026-11-26").prompts
    rows = prompts.to_pylist()
    messages = [json.loads(r["messages"]) for r in rows]
    n = len(rows)

    t0 = time.perf_counter()
    engine = VLLMEngine(engine_cfg, str(settings.resolve_path(engine_cfg.model)))
    load_s = time.perf_counter() - t0
    params = [engine._params(schemas[r["output_schema_id"]]) for r in rows]
    engine.llm.chat(messages[:8], params[:8], use_tqdm=False)  # warm-up (first-call compilation)

    def plain() -> tuple[float, int, int]:
        engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        outs = engine.llm.chat(messages, params, use_tqdm=False)
        wall = time.perf_counter() - start
        return wall, sum(len(o.outputs[0].token_ids) for o in outs), sum(len(o.prompt_token_ids) for o in outs)

    def stage(order: str, store_dir: str, factory=None) -> tuple[float, int, int, dict]:
        s = settings.model_copy(update={"labeling": settings.labeling.model_copy(update={"order": order})})
        engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        res = label_prompts(prompts, factory or engine, schemas, s, open_store(f"file://{store_dir}"))
        wall = time.perf_counter() - start
        return wall, res.stats["fresh_completion_tokens"], res.stats["fresh_prompt_tokens"], res.stats

    def refuse():
        raise AssertionError("the rerun needed the engine: a request was not cached")

    runs: dict[str, list[tuple[float, int, int]]] = {"plain": [], "stage": [], "shuffled": [], "rerun": []}
    hits = None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            runs["plain"].append(plain())
            w, c, p, _st = stage("prefix", d1)
            runs["stage"].append((w, c, p))
            w, c, p, _st = stage("shuffled", d2)
            runs["shuffled"].append((w, c, p))
            w, _c, _p, st = stage("prefix", d1, refuse)
            runs["rerun"].append((w, 0, 0))
            hits = st["cache_hits"]

    if args.openai_url:  # the HTTP engine against a separate server process (fresh store, one pass)
        from dialinsight_core.inference.openai_engine import OpenAIEngine

        http_cfg = engine_cfg.model_copy(update={"kind": "openai", "base_url": args.openai_url,
                                                 "served_model_name": args.openai_model,
                                                 "max_concurrency": args.concurrency})
        s_http = settings.model_copy(update={"engine": http_cfg})
        with tempfile.TemporaryDirectory() as d3:
            start = time.perf_counter()
            res = label_prompts(prompts, OpenAIEngine(http_cfg), schemas, s_http, open_store(f"file://{d3}"))
            runs["server"] = [(time.perf_counter() - start, res.stats["fresh_completion_tokens"],
                               res.stats["fresh_prompt_tokens"])]
            print(f"server pass: {res.stats['labeled']} labeled, {res.stats['quarantined']} quarantined "
                  f"{res.stats['quarantined_by_reason']}")

    med = {k: statistics.median(x[0] for x in v) for k, v in runs.items()}
    toks = {k: statistics.median(x[1] for x in v) for k, v in runs.items()}
    ptoks = {k: statistics.median(x[2] for x in v) for k, v in runs.items()}
    import torch
    import vllm

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"  # the card is part of every figure
    print(f"\nmachine: {platform.processor() or platform.machine()}, {card}, vllm {vllm.__version__}, model "
          f"{Path(engine_cfg.model).name}, {n} prompts from {args.dialogues} dialogues, max_tokens {args.max_tokens}, "
          f"engine load {load_s:.1f} s (not counted), repeats {args.repeats} (median), "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GiB\n")
    print("| pass | wall | records/s | output tok/s | prompt tok | vs plain (records/s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, label in (("plain", "plain `LLM.chat` (build order)"), ("stage", "label stage, prefix order"),
                     ("shuffled", "label stage, shuffled order"), ("rerun", f"label stage rerun ({hits} cache hits)"),
                     ("server", f"label stage via `vllm serve` (HTTP engine, {args.concurrency} in flight)")):
        if k not in med:
            continue
        rate = n / med[k]
        tok = f"{toks[k] / med[k]:,.0f}" if toks[k] else "-"
        print(f"| {label} | {med[k]:.2f} s | {rate:,.1f} | {tok} | {ptoks[k]:,.0f} | {med['plain'] / med[k]:.2f}x |")
    print(f"\nprefix-aware vs shuffled: {med['shuffled'] / med['stage']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": n, "card": card, "load_s": load_s, "runs": runs, "median": med}, indent=2))
    engine.close()


if __name__ == "__main__":
    main()
