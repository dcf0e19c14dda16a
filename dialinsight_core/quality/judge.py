"""LLM judge of the quality cascade (docs/quality.md): the expensive layer, used sparingly.

Only records the cheaper layers leave in doubt (they pass every row threshold but their
pre-judge score lies in a configured band) and a seeded random audit sample are judged, never
more than ``quality.judge.max_share`` of the batch. The judge goes through the same engine
interface as labeling, with a JSON schema as structured output, so its reply parses on vLLM; a
reply that still fails (server error, truncated, malformed, out-of-range or hostile) marks the
record ``judge_status = failed:<reason>`` and leaves its cheaper scores in charge.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from jinja2 import Environment

from dialinsight_core.config import JUDGE_DIMENSIONS, Settings
from dialinsight_core.llm import Engine, LabelRequest, LabelResult
from dialinsight_core.templating import template_env
from dialinsight_core.text import prompt_lang, stable_int

__all__ = ["JUDGE_SCHEMA", "JudgeItem", "JudgeVerdict", "build_request", "judge_records", "parse_verdict",
           "select_for_judge"]

RUBRIC = tuple(d.removeprefix("judge_") for d in JUDGE_DIMENSIONS)  # faithfulness, completeness, ...
RATIONALE_MAX = 300
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "minLength": 1, "maxLength": RATIONALE_MAX},
        **{k: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for k in RUBRIC},
    },
    "required": ["rationale", *RUBRIC],
    "additionalProperties": False,
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class JudgeItem:
    prompt_id: str
    lang: str
    dialogue: str
    instruction: str
    answer: str


@dataclass(frozen=True)
class JudgeVerdict:
    status: str  # "ok" or "failed:<reason>"
    scores: dict[str, float] | None  # judge_<rubric> -> [0, 1] ((score - 1) / 4)
    rationale: str | None
    tokens: int


def _audit_draw(seed: int, ds: str, prompt_id: str) -> float:
    return stable_int(seed, "judge-audit", ds, prompt_id) / float(1 << 63)


def no_selection(cap: int = 0) -> tuple[dict[str, str], dict[str, int]]:
    """The selection when the judge sees nothing (disabled, or no room under the cap)."""
    return {}, {"cap": cap, "audit": 0, "borderline_candidates": 0, "borderline": 0, "skipped_by_cap": 0}


def summary_rows(records: list[dict[str, Any]] | pa.Table) -> Iterator[tuple[str, float, bool, float]]:
    """(prompt_id, cheap_score, passes, margin) of each record: from dicts, or from the score
    stage's columnar summary (``summary_table``), 65,536 rows at a time."""
    if isinstance(records, pa.Table):
        for batch in records.to_batches(max_chunksize=65_536):
            cols = batch.to_pydict()
            yield from zip(cols["prompt_id"], cols["cheap_score"], cols["passes"], cols["margin"], strict=True)
    else:
        for r in records:
            yield r["prompt_id"], r["cheap_score"], r["passes"], r.get("margin", 1.0)


def summary_table(rows: list[dict[str, Any]]) -> pa.Table:
    """What the judge's selection needs of a part's records, in about 40 bytes a record (a list of
    dicts costs ten times that, for every record of the run)."""
    return pa.table({"prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
                     "cheap_score": pa.array([r["cheap_score"] for r in rows], pa.float64()),
                     "passes": pa.array([r["passes"] for r in rows], pa.bool_()),
                     "margin": pa.array([r.get("margin", 1.0) for r in rows], pa.float64())})


def select_for_judge(records: list[dict[str, Any]] | pa.Table, settings: Settings,
                     ds: str = "") -> tuple[dict[str, str], dict[str, int]]:
    """Which records the judge sees and why: {prompt_id: "audit" | "borderline"}, plus counts.

    ``records`` carry ``prompt_id``, ``cheap_score``, ``passes`` (every row threshold met) and
    ``margin`` (how far the closest graded dimension is above its threshold); a list of dicts or
    a ``summary_table``. The audit sample is drawn first, seeded by the logical date ``ds`` and
    the prompt id: a rerun of a date judges the same records (and finds their verdicts in the
    request cache), another night audits others; borderline records closest to a threshold fill
    the rest of the cap. Two passes, each keeping at most ``cap`` records (``heapq.nsmallest``):
    the run's records are never expanded into Python objects all at once.
    """
    cfg = settings.quality.judge
    n = records.num_rows if isinstance(records, pa.Table) else len(records)
    cap = int(cfg.max_share * n)
    if not cfg.enabled or cap == 0:
        return no_selection(cap)

    def in_band(cheap: float, passes: bool, margin: float) -> bool:
        return passes and (cfg.band_low <= cheap <= cfg.band_high or margin < cfg.doubt_margin)

    draws = ((_audit_draw(settings.seed, ds, pid), pid, in_band(cheap, passes, margin))
             for pid, cheap, passes, margin in summary_rows(records))
    audited = heapq.nsmallest(cap, (d for d in draws if d[0] < cfg.audit_fraction))
    chosen = dict.fromkeys((pid for _, pid, _ in audited), "audit")
    n_band = 0

    def band_rows() -> Iterator[tuple[float, float, str]]:
        nonlocal n_band
        for pid, cheap, passes, margin in summary_rows(records):
            if in_band(cheap, passes, margin):
                n_band += 1
                yield margin, cheap, pid

    # the cap closest to the line: at most len(chosen) of them are audited, so room are left
    closest = heapq.nsmallest(cap, band_rows())
    candidates = n_band - sum(1 for _, _, b in audited if b)  # an audited record is not a candidate
    room = cap - len(chosen)
    for _, _, pid in [c for c in closest if c[2] not in chosen][:room]:
        chosen[pid] = "borderline"
    counts = {"cap": cap, "audit": len(audited), "borderline_candidates": candidates,
              "borderline": min(room, candidates), "skipped_by_cap": max(candidates - room, 0)}
    return chosen, counts


def build_request(item: JudgeItem, settings: Settings, env: Environment | None = None) -> LabelRequest:
    cfg = settings.quality.judge
    env = env or template_env()
    lang = prompt_lang(item.lang)
    user = env.get_template("judge_user.j2").render(
        lang=lang, dialogue=item.dialogue[: cfg.max_dialogue_chars], instruction=item.instruction,
        answer=item.answer[: cfg.max_answer_chars])
    messages = [{"role": "system", "content": env.get_template("judge_system.j2").render(lang=lang)},
                {"role": "user", "content": user}]
    return LabelRequest(item.prompt_id, messages, JUDGE_SCHEMA)


def parse_verdict(result: LabelResult) -> JudgeVerdict:
    """Validate a judge reply; anything but four integer scores in 1..5 is a failure, not a guess."""
    tokens = int(result.prompt_tokens or 0) + int(result.completion_tokens or 0)

    def failed(reason: str) -> JudgeVerdict:
        return JudgeVerdict(f"failed:{reason}", None, None, tokens)

    if result.error_code:
        return failed(result.error_code)
    if result.finish_reason == "length":
        return failed("truncated")
    try:
        data = json.loads(result.output_text or "")
    except (json.JSONDecodeError, ValueError):
        return failed("unparseable")
    if not isinstance(data, dict):
        return failed("not_an_object")
    scores: dict[str, float] = {}
    for key in RUBRIC:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            return failed(f"missing_or_non_integer_{key}")
        if not 1 <= v <= 5:
            return failed(f"out_of_range_{key}")
        scores[f"judge_{key}"] = (v - 1) / 4
    rationale = data.get("rationale")
    rationale = _CONTROL.sub(" ", rationale).strip()[:RATIONALE_MAX] if isinstance(rationale, str) else None
    return JudgeVerdict("ok", scores, rationale or None, tokens)


def judge_records(items: list[JudgeItem], engine: Engine, settings: Settings) -> dict[str, JudgeVerdict]:
    """One rubric call per item through the engine; a verdict for every item, failures included."""
    if not items:
        return {}
    env = template_env()
    results = engine.generate([build_request(i, settings, env) for i in items])
    if len(results) != len(items):
        raise AssertionError(f"judge engine returned {len(results)} results for {len(items)} requests")
    return {i.prompt_id: parse_verdict(r) for i, r in zip(items, results, strict=True)}
