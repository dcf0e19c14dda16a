"""Runs the in-process vLLM engine (real CPU build) in its own process and prints JSON facts.

Used by tests/integration/test_vllm_engine.py: streaming order, a refused (too long) request as a
record, structured output, and the request cache over a real engine (a rerun sends nothing).
"""

from __future__ import annotations

import json
import sys
import tempfile

from dialinsight_core.config import load_settings
from dialinsight_core.inference import CachedEngine, LabelRequest
from dialinsight_core.inference.vllm_engine import VLLMEngine
from dialinsight_core.storage import open_store

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 200}}, "required": ["summary"]}


def main() -> None:
    s = load_settings()
    cfg = s.engine.model_copy(update={"max_tokens": 48})
    engine = VLLMEngine(cfg, str(s.resolve_path(cfg.model)))
    dialogue = ("Dialogue:\nCustomer: I need a two bedroom flat with a balcony, budget 1500 a month.\n"
                "Agent: We have one on Elm Street for 1450, with a balcony and an elevator.\n")
    reqs = [LabelRequest(f"p{i}", [{"role": "system", "content": "Answer in JSON."},
                                   {"role": "user", "content": dialogue + f"Instruction: summarise point {i}"}], SCHEMA)
            for i in range(4)]
    reqs.append(LabelRequest("too_long", [{"role": "user", "content": "flat " * 4000}], SCHEMA))
    streamed = [(i, r.prompt_id, r.error_code, r.finish_reason, r.output_text, r.completion_tokens)
                for i, r in engine.stream(reqs)]
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"file://{d}")
        first = CachedEngine(engine, cfg, store, "cache/label", checkpoint_every=2, order="prefix")
        out1 = first.generate(reqs)
        again = CachedEngine(lambda: sys.exit("engine needed on a cached rerun"), cfg, store, "cache/label")
        out2 = again.generate(reqs)
    json.dump({"streamed": streamed, "first_stats": first.stats, "again_stats": again.stats,
               "same": [a.output_text == b.output_text for a, b in zip(out1, out2, strict=True)],
               "hits": [b.cache_hit for b in out2]}, sys.stdout)


if __name__ == "__main__":
    main()
