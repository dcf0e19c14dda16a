"""Rule layer (and first-depth grounding) of the quality cascade (DESIGN.md section 1.8): free checks on every record.

Each dimension is a score in [0, 1] (1 = good) computed from the label, its prompt's task
family and the source dialogue. Tokenisation treats every CJK ideograph as a token, so the
checks work for Chinese without whitespace assumptions.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from jsonschema import Draft202012Validator

from dialinsight_core import schemas
from dialinsight_core.config import DIMENSIONS

__all__ = ["DIMENSIONS", "score_labels", "score_record"]
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@cache
def stopwords() -> frozenset[str]:
    text = (Path(__file__).with_name("stopwords.txt")).read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() if not line.startswith("#") for w in line.split())


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def content_text(output_text: str | None, output_json: str | None) -> str:
    """The prose of an answer: every string (and number) value of its JSON, else the raw text."""
    if output_json:
        parts: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, str):
                parts.append(v)
            elif isinstance(v, bool) or v is None:
                return
            elif isinstance(v, int | float):
                parts.append(str(v))
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, dict):
                for x in v.values():
                    walk(x)

        walk(json.loads(output_json))
        return "\n".join(parts)
    return output_text or ""


def score_schema_valid(output_json: str | None, schema: dict[str, Any]) -> float:
    if output_json is None:
        return 0.0
    return 1.0 if Draft202012Validator(schema).is_valid(json.loads(output_json)) else 0.0


def score_non_empty(content: str) -> float:
    return 1.0 if any(ch.isalnum() for ch in content) else 0.0


def score_not_truncated(finish_reason: str | None) -> float:
    return 0.0 if finish_reason == "length" else 1.0


def score_length(content: str, min_chars: int, max_chars: int) -> float:
    n = len(content.strip())
    if n < min_chars:
        return n / min_chars if min_chars else 1.0
    if n > max_chars:
        return max_chars / n
    return 1.0


def score_lang_match(content: str, dialogue_lang: str) -> float:
    from dialinsight_core.ingest import detect_lang

    lang = detect_lang(content)
    if lang == "und" or dialogue_lang == "und":
        return 0.5
    return 1.0 if lang == dialogue_lang else 0.0


def score_repetition(content: str, n: int = 3) -> float:
    """Share of distinct n-grams: 1.0 for varied text, near 0 for a loop."""
    grams = ngrams(tokens(content), n)
    if len(grams) < 2:
        return 1.0
    return len(set(grams)) / len(grams)


def score_copy(content: str, dialogue_text: str, n: int) -> float:
    """1 - share of the answer's long n-grams copied verbatim from the dialogue.

    n-grams are taken inside each line (one line per JSON value), so short quoted values in an
    extraction answer do not count, while a pasted stretch of dialogue does.
    """
    grams = [g for line in content.splitlines() for g in ngrams(tokens(line), n)]
    if not grams:
        return 1.0
    source = set(ngrams(tokens(dialogue_text), n))
    copied = sum(1 for g in grams if g in source)
    return 1.0 - copied / len(grams)


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _fact_units(text: str) -> set[str]:
    """Content units: English content words (stemmed crudely) and CJK character bigrams."""
    units: set[str] = set()
    stop = stopwords()
    for tok in tokens(text):
        if _CJK.fullmatch(tok) or tok.isdigit() or len(tok) < 3 or tok in stop:
            continue
        units.add(tok[:6])  # crude stem: "apartments" ~ "apartment"
    for run in _CJK_RUN.findall(text):  # bigrams inside runs of ideographs, never across a number
        units.update(b for b in (run[i : i + 2] for i in range(len(run) - 1)) if b not in stop)
    return units


def score_grounding(content: str, dialogue_text: str, prompt_text: str) -> float:
    """First-depth grounding: numbers must occur in the dialogue; content words in the prompt.

    Mean of (share of the answer's numbers found in the dialogue) and (share of its content
    words / CJK bigrams found in the prompt). Catches invented prices, times and topics.
    """
    nums = _numbers(content)
    num_support = len(nums & _numbers(dialogue_text)) / len(nums) if nums else 1.0
    units = _fact_units(content)
    lex_support = len(units & _fact_units(prompt_text)) / len(units) if units else 1.0
    return round((num_support + lex_support) / 2, 6)


@dataclass(frozen=True)
class RuleContext:
    task_family: str
    dialogue_lang: str
    dialogue_text: str
    prompt_text: str
    schema: dict[str, Any]
    min_chars: int
    max_chars: int


def score_record(label: dict[str, Any], ctx: RuleContext, shingle_size: int) -> dict[str, float]:
    content = content_text(label["output_text"], label["output_json"])
    return {
        "schema_valid": score_schema_valid(label["output_json"], ctx.schema),
        "non_empty": score_non_empty(content),
        "not_truncated": score_not_truncated(label["finish_reason"]),
        "length_ok": score_length(content, ctx.min_chars, ctx.max_chars),
        "lang_match": score_lang_match(content, ctx.dialogue_lang),
        "repetition": score_repetition(content),
        "copy": score_copy(content, ctx.dialogue_text, shingle_size),
        "grounding": score_grounding(content, ctx.dialogue_text, ctx.prompt_text),
    }


def overall(dims: dict[str, float], weights: dict[str, float]) -> float:
    total = sum(weights.values())
    return round(sum(dims[d] * w for d, w in weights.items()) / total, 6)


def score_labels(labels: pa.Table, prompts: pa.Table, turns: pa.Table, output_schemas: dict[str, dict[str, Any]],
                 settings: Any) -> pa.Table:
    """labels (+ prompt context) -> ``scored`` table with one column per dimension."""
    q = settings.quality
    prompt_by_id = {p["prompt_id"]: p for p in prompts.to_pylist()}
    text_by_dialogue: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for t in turns.select(["dialogue_id", "turn_idx", "text"]).to_pylist():
        text_by_dialogue[t["dialogue_id"]].append((t["turn_idx"], t["text"]))
    dialogue_text = {d: "\n".join(x for _, x in sorted(v)) for d, v in text_by_dialogue.items()}
    rows = []
    for label in labels.to_pylist():
        p = prompt_by_id[label["prompt_id"]]
        fam = settings.task_families[p["task_family"]]
        prompt_text = "\n".join(m["content"] for m in json.loads(p["messages"]) if m["role"] == "user")
        ctx = RuleContext(p["task_family"], p["lang"], dialogue_text.get(p["dialogue_id"], ""), prompt_text,
                          output_schemas[p["output_schema_id"]], fam.min_chars, fam.max_chars)
        dims = score_record(label, ctx, q.shingle_size)
        row = {c: p[c] for c in schemas.PROMPT_CONTEXT_COLUMNS}
        row.update(label)
        row.update({f"q_{d}": v for d, v in dims.items()})
        row["overall_score"] = overall(dims, q.weights)
        row["judge_rationale"] = None
        row["layers_run"] = "rules"
        rows.append(row)
    return schemas.table(schemas.SCORED, rows)
