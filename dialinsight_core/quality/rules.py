"""Rule layer of the quality cascade (docs/quality.md): free checks on every record.

Each dimension is a score in [0, 1] (1 = good) computed from the label, its prompt's task
family, the instruction and the source dialogue; checks that find something also return the
evidence (the matched phrase, the leaked span), which becomes the rejection's reason detail.
Tokenisation treats every CJK ideograph as a token, so the checks work for Chinese without
whitespace assumptions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from dialinsight_core.config import RULE_DIMENSIONS
from dialinsight_core.pii import find_pii
from dialinsight_core.text import detect_lang, ngrams, tokens

__all__ = ["RULE_DIMENSIONS", "RuleContext", "content_text", "label_keys", "score_record", "tokens"]

def content_text(output_text: str | None, output_json: str | None, numbers: bool = True,
                 skip_keys: frozenset[str] = frozenset()) -> str:
    """The prose of an answer: every string (and, unless ``numbers=False``, number) value of its
    JSON, else the raw text. Grounding passes ``numbers=False``: a numeric field such as
    ``rating`` is a judgement the schema asks for, not a fact taken from the dialogue; it also
    skips ``not_mentioned`` (naming what the dialogue lacks is not a claim)."""
    if output_json:
        parts: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, str):
                parts.append(v)
            elif isinstance(v, bool) or v is None:
                return
            elif isinstance(v, int | float):
                if numbers:
                    parts.append(str(v))
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k not in skip_keys:
                        walk(x)

        walk(json.loads(output_json))
        return "\n".join(parts)
    return output_text or ""


def label_keys(schema: dict[str, Any]) -> frozenset[str]:
    """Properties the output schema marks ``"x-dialinsight-label": true``: names of things (an
    extraction's field names), not content. The language and echo checks read values only: a
    Chinese answer with English field names is Chinese, and naming the fields the instruction
    asked for is not echoing it."""
    return marked_keys(schema, "label")


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """One validator per output schema object (a run has a handful; building one per record cost
    more than validating)."""
    key = id(schema)
    hit = _VALIDATORS.get(key)
    if hit is None or hit[0] is not schema:  # the schema object itself is kept: its id is never reused
        if len(_VALIDATORS) >= 64:
            _VALIDATORS.clear()
        hit = _VALIDATORS[key] = (schema, Draft202012Validator(schema))
    return hit[1]


_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


def score_schema_valid(output_json: str | None, schema: dict[str, Any]) -> float:
    if output_json is None:
        return 0.0
    return 1.0 if _validator(schema).is_valid(json.loads(output_json)) else 0.0


def score_non_empty(content: str) -> float:
    return 1.0 if any(ch.isalnum() for ch in content) else 0.0


def marked_keys(schema: dict[str, Any], mark: str) -> frozenset[str]:
    """Properties the output schema marks ``"x-dialinsight-<mark>": true`` (``label``, ``prose``)."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in (node.get("properties") or {}).items():
                if isinstance(v, dict) and v.get(f"x-dialinsight-{mark}"):
                    out.add(k)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return frozenset(out)


# a finished sentence ends in terminal punctuation, a closing quote or bracket, or an emoji
_FINISHED = re.compile(r"[。！？!?.…~”’\"'）)」』】》\]\U0001F300-\U0001FAFF]\s*$")


def score_not_truncated(finish_reason: str | None, output_text: str | None = None, output_json: str | None = None,
                        prose_keys: frozenset[str] = frozenset()) -> tuple[float, dict[str, str] | None]:
    """0 when the answer was cut, whatever the finish reason says (a proxy or server can cut an
    answer and report ``stop``): the engine said ``length``; the output opens JSON it never
    closes; or a prose field (``"x-dialinsight-prose"`` in the output schema: a summary, a reply,
    a conclusion) stops mid-sentence."""
    if finish_reason == "length":
        return 0.0, {"cut": "finish_reason=length"}
    text = (output_text or "").strip()
    if output_json is None and text[:1] in "{[" and text and _unclosed(text):
        return 0.0, {"cut": "unfinished JSON", "tail": text[-40:]}
    if output_json and prose_keys:
        data = json.loads(output_json)
        if isinstance(data, dict):
            for k in sorted(prose_keys & set(data)):
                v = data[k]
                if isinstance(v, str) and v.strip() and not _FINISHED.search(v):
                    return 0.0, {"cut": f"{k} ends mid-sentence", "tail": v[-40:]}
    return 1.0, None


def _unclosed(text: str) -> bool:
    """True when brackets or a string opened in ``text`` are still open at its end."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_str or depth > 0


def score_length(content: str, min_chars: int, max_chars: int) -> float:
    n = len(content.strip())
    if n < min_chars:
        return n / min_chars if min_chars else 1.0
    if n > max_chars:
        return max_chars / n
    return 1.0


def score_lang_match(content: str, dialogue_lang: str) -> float:
    lang = detect_lang(content)
    if lang == "und" or dialogue_lang == "und":
        return 0.5
    return 1.0 if lang == dialogue_lang else 0.0


_CHAR_LOOP = re.compile(r"(\S)\1{11,}|(\S{2,6})\2{5,}")
# a phrase said five times in a row ("Oakland Oakland Oakland...", "客服先向客户致歉客服先向客户致歉...")
_PHRASE_LOOP = re.compile(r"(.{2,40}?)\s*(?:\1\s*){4,}", re.DOTALL)


def score_repetition(content: str, n: int = 3) -> float:
    """Share of distinct n-grams (the lowest of the whole answer and of each line, i.e. each JSON
    value): 1.0 for varied text, near 0 for a loop.

    A run of one character or a short chunk repeated many times ("!!!!!!!!!!!!", "哈哈哈哈…",
    "abcabcabc…") is a loop even when it is a single token, and scores 0.
    """
    if _CHAR_LOOP.search(content) or _PHRASE_LOOP.search(content):
        return 0.0
    scores = []
    for line in [content, *content.splitlines()]:  # the whole answer, and each JSON value on its own
        grams = ngrams(tokens(line), n)
        if len(grams) >= 2:
            scores.append(len(set(grams)) / len(grams))
    return min(scores, default=1.0)


def score_copy(content: str, dialogue_text: str, n: int) -> float:
    """1 - share of the answer's long n-grams copied verbatim from the dialogue.

    n-grams are taken inside each line (one line per JSON value), so short quoted values in an
    extraction answer do not count, while a pasted stretch of dialogue does.
    """
    grams = [g for line in content.splitlines() for g in ngrams(tokens(line), n)]
    if not grams:
        return 1.0
    source = _source_ngrams(dialogue_text, n)
    copied = sum(1 for g in grams if g in source)
    return 1.0 - copied / len(grams)


@lru_cache(maxsize=1024)
def _source_ngrams(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """The n-grams of a dialogue, once for all its prompts' answers."""
    return frozenset(ngrams(tokens(text), n))


def score_echo(content: str, instruction_text: str, n: int) -> tuple[float, float]:
    """1 - share of the answer's n-grams taken from the instruction (an answer that restates the
    task instead of doing it). Returns (score, echoed share)."""
    grams = [g for line in content.splitlines() for g in ngrams(tokens(line), n)]
    if not grams:
        return 1.0, 0.0
    source = set(ngrams(tokens(instruction_text), n))
    share = sum(1 for g in grams if g in source) / len(grams)
    return round(1.0 - share, 6), round(share, 4)


@cache
def refusal_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """(kind, pattern) from ``refusal_patterns.txt``: ``refusal`` and ``boilerplate`` sections."""
    out: list[tuple[str, re.Pattern[str]]] = []
    kind = "refusal"
    for line in Path(__file__).with_name("refusal_patterns.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            kind = line[1:-1]
            continue
        out.append((kind, re.compile(line, re.IGNORECASE)))
    return tuple(out)


def score_refusal(content: str, boilerplate: bool = True) -> tuple[float, dict[str, str] | None]:
    """0 when the answer refuses the task, talks about itself as an AI or (when ``boilerplate``)
    pads with chat filler ("I hope this helps!", "希望对您有帮助"): none of that is training data."""
    for kind, pattern in refusal_patterns():
        if kind == "boilerplate" and not boilerplate:
            continue
        m = pattern.search(content)
        if m:
            return 0.0, {"kind": kind, "match": m.group()[:80]}
    return 1.0, None


def score_pii_leak(content: str) -> tuple[float, dict[str, list[str]] | None]:
    """0 when the answer contains personal data (phone, ID, e-mail, bank card, unit number...)."""
    found = find_pii(content)
    if not found:
        return 1.0, None
    by_type: dict[str, list[str]] = {}
    for m in found:
        by_type.setdefault(m.type, []).append(m.text)
    return 0.0, by_type


_SECOND_PERSON = re.compile(r"[您你]|(?i:\byou(?:r|rs|'ll|'re|'ve|'d)?\b)")
_SENTENCE_END = re.compile(r"[。！？!?]|\.(?=\s+[A-Z])")
_THIRD_PERSON_CUSTOMER = re.compile(r"客户|顾客|(?i:\bthe customer\b|\bthe guest\b|\bthe tenant\b)")


def score_task_form(values: list[str], form: str) -> tuple[float, dict[str, str] | None]:
    """0 when the answer has another task's form (the instruction was not followed):
    ``phrases``: an extracted value that is two sentences or speaks to someone (a reply pasted
    into a field); ``report``: a summary or analysis that addresses the reader as "you"/您 (a
    reply instead of a report); ``reply``: a reply that talks about "the customer"/客户 instead
    of to them (a summary instead of a reply). Quotes are skipped: quoting the dialogue is fine."""
    if form == "any":
        return 1.0, None
    for v in values:
        text = re.sub(r"“[^”]*”|\"[^\"]*\"|「[^」]*」", "", v)
        if form == "phrases" and (len(_SENTENCE_END.findall(text.rstrip("。.!！?？ "))) >= 1 or _SECOND_PERSON.search(text)):
            return 0.0, {"form": form, "value": v[:80]}
        if form == "report" and _SECOND_PERSON.search(text):
            return 0.0, {"form": form, "value": v[:80]}
        if form == "reply" and _THIRD_PERSON_CUSTOMER.search(text):
            return 0.0, {"form": form, "value": v[:80]}
    return 1.0, None


def _form_values(output_json: str | None, values: str, ctx: RuleContext) -> list[str]:
    """What the task_form rule reads: for a reply, the field spoken to the customer (``"x-dialinsight-
    addressed"`` in the schema; its rationale may well name "the customer"); else every value."""
    if not output_json:
        return []
    if ctx.form != "reply":
        return values.splitlines()
    data = json.loads(output_json)
    keys = marked_keys(ctx.schema, "addressed")
    return [v for k, v in data.items() if k in keys and isinstance(v, str)] if isinstance(data, dict) else []


@dataclass(frozen=True)
class RuleContext:
    task_family: str
    dialogue_lang: str
    dialogue_text: str
    instruction_text: str  # the instruction plus the template's own words (system, task block)
    schema: dict[str, Any]
    min_chars: int
    max_chars: int
    boilerplate_check: bool = True
    form: str = "any"  # task_families.*.form


def score_record(label: dict[str, Any], ctx: RuleContext, shingle_size: int,
                 echo_shingle_size: int = 4) -> tuple[dict[str, float], dict[str, Any]]:
    """Rule dimensions of one label, and the evidence for those that found something."""
    content = content_text(label["output_text"], label["output_json"])
    values = content_text(label["output_text"], label["output_json"], skip_keys=label_keys(ctx.schema))
    cut, cut_hit = score_not_truncated(label["finish_reason"], label["output_text"], label["output_json"],
                                       marked_keys(ctx.schema, "prose"))
    form, form_hit = score_task_form(_form_values(label["output_json"], values, ctx), ctx.form)
    echo, echoed = score_echo(values, ctx.instruction_text, echo_shingle_size)
    refusal, refusal_hit = score_refusal(content, ctx.boilerplate_check)
    pii, pii_hit = score_pii_leak(label["output_text"] or "")
    dims = {
        "schema_valid": score_schema_valid(label["output_json"], ctx.schema),
        "non_empty": score_non_empty(content),
        "not_truncated": cut,
        "length_ok": score_length(content, ctx.min_chars, ctx.max_chars),
        "lang_match": score_lang_match(values, ctx.dialogue_lang),
        "repetition": score_repetition(content),
        "copy": score_copy(content, ctx.dialogue_text, shingle_size),
        "echo": echo,
        "refusal": refusal,
        "pii_leak": pii,
        "task_form": form,
    }
    findings: dict[str, Any] = {}
    if dims["schema_valid"] < 1.0:
        findings["schema_valid"] = _schema_errors(label["output_json"], ctx.schema)
    if dims["length_ok"] < 1.0:
        findings["length_ok"] = {"chars": len(content.strip()), "min": ctx.min_chars, "max": ctx.max_chars}
    if echoed:
        findings["echo"] = {"echoed_share": echoed}
    if refusal_hit:
        findings["refusal"] = refusal_hit
    if pii_hit:
        findings["pii_leak"] = pii_hit
    if form_hit:
        findings["task_form"] = form_hit
    if cut_hit:
        findings["not_truncated"] = cut_hit
    assert set(dims) == set(RULE_DIMENSIONS)
    return dims, findings


def _schema_errors(output_json: str | None, schema: dict[str, Any]) -> list[str]:
    if output_json is None:
        return ["output is not valid JSON"]
    errs = _validator(schema).iter_errors(json.loads(output_json))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:120]}" for e in errs][:5]
