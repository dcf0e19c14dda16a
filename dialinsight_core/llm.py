"""The LLM boundary (bottom layer): request and result records and the one engine interface.

Every stage that asks an LLM (labeling, the judge, the scene classifier, seed and evolution
requests) speaks these types; the implementations (in-process vLLM, an OpenAI-compatible server)
and the request cache live in the ``inference`` stage, and the run layer decides which one a
stage gets (docs/architecture.md). OpenAI chat messages are the seam.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dialinsight_core.config import EngineSettings


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


def request_keys(model: str, requests: list[LabelRequest], sampling: dict[str, Any]) -> list[str]:
    """``request_key`` of each request, the same hex digests: the payload's JSON is hashed in its
    parts (keys sorted: messages, model, sampling, schema), and the model, the sampling and each
    schema object are serialised once per call instead of once per request."""
    def dumps(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=False)

    middle = f', "model": {dumps(model)}, "sampling": {dumps(sampling)}, "schema": '.encode()
    schemas: dict[int, bytes] = {}  # by id: the requests (and so their schemas) live through the call
    out: list[str] = []
    for req in requests:
        tail = schemas.get(id(req.json_schema))
        if tail is None:
            tail = schemas[id(req.json_schema)] = f"{dumps(req.json_schema)}}}".encode()
        h = hashlib.sha256(b'{"messages": ')
        h.update(dumps(req.messages).encode())
        h.update(middle)
        h.update(tail)
        out.append(h.hexdigest())
    return out


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


def parse_json(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True)
    except (json.JSONDecodeError, ValueError):
        return None
