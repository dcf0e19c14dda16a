"""Shared text utilities (bottom layer): language detection, CJK-aware tokens, role names, stable
hashes. Every stage uses these; none of them knows about a stage (docs/architecture.md).

Tokenisation treats every CJK ideograph as a token, so the quality checks and diversity
measures work on Chinese without word segmentation or whitespace assumptions.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)

# how prompts, the judge and the scorers name the two canonical roles, per prompt language
ROLE_NAMES = {"en": {"agent": "Agent", "customer": "Customer"}, "zh": {"agent": "经纪人", "customer": "客户"}}


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up >= 30% of the letters, 'en' otherwise, 'und' without letters."""
    letters = _LETTER.findall(text)
    if not letters:
        return "und"
    return "zh" if len(CJK.findall(text)) / len(letters) >= 0.3 else "en"


def prompt_lang(lang: str) -> str:
    """The template language for a detected language: Chinese dialogues get Chinese prompts."""
    return "zh" if lang == "zh" else "en"


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; each CJK ideograph is a token of its own."""
    return [t.lower() for t in _TOKEN.findall(text)]


def ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def turn_lines(turns: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per dialogue, its turns as ``role: text`` lines in the given order (what LLM prompts about
    a dialogue show: the scene classifier, the seed-instruction requests)."""
    lines: dict[str, list[str]] = {}
    for t in turns:
        lines.setdefault(t["dialogue_id"], []).append(f"{t['role']}: {t['text']}")
    return lines


def stable_int(*parts: Any) -> int:
    """A 63-bit integer from the parts; the same on every machine and Python run (seeds, shards)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


def stable_id(*parts: Any, n: int = 16) -> str:
    """A short hex id from the parts (prompt ids, instruction ids)."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]
