"""Stage 1 (seeds) and stage 2 (controlled evolution) of the instruction library, with elimination.

Both stages ask an LLM through the engine interface with structured JSON output. Operators are
data (``config/instructions/operators.yaml``), not code. Every candidate either survives as a
``proposed`` instruction for human review or is *eliminated with a reason*: nothing is dropped
silently, and the yield per operator and round is what a curator tunes operators with.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dialinsight_core.config import Settings
from dialinsight_core.dedup import LSHIndex, MinHasher, shingles
from dialinsight_core.llm import LabelRequest
from dialinsight_core.pii import find_pii
from dialinsight_core.templating import template_env
from dialinsight_core.text import prompt_lang, tokens

__all__ = ["ELIMINATION_REASONS", "Operator", "diversity", "eliminate", "evolve_request", "load_operators",
           "parse_evolved", "parse_seeds", "seed_request", "yield_report"]

ELIMINATION_REASONS = ("malformed", "too_long", "contains_pii", "unchanged", "not_answerable", "near_duplicate")
SEED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"instructions": {"type": "array", "minItems": 1, "maxItems": 20, "items": {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 10, "maxLength": 600},
                       "expected_fields": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 60}}},
        "required": ["text"], "additionalProperties": False}}},
    "required": ["instructions"], "additionalProperties": False,
}
EVOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 10, "maxLength": 600},
                   "expected_fields": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 60}}},
    "required": ["text"], "additionalProperties": False,
}
# needs knowledge outside the one dialogue the prompt will carry
_OUTSIDE = re.compile(
    r"(?i)\b(?:search|browse|look up|google)\b.{0,20}\b(?:web|internet|online)\b|\b(?:latest|current|today's)\s+market\b|"
    r"\breal[- ]time\b|\bother (?:customers|dialogues|conversations|agents)\b|\bacross (?:all|many) (?:dialogues|calls)\b|"
    r"\bpredict\b.{0,30}\bfuture\b|\bnext year\b|"
    r"上网|搜索|网上查|最新(?:市场|房价)|实时|其他(?:客户|对话|经纪人)|预测未来|明年的?房价")


_PLACEHOLDER = re.compile(r"(?i)\[\s*insert\b|<\s*(?:the )?(?:new )?instruction\s*>|\blorem ipsum\b|\bTODO\b|"
                          r"^\s*(?:the )?(?:new|original) (?:instruction|question)\b|在此(?:输入|填写)|新指令")


@dataclass(frozen=True)
class Operator:
    name: str
    kind: str
    template: str


@cache
def _operators_file(path: str) -> dict[str, Operator]:
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {name: Operator(name, spec["kind"], spec["template"]) for name, spec in doc["operators"].items()}


def load_operators(settings: Settings) -> dict[str, Operator]:
    ops = _operators_file(str(settings.resolve_path(settings.instructions.operators_path)))
    wanted = settings.instructions.operators or list(ops)
    unknown = sorted(set(wanted) - set(ops))
    if unknown:
        raise ValueError(f"instructions.operators names unknown operators {unknown}; known: {sorted(ops)}")
    return {n: ops[n] for n in wanted}


def seed_request(request_id: str, *, scene: str, role_focus: str, family: str, objective: str, dialogues: list[str],
                 n: int, lang: str, settings: Settings) -> LabelRequest:
    """Stage 1: ask for ``n`` diverse instructions for one (scene, role focus, task family) cell."""
    user = template_env().get_template("seed_instructions.j2").render(
        lang=lang, scene=scene, scene_description=settings.taxonomy.scenes[scene].description, role_focus=role_focus,
        family=family, objective=objective, dialogues=dialogues, n=n, domain=settings.domain_of(None).name[prompt_lang(lang)])
    return LabelRequest(request_id, [{"role": "user", "content": user}], SEED_SCHEMA)


def evolve_request(request_id: str, parent: dict[str, Any], op: Operator, *, dialogue_excerpt: str, guidance: str,
                   settings: Settings) -> LabelRequest:
    """Stage 2: one operator applied to one instruction (reviewer guidance from the last round included)."""
    env = template_env()
    lang = prompt_lang(parent.get("lang") or "")
    scene = parent["scene"] if parent["scene"] != "*" else settings.taxonomy.default_scene
    ask = env.from_string(op.template).render(
        lang=lang, instruction=parent["text"], family=parent["task_family"], scene=scene,
        scene_description=settings.taxonomy.scenes[scene].description, role_focus=parent["role_focus"],
        dialogue_excerpt=dialogue_excerpt, guidance=guidance)
    user = env.get_template("evolve_instruction.j2").render(lang=lang, operator_ask=ask.strip(),
                                                            instruction=parent["text"], guidance=guidance)
    return LabelRequest(request_id, [{"role": "user", "content": user}], EVOLVE_SCHEMA)


def _clean_fields(value: Any) -> list[str]:
    return [str(v).strip() for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def parse_seeds(text: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """([{text, expected_fields}], error): a reply that is not the schema's shape is an error, not a guess."""
    try:
        doc = json.loads(text or "")
    except (json.JSONDecodeError, ValueError):
        return [], "unparseable reply"
    items = doc.get("instructions") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return [], "no 'instructions' list"
    return [{"text": i.get("text"), "expected_fields": _clean_fields(i.get("expected_fields"))} if isinstance(i, dict)
            else {"text": i, "expected_fields": []} for i in items], None


def parse_evolved(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = json.loads(text or "")
    except (json.JSONDecodeError, ValueError):
        return None, "unparseable reply"
    if not isinstance(doc, dict):
        return None, "reply is not an object"
    return {"text": doc.get("text"), "expected_fields": _clean_fields(doc.get("expected_fields"))}, None


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.casefold()).strip()


def _sim(a: str, b: str, k: int = 4) -> float:
    sa, sb = shingles(a, k), shingles(b, k)
    return len(sa & sb) / len(sa | sb) if sa and sb else float(sa == sb)


def eliminate(candidates: list[dict[str, Any]], existing: list[dict[str, Any]],
              settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split candidates into survivors and eliminated ones (each with ``reason_code``/``reason_detail``).

    Candidates carry ``text``, ``task_family`` and optionally ``parent_text``. Near duplicates are
    screened with MinHash/LSH on character shingles against the existing library and earlier
    survivors, so it scales and works on Chinese.
    """
    cfg = settings.instructions
    hasher = MinHasher(k=4)
    index = LSHIndex(threshold=cfg.near_dup_threshold)
    for row in existing:
        if isinstance(row.get("text"), str):
            index.add(str(row["instruction_id"]), hasher.signature(_norm(row["text"])))
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []

    def drop(c: dict[str, Any], code: str, detail: str) -> None:
        dropped.append({**c, "status": "rejected", "reason_code": code, "reason_detail": detail})

    for c in candidates:
        text = c.get("text")
        if not isinstance(text, str) or len(text.strip()) < 10 or c.get("task_family") not in settings.task_families:
            drop(c, "malformed", f"text {type(text).__name__} of length {len(text) if isinstance(text, str) else 0}, "
                                 f"family {c.get('task_family')!r}")
            continue
        text = text.strip()
        m = _PLACEHOLDER.search(text)
        if m:
            drop(c, "malformed", f"placeholder or meta text instead of an instruction: {m.group()!r}")
            continue
        if len(text) > cfg.max_chars:
            drop(c, "too_long", f"{len(text)} chars > instructions.max_chars={cfg.max_chars}")
            continue
        pii = find_pii(text)
        if pii:
            drop(c, "contains_pii", ", ".join(sorted({p.type for p in pii})))
            continue
        parent = c.get("parent_text")
        if isinstance(parent, str):
            sim = _sim(_norm(parent), _norm(text))
            if sim >= cfg.unchanged_threshold:
                drop(c, "unchanged", f"similarity {sim:.2f} to its parent >= {cfg.unchanged_threshold}")
                continue
        m = _OUTSIDE.search(text)
        if m:
            drop(c, "not_answerable", f"needs knowledge outside the dialogue: {m.group()!r}")
            continue
        sig = hasher.signature(_norm(text))
        near = index.query(sig)
        if near:
            drop(c, "near_duplicate", f"similarity {near[0][1]:.2f} with {near[0][0]}")
            continue
        index.add(str(c["instruction_id"]), sig)
        kept.append({**c, "text": text})
    if len(kept) + len(dropped) != len(candidates):
        raise AssertionError("elimination lost candidates")
    return kept, dropped


def yield_report(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (operator, round): generated, eliminated by reason, proposed, approved, rejected by a reviewer."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("operator") or "seed", int(r.get("round") or 0)), []).append(r)
    out = []
    for (op, rnd), rs in sorted(groups.items(), key=lambda t: (t[0][1], t[0][0])):
        elim = Counter(r["reason_code"] for r in rs if r.get("reason_code"))
        approved = sum(1 for r in rs if r.get("status") == "approved")
        out.append({"operator": op, "round": rnd, "generated": len(rs), "eliminated": sum(elim.values()),
                    "eliminated_by_reason": dict(elim), "survived": len(rs) - sum(elim.values()), "approved": approved,
                    "yield": round(approved / len(rs), 4) if rs else 0.0})
    return out


def diversity(rows: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Coverage of task family x scene x role focus, and distinct-n of the texts (n = 1, 2)."""
    cells = {(r["task_family"], r["scene"], r["role_focus"]) for r in rows}
    scenes = [*settings.taxonomy.scenes, "*"]
    total_cells = len(settings.task_families) * len(scenes) * 3
    toks = [tokens(r["text"]) for r in rows]
    out: dict[str, Any] = {"instructions": len(rows), "cells_covered": len(cells), "cells_total": total_cells,
                           "families": dict(Counter(r["task_family"] for r in rows))}
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        out[f"distinct_{n}"] = round(len(set(grams)) / len(grams), 4) if grams else 0.0
    return out
