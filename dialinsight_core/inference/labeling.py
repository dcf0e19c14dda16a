"""The label stage over one shard: request cache, chunked checkpoints, prefix-aware order.

The checkpoint *is* the request cache (``cache.RequestCache``): while a shard runs, finished
results are flushed every ``labeling.checkpoint_every`` records as an immutable Parquet chunk. The
cache is content-addressed: a request's key hashes its full payload (the model's fingerprint,
messages, sampling parameters, schema), so an Airflow retry, a cleared run, a run with another
``labeling.shards`` or ``max_dialogues``, or another date's run finds the answers an earlier
attempt wrote (also one killed with ``kill -9``: it loses only the chunk in flight) and sends
only the requests without one. A changed model (new weights, even in the same folder) or
parameter never reuses a result.

Failures are records: a request that still fails after the engine's retries is quarantined with
its reason. Deterministic failures (context too long, bad request) are cached like results;
transient ones (timeouts, 5xx, unreadable replies) are not, so a retry tries them again.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import EngineSettings, Settings
from dialinsight_core.contracts import CacheStats, LabelStats
from dialinsight_core.inference.cache import RequestCache
from dialinsight_core.inference.fingerprint import model_fingerprint
from dialinsight_core.llm import (
    Engine,
    LabelRequest,
    LabelResult,
    model_name,
    parse_json,
    request_keys,
    sampling_dict,
    sampling_params_hash,
)
from dialinsight_core.storage import ObjectStore

log = logging.getLogger(__name__)
STAGE = "label"
PERSISTENT_ERRORS = frozenset({"context_too_long", "bad_request"})  # resending cannot change these

@dataclass
class LabelStageResult:
    labels: pa.Table
    quarantined: pa.Table
    stats: LabelStats


def order_requests(items: list[tuple[str, LabelRequest]], order: str, seed: int = 0) -> list[tuple[str, LabelRequest]]:
    """``prefix``: lexicographic by message contents, so prompts that share a system prompt and a
    dialogue are adjacent and reuse vLLM's prefix cache; ``shuffled``: a seeded random order."""
    if order == "prefix":
        return sorted(items, key=lambda kv: ([m["content"] for m in kv[1].messages], kv[0]))
    if order == "shuffled":
        out = list(items)
        random.Random(seed).shuffle(out)
        return out
    return list(items)


def _cache_row(key: str, res: LabelResult, model: str, engine: str) -> dict[str, Any]:
    return {"request_key": key, "prompt_id": res.prompt_id, "output_text": res.output_text,
            "finish_reason": res.finish_reason, "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens, "latency_s": res.latency_s, "error_code": res.error_code,
            "error_detail": res.error_detail, "model": model, "engine": engine, "created_at": time.time()}


class _Progress:
    """One log line every ``every_s`` seconds while requests stream in: what a person watching a
    label task (or ``make demo``) wants to know, how far it is and how long is left."""

    def __init__(self, total: int, hits: int, to_send: int, every_s: float = 15.0) -> None:
        self.total, self.hits, self.to_send, self.every_s = total, hits, to_send, every_s
        self.start = self.last = time.perf_counter()

    def tick(self, sent: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and sent < self.to_send:
            return
        self.last = now
        rate = sent / (now - self.start) if now > self.start else 0.0
        left = (self.to_send - sent) / rate if rate else 0.0
        log.info("label progress: %d/%d answered (%d from the cache), %.2f req/s, about %s left",
                 self.hits + sent, self.total, self.hits, rate, _duration(left))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class CachedEngine(Engine):
    """An engine behind the request cache: answers cached requests from the store, sends the rest
    (once per distinct payload, in ``order``) to the inner engine, and checkpoints results every
    ``checkpoint_every`` while they stream in. The inner engine may be a factory: it is called only
    if something is not cached, so a fully cached rerun loads no model and sends nothing.

    Results carry ``cache_hit``; per-call counters are in ``stats``. Without a store nothing is
    cached (ordering and de-duplication still apply)."""

    def __init__(self, inner: Engine | Callable[[], Engine], engine_cfg: EngineSettings, store: ObjectStore | None,
                 cache_prefix: str, checkpoint_every: int = 64, order: str = "input", owns_inner: bool = False,
                 model_id: str | None = None, buckets: int = 16, compact_chunks: int = 32):
        self._inner = inner
        self.owns_inner = owns_inner
        self.cfg = engine_cfg
        self.name = inner.name if isinstance(inner, Engine) else engine_cfg.kind
        self.model = inner.model if isinstance(inner, Engine) else model_name(engine_cfg)
        self.model_id = model_id or f"name:{self.model}"  # what request keys hash: the model's identity
        self.buckets = buckets
        self.compact_chunks = compact_chunks
        self.store = store
        self.cache_prefix = cache_prefix
        self.checkpoint_every = checkpoint_every
        self.order = order
        self.built: Engine | None = inner if isinstance(inner, Engine) else None
        self.stats: CacheStats | None = None

    def _engine(self) -> Engine:
        if self.built is None:
            self.built = self._inner()  # type: ignore[operator]
        return self.built

    def stream(self, requests: list[LabelRequest]) -> Iterator[tuple[int, LabelResult]]:
        sampling = sampling_dict(self.cfg)
        keys = request_keys(self.model_id, requests, sampling)
        cache = RequestCache(self.store, self.cache_prefix, self.buckets, self.compact_chunks) \
            if self.store is not None else None
        cached = cache.lookup(keys) if cache else {}
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        stats: CacheStats = {"requests": len(requests), "cache_hits": 0, "requests_sent": 0, "request_attempts": 0,
                             "checkpoint_chunks_written": 0, "engine_seconds": 0.0,
                             "cache_unreadable_chunks": len(cache.unreadable) if cache else 0,
                             "cache_prefix": cache.prefix if cache else None, "order": self.order,
                             "cache_files_read": cache.files_read if cache else 0}
        self.stats = stats
        for key, idxs in by_key.items():
            if key in cached:
                c = cached[key]
                for i in idxs:
                    stats["cache_hits"] += 1
                    yield i, LabelResult(requests[i].prompt_id, c["output_text"], c["finish_reason"], c["prompt_tokens"],
                                         c["completion_tokens"], c["latency_s"], c["error_code"],
                                         f"(cached) {c['error_detail']}" if c["error_code"] else None, attempts=0,
                                         cache_hit=True, model=c["model"], engine=c["engine"])
        pending = order_requests([(k, requests[idxs[0]]) for k, idxs in by_key.items() if k not in cached],
                                 self.order, self.cfg.seed)
        if not pending:
            return
        engine = self._engine()
        seen: set[str] = set()
        start = time.perf_counter()
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-checkpoint")
        flushes: list[Future[None]] = []
        buffer: list[dict[str, Any]] = []
        progress = _Progress(len(requests), stats["cache_hits"], len(pending))
        try:
            for idx, res in engine.stream([req for _, req in pending]):
                key = pending[idx][0]
                if key in seen:
                    raise AssertionError(f"engine returned two results for request {res.prompt_id}")
                seen.add(key)
                stats["requests_sent"] += 1
                progress.tick(stats["requests_sent"])
                stats["request_attempts"] += res.attempts
                if cache is not None and (res.error_code is None or res.error_code in PERSISTENT_ERRORS):
                    buffer.append(_cache_row(key, res, engine.model, engine.name))
                    if len(buffer) >= self.checkpoint_every:
                        flushes.append(writer.submit(cache.flush, buffer))  # off the engine loop
                        buffer = []
                for i in by_key[key]:
                    yield i, replace(res, prompt_id=requests[i].prompt_id, model=engine.model, engine=engine.name)
            if cache is not None:
                flushes.append(writer.submit(cache.flush, buffer))
            for f in flushes:
                f.result()  # a failed checkpoint write fails the task (the retry resumes)
            if cache is not None:
                cache.maybe_compact()
        finally:
            writer.shutdown(wait=True)
            stats["engine_seconds"] = round(time.perf_counter() - start, 3)
            stats["checkpoint_chunks_written"] = cache.chunks_written if cache else 0
        missing = [req.prompt_id for key, req in pending if key not in seen]
        if missing:
            raise AssertionError(f"engine returned no result for {len(missing)} requests, e.g. {missing[:3]}")

    def close(self) -> None:
        """Closes the inner engine only if this wrapper owns it (``owns_inner``)."""
        if not self.owns_inner:
            return
        if not isinstance(self._inner, Engine) and hasattr(self._inner, "close"):
            self._inner.close()  # a LazyEngine: closes what it built, if anything
        elif self.built is not None:
            self.built.close()
        self.built = None


def label_prompts(prompts: pa.Table, engine: Engine | Callable[[], Engine], output_schemas: dict[str, dict[str, Any]],
                  settings: Settings, store: ObjectStore | None = None) -> LabelStageResult:
    """Label a prompts table through the request cache (``labeling.cache`` and a ``store``).
    ``engine`` may be a factory (e.g. ``LazyEngine``), called only when some request is not
    cached; the caller closes it."""
    cfg = settings.labeling
    rows = prompts.to_pylist()
    requests = [LabelRequest(r["prompt_id"], json.loads(r["messages"]), output_schemas[r["output_schema_id"]])
                for r in rows]
    cached_engine = CachedEngine(engine, settings.engine, store if cfg.cache else None, cfg.cache_prefix,
                                 cfg.checkpoint_every, cfg.order, model_id=model_fingerprint(settings),
                                 buckets=cfg.cache_buckets, compact_chunks=cfg.cache_compact_chunks)
    results = cached_engine.generate(requests)
    sp_hash = sampling_params_hash(settings.engine)
    fingerprint = model_fingerprint(settings)
    labels: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    for row, res in zip(rows, results, strict=True):
        if res.error_code:
            record = {k: row[k] for k in ("prompt_id", "dialogue_id", "instruction_id", "task_family")}
            quarantine.append(schemas.quarantine_row(row["prompt_id"], record, STAGE, res.error_code,
                                                     res.error_detail or ""))
            continue
        labels.append({
            "prompt_id": row["prompt_id"],
            "output_text": res.output_text,
            "output_json": parse_json(res.output_text),
            "model": res.model or cached_engine.model,
            "engine": res.engine or cached_engine.name,
            "sampling_params_hash": sp_hash,
            "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens,
            "finish_reason": res.finish_reason,
            "latency_s": res.latency_s,
            "cache_hit": res.cache_hit,
            "model_fingerprint": fingerprint,
        })
    fresh_ok = [r for r in results if not r.cache_hit and not r.error_code]
    cache_stats = cached_engine.stats
    assert cache_stats is not None  # set by generate()
    stats: LabelStats = {
        "prompts_in": len(rows),
        "labeled": len(labels),
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(Counter(q["reason_code"] for q in quarantine)),
        "prompt_tokens": sum(r["prompt_tokens"] for r in labels),
        "completion_tokens": sum(r["completion_tokens"] for r in labels),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in labels)),
        "cache_hits": cache_stats["cache_hits"],
        "requests_sent": cache_stats["requests_sent"],
        "request_attempts": cache_stats["request_attempts"],
        "checkpoint_chunks_written": cache_stats["checkpoint_chunks_written"],
        "engine_seconds": cache_stats["engine_seconds"],
        "cache_unreadable_chunks": cache_stats["cache_unreadable_chunks"],
        "cache_prefix": cache_stats["cache_prefix"],
        "cache_files_read": cache_stats["cache_files_read"],
        "order": cache_stats["order"],
        "fresh_prompt_tokens": sum(r.prompt_tokens for r in fresh_ok),
        "fresh_completion_tokens": sum(r.completion_tokens for r in fresh_ok),
    }
    if stats["prompts_in"] != len(labels) + len(quarantine):
        raise AssertionError(f"label stage lost records: {stats}")
    return LabelStageResult(schemas.table(schemas.LABELS, labels), schemas.table(schemas.QUARANTINED, quarantine), stats)
