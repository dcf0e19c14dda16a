"""Domain skill: a model's answers to held-out prompts, scored two ways.

- **The platform's own cascade** (rules, grounding, coverage; not the judge, whose cost is an
  LLM's): the cheap score and the share that would pass the row gate's thresholds. The run layer
  applies it (``runs.evaluate.score_domain`` over ``quality.scoring.cheap_dimensions``).
- **Against the reference**, the labeling model's accepted answer: per top-level field of the
  reference JSON, exact match for numbers, booleans and short values, token F1 for text and lists
  (words in English, characters in Chinese); the record's score is the mean over the reference's
  fields. Extraction fields are mostly short values (field accuracy); summaries are text (overlap).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"[\u3400-\u9fff]|[A-Za-z0-9]+")
SHORT = 24  # a string up to this many characters is a value (exact match), longer is text (token F1)


def _toks(value: Any) -> list[str]:
    if isinstance(value, list):
        return [t for v in value for t in _toks(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _toks(v)]
    return [t.lower() for t in _WORD.findall(str(value))]


def token_f1(pred: Any, ref: Any) -> float:
    p, r = _toks(pred), _toks(ref)
    if not p or not r:
        return float(p == r)
    common: dict[str, int] = {}
    for t in r:
        common[t] = common.get(t, 0) + 1
    hit = 0
    for t in p:
        if common.get(t, 0) > 0:
            common[t] -= 1
            hit += 1
    if hit == 0:
        return 0.0
    prec, rec = hit / len(p), hit / len(r)
    return 2 * prec * rec / (prec + rec)


def field_score(pred: Any, ref: Any) -> float:
    if isinstance(ref, bool) or isinstance(ref, (int, float)) or ref is None:
        return float(pred == ref)
    if isinstance(ref, str) and len(ref) <= SHORT:
        return float(" ".join(_toks(pred)) == " ".join(_toks(ref)))
    return token_f1(pred, ref)


def reference_score(output_json: str | None, reference_json: str | None) -> float | None:
    """Mean field score of an answer against the reference (None when the reference is not a JSON object)."""
    try:
        ref = json.loads(reference_json) if reference_json else None
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not ref:
        return None
    try:
        pred = json.loads(output_json) if output_json else {}
    except ValueError:
        pred = {}
    if not isinstance(pred, dict):
        pred = {}
    return round(sum(field_score(pred.get(k), v) for k, v in ref.items()) / len(ref), 4)


def parse_json(text: str) -> str | None:
    """The answer's JSON object re-serialised, or None (a fenced block or the first ``{…}`` span counts)."""
    s = text.strip()
    m = re.search(r"```(?:json)?\s*(.*?)```", s, re.S)
    if m:
        s = m.group(1).strip()
    for candidate in (s, s[s.find("{"): s.rfind("}") + 1] if "{" in s else ""):
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return json.dumps(obj, ensure_ascii=False)
    return None


def generate(model: Any, tokenizer: Any, chats: Sequence[list[dict[str, str]]], max_new_tokens: int,
             batch_size: int = 4, repetition_penalty: float = 1.0) -> list[tuple[str, str]]:
    """Greedy answers (text, finish reason ``stop`` or ``length``) to chats that end before the answer
    (the labeling engine's repetition penalty, so before and after decode alike)."""
    import torch

    out: list[tuple[str, str]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(chats), batch_size):
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in chats[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     repetition_penalty=repetition_penalty)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                ids = row.tolist()
                stopped = tokenizer.eos_token_id in ids
                if stopped:
                    ids = ids[:ids.index(tokenizer.eos_token_id)]
                ids = [t for t in ids if t != tokenizer.pad_token_id]
                out.append((tokenizer.decode(ids, skip_special_tokens=True), "stop" if stopped else "length"))
    finally:
        tokenizer.padding_side = side
    return out


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over the records (and per task family): the domain score is the mean cheap score."""
    def one(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        refs = [r["reference_score"] for r in rs if r["reference_score"] is not None]
        n = len(rs)
        return {"n": n,
                "domain_score": round(sum(r["cheap_score"] for r in rs) / n, 4) if n else None,
                "pass_rate": round(sum(r["passes"] for r in rs) / n, 4) if n else None,
                "json_valid_rate": round(sum(r["json_valid"] for r in rs) / n, 4) if n else None,
                "reference_score": round(sum(refs) / len(refs), 4) if refs else None}
    fams = sorted({r["task_family"] for r in rows})
    return {**one(rows), "by_task_family": {f: one([r for r in rows if r["task_family"] == f]) for f in fams}}
