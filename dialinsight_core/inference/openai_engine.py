"""OpenAI-compatible HTTP engine (what ``vllm serve`` exposes), async with bounded concurrency.

Structured output through ``response_format={"type": "json_schema", ...}``. At most
``engine.max_concurrency`` requests are in flight, so the server's continuous batching stays
fed without being flooded. Each request has ``engine.timeout_s``; timeouts, connection errors,
429, 5xx and unreadable replies are retried up to ``engine.max_retries`` times with exponential
backoff and full jitter (``Retry-After`` is honoured). A request that still fails becomes a
``LabelResult`` with an error code, never an exception. Results stream out as they finish, so
the label stage can checkpoint while the rest are in flight.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dialinsight_core.config import EngineSettings
from dialinsight_core.llm import Engine, LabelRequest, LabelResult

_DONE = object()
RETRYABLE_STATUS = {408, 409, 429}


@dataclass(frozen=True)
class _Failure:
    code: str
    detail: str
    retryable: bool
    retry_after: float | None = None


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, cfg: EngineSettings):
        import openai

        self.cfg = cfg
        self.model = cfg.served_model_name or cfg.model
        self._openai = openai
        self._api_key = os.environ.get(cfg.api_key_env) or "EMPTY"

    def _classify(self, exc: Exception) -> _Failure:
        o = self._openai
        text = str(exc)
        if isinstance(exc, o.APITimeoutError):
            return _Failure("timeout", text, True)
        if isinstance(exc, o.APIConnectionError):
            return _Failure("connection_error", text, True)
        if isinstance(exc, o.BadRequestError):
            low = text.lower()
            code = "context_too_long" if "context" in low or "too long" in low or "maximum" in low else "bad_request"
            return _Failure(code, text, False)
        if isinstance(exc, o.APIStatusError):
            status = exc.status_code
            return _Failure(f"http_{status}", text, status >= 500 or status in RETRYABLE_STATUS, _retry_after(exc))
        # a 200 whose body is not a chat completion (truncated JSON, missing choices, HTML...)
        return _Failure("bad_response", f"{type(exc).__name__}: {text}", True)

    async def _once(self, client: Any, req: LabelRequest) -> tuple[Any, Any, Any]:
        resp = await client.chat.completions.create(
            model=self.model,
            messages=req.messages,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            max_tokens=self.cfg.max_tokens,
            seed=self.cfg.seed,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "output", "schema": req.json_schema, "strict": True}},
            extra_body={"repetition_penalty": self.cfg.repetition_penalty},  # vLLM extension; ignored elsewhere
        )
        choice = resp.choices[0]
        content = choice.message.content
        if content is not None and not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}")
        return choice, content, resp.usage

    async def _one(self, client: Any, req: LabelRequest) -> LabelResult:
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                choice, content, usage = await self._once(client, req)
                return LabelResult(
                    prompt_id=req.prompt_id,
                    output_text=content,
                    finish_reason=choice.finish_reason,
                    prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                    completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                    latency_s=time.perf_counter() - start,
                    attempts=attempt,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is classified into a record
                fail = self._classify(exc)
            if not fail.retryable or attempt > self.cfg.max_retries:
                return LabelResult(req.prompt_id, None, None, 0, 0, time.perf_counter() - start, fail.code,
                                   f"after {attempt} attempt(s): {fail.detail}"[:500], attempts=attempt)
            cap = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (attempt - 1))
            wait = random.uniform(0, cap)
            if fail.retry_after is not None:
                wait = min(max(wait, fail.retry_after), self.cfg.backoff_max_s)
            await asyncio.sleep(wait)

    async def _run(self, requests: list[LabelRequest], out: queue.Queue[Any], stop: threading.Event) -> None:
        client = self._openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._api_key,
                                          timeout=self.cfg.timeout_s, max_retries=0)
        sem = asyncio.Semaphore(self.cfg.max_concurrency)

        async def worker(i: int, req: LabelRequest) -> None:
            async with sem:
                if stop.is_set():
                    return
                out.put((i, await self._one(client, req)))

        try:
            await asyncio.gather(*(worker(i, r) for i, r in enumerate(requests)))
        finally:
            await client.close()

    def stream(self, requests: list[LabelRequest]) -> Iterator[tuple[int, LabelResult]]:
        if not requests:
            return
        out: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()

        def runner() -> None:
            try:
                asyncio.run(self._run(requests, out, stop))
            except BaseException as exc:  # handed to the consumer thread
                out.put(exc)
            finally:
                out.put(_DONE)

        thread = threading.Thread(target=runner, name="openai-engine", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # the consumer stopped early: send nothing more
            thread.join()
