"""OpenAI-compatible HTTP engine (what ``vllm serve`` exposes).

Structured output through ``response_format={"type": "json_schema", ...}``; bounded concurrency
with a thread pool; the client's own retries with backoff cover timeouts and 5xx replies. A
request that still fails becomes a ``LabelResult`` with an error code, never an exception.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from dialinsight_core.config import EngineSettings
from dialinsight_core.inference import Engine, LabelRequest, LabelResult


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, cfg: EngineSettings):
        import openai

        self.cfg = cfg
        self.model = cfg.served_model_name or cfg.model
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or "EMPTY",
            timeout=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )

    def _one(self, req: LabelRequest) -> LabelResult:
        start = time.perf_counter()
        extra = {"repetition_penalty": self.cfg.repetition_penalty}  # vLLM extension; ignored elsewhere
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=req.messages,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                max_tokens=self.cfg.max_tokens,
                seed=self.cfg.seed,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "output", "schema": req.json_schema, "strict": True}},
                extra_body=extra,
            )
            choice = resp.choices[0]
            usage = resp.usage
            return LabelResult(
                prompt_id=req.prompt_id,
                output_text=choice.message.content,
                finish_reason=choice.finish_reason,
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                latency_s=time.perf_counter() - start,
            )
        except self._openai.APITimeoutError as exc:
            code, detail = "timeout", str(exc)
        except self._openai.BadRequestError as exc:
            code = "context_too_long" if "context" in str(exc).lower() or "too long" in str(exc).lower() else "bad_request"
            detail = str(exc)
        except self._openai.APIStatusError as exc:
            code, detail = f"http_{exc.status_code}", str(exc)
        except (self._openai.APIError, ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            code, detail = "bad_response", f"{type(exc).__name__}: {exc}"
        return LabelResult(req.prompt_id, None, None, 0, 0, time.perf_counter() - start, code, detail[:500])

    def generate(self, requests: list[LabelRequest]) -> list[LabelResult]:
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        self.client.close()
