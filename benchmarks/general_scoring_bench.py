"""General-ability scoring: the evaluate stage's transformers path vs vLLM prompt log-probabilities.

The evaluate DAG scores each multiple-choice item with ``general.HFScorer`` (transformers, the
question run once and its key/value cache reused for the four choices). The issue suggested the
vLLM engine's prompt log-probabilities as a possibly faster path. This measures both on the same
items and model: load time, scoring time, items/s, and how often their picks agree (vLLM runs
in bf16, the HF path in fp32). On CPU only; a fine-tuned adapter would have to be merged and saved
before vLLM could load it, which this does not count.

    .venv/bin/python benchmarks/general_scoring_bench.py --items-per-set 24
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items-per-set", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from dialinsight_core.config import load_settings
    from dialinsight_core.evaluate import finetune as ft
    from dialinsight_core.evaluate import general
    from dialinsight_core.inference.vllm_engine import configure_vllm_env
    from dialinsight_core.runs.evaluate import base_model

    settings = load_settings()
    model_path = base_model(settings)
    g = settings.evaluate.general
    items = [it for name in g.sets
             for it in general.stratified(general.load_set(ROOT / g.root, name), args.items_per_set, args.seed)]

    t = time.perf_counter()
    model, tok = ft.load_base(model_path)
    model.eval()
    hf_load = time.perf_counter() - t
    t = time.perf_counter()
    hf_rows = general.score_items(items, general.HFScorer(model, tok, g.max_length))
    hf_score = time.perf_counter() - t
    del model

    configure_vllm_env(settings.engine)
    from vllm import LLM, SamplingParams

    t = time.perf_counter()
    llm = LLM(model=model_path, dtype="bfloat16", max_model_len=g.max_length + 64, enforce_eager=True,
              distributed_executor_backend="uni", enable_prefix_caching=True, seed=0, use_tqdm_on_load=False)
    vllm_load = time.perf_counter() - t

    class VllmScorer:
        """Each choice as one prompt (question + choice); the prompt log-probabilities of the choice's
        tokens, summed. The four prompts share the question, which the prefix cache computes once."""

        def loglikelihoods(self, prefix: str, continuations: list[str]) -> list[float]:
            pre = tok(prefix, add_special_tokens=False)["input_ids"]
            conts = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
            longest = max(len(c) for c in conts)
            pre = pre[-(g.max_length - longest):]
            outs = llm.generate([{"prompt_token_ids": pre + c} for c in conts],
                                SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
            lls = []
            for c, out in zip(conts, outs, strict=True):
                plp = out.prompt_logprobs
                lls.append(sum(plp[len(pre) + j][tid].logprob for j, tid in enumerate(c)))
            return lls

    t = time.perf_counter()
    v_rows = general.score_items(items, VllmScorer())
    vllm_score = time.perf_counter() - t
    agree = sum(a["pick_norm"] == b["pick_norm"] for a, b in zip(hf_rows, v_rows, strict=True)) / len(items)
    out = {"items": len(items), "hf": {"load_s": round(hf_load, 1), "score_s": round(hf_score, 1),
                                       "items_per_s": round(len(items) / hf_score, 2),
                                       "acc_norm": general.accuracy(hf_rows)["acc"]},
           "vllm": {"load_s": round(vllm_load, 1), "score_s": round(vllm_score, 1),
                    "items_per_s": round(len(items) / vllm_score, 2), "acc_norm": general.accuracy(v_rows)["acc"]},
           "pick_agreement": round(agree, 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
