"""Detectors for personal data in English and Chinese text.

The quality stage uses them to catch PII that leaks into an answer; ingest redaction reuses the
same patterns. Precision matters as much as recall: prices, areas, dates, floors and room
layouts (``3室1厅``) are domain facts, so every pattern is anchored on what makes it personal
(a phone's shape, an ID's checksum, a unit keyword) rather than on "a long number".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PII_TYPES", "PiiMatch", "find_pii"]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _cn_id_ok(s: str) -> bool:
    """GB 11643 checksum of an 18-character Chinese resident ID number."""
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == s[17].upper()


def _luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    # Chinese resident ID: 6-digit area, birth date, sequence, check character (checksum verified)
    ("id_number", re.compile(r"(?<![0-9])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
                             r"(?![0-9A-Za-z])")),
    ("ssn", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")),
    # bank card: 16-19 digits, optionally grouped by 4, Luhn-valid
    ("bank_card", re.compile(r"(?<![\d-])(?:\d{4}[ -]?){3}\d{4,7}(?![\d-])")),
    # phones: Chinese mobile (optionally +86), Chinese landline with area code, international, NANP
    ("phone", re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")),
    ("phone", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)")),
    ("phone", re.compile(r"(?<![\w+])\+\d{1,3}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]?\d{2,4}){1,3}(?!\d)")),
    ("phone", re.compile(r"(?<![\d(])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?!\d)")),
    # unit / room numbers: a unit keyword followed by an identifier, or Chinese building/unit/room
    ("unit_number", re.compile(r"(?i)\b(?:unit|apt\.?|apartment|suite|room|flat)\s*(?:no\.?|number|#)?\s*"
                               r"(?:\d{1,4}[A-Za-z]?|[A-Za-z]\d{1,4})\b(?!\s*(?:bed|bath|room|br\b))")),
    ("unit_number", re.compile(r"\d{1,3}(?:号楼|栋|幢|座)\s*\d{1,2}\s*单元|\d{1,2}\s*单元\s*\d{3,4}\s*(?:室|号)|"
                               r"(?<!\d)\d{3,4}\s*室(?!\s*\d?\s*厅)|\d{1,3}(?:号楼|栋|幢)(?!\s*\d*\s*层)")),
    ("street_address", re.compile(r"(?i)\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}(?:street|st\.|avenue|ave\.|road|rd\.|"
                                  r"boulevard|blvd\.|lane|ln\.|drive|dr\.)(?=\W|$)")),
    # a Chinese street address starts after "住在/位于/在…" (those words are not part of it)
    ("street_address", re.compile(r"(?![住在位于到去是的址])[\u4e00-\u9fff]{2,8}?(?:路|街|大道|巷)\d{1,5}号")),
]
PII_TYPES = tuple(dict.fromkeys(t for t, _ in _PATTERNS))

_VALIDATORS = {
    "id_number": lambda s: _cn_id_ok(s),
    "bank_card": lambda s: 16 <= len(re.sub(r"\D", "", s)) <= 19 and _luhn_ok(re.sub(r"\D", "", s)),
}


@dataclass(frozen=True)
class PiiMatch:
    type: str
    text: str
    start: int
    end: int


def find_pii(text: str | None) -> list[PiiMatch]:
    """Every personal-data span in ``text``, leftmost first; spans never overlap.

    Patterns are tried in order of specificity, so an ID number is not also reported as a phone.
    Typed placeholders such as ``[PHONE]`` are not PII.
    """
    if not text:
        return []
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            check = _VALIDATORS.get(kind)
            if check and not check(m.group()):
                continue
            found.append(PiiMatch(kind, m.group(), s, e))
            taken.append((s, e))
    return sorted(found, key=lambda p: p.start)


# --- redaction (ingest) -------------------------------------------------------------------------

_ZH_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚"
                "卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
_NAME_PATTERNS = [
    # "my name is Ben Smith", "call me Angela", "Mr. Smith" (the name is group 1)
    re.compile(r"(?i:\bmy name is|\bmy name's|\bcall me|\bi'm called|\bi am called|\bthis is)\s+"
               r"([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)(?=\s*(?:[,.!?;:]|$|\band\b|\bspeaking\b|\bfrom\b|\bhere\b))"),
    re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)"),
    # 我叫王小明 / 我姓李 / 王先生 / 李女士
    re.compile(r"(?:我叫|我的名字是|我姓|本人姓)([\u4e00-\u9fff]{1,3}?)(?=[，。,.!！?？\s]|$|先生|女士|小姐)"),
    re.compile(rf"([{_ZH_SURNAMES}][\u4e00-\u9fff]?(?:先生|女士|小姐|经理|老师))"),
]
PLACEHOLDER_TYPES = {"email": "EMAIL", "id_number": "ID_NUMBER", "ssn": "ID_NUMBER", "bank_card": "BANK_CARD",
                     "phone": "PHONE", "unit_number": "UNIT", "street_address": "ADDRESS", "name": "NAME"}


_ASKS_NAME = re.compile(r"(?i)\byour (?:full )?name\b|\bwho am i speaking\b|怎么称呼|贵姓|您的名字|你的名字|你叫什么|您叫什么")
_BARE_NAME = re.compile(r"^(?:(?:it's|it is|i'm|i am)\s+)?([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)[.!]?$"
                        r"|^(?:我叫|我姓)?([\u4e00-\u9fff]{2,3})[。！]?$")


_NOT_NAMES = {"yes", "no", "hello", "hi", "thanks", "sure", "okay", "ok", "sorry", "好的", "是的", "谢谢", "你好", "您好", "可以"}


def find_names(text: str) -> list[str]:
    """Person names a dialogue states about someone ("my name is Ben", "王先生")."""
    out: list[str] = []
    for pattern in _NAME_PATTERNS:
        out.extend(m.group(1) for m in pattern.finditer(text) if m.group(1))
    return out


class Redactor:
    """Typed, consistent placeholders within one dialogue: the same phone number is ``[PHONE_1]``
    in every turn, a second one ``[PHONE_2]``; counts per type feed the compliance audit.

    Names found anywhere in the dialogue ("my name is Ben") are also replaced where they appear
    alone later ("Thanks, Ben"). Domain facts (prices, areas, dates, floors, layouts) are untouched:
    the detectors only match what makes a string personal.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}
        self._names: list[str] = []
        self._canonical: dict[str, str] = {}  # "Ben" -> "Ben Smith": one person, one placeholder
        self.counts: dict[str, int] = {}

    def learn_names(self, texts: list[str]) -> None:
        """Names stated in the dialogue, including a bare answer to "could you give me your name?"."""
        found: list[str] = []
        for i, text in enumerate(texts):
            found += find_names(text)
            if i + 1 < len(texts) and _ASKS_NAME.search(text):
                m = _BARE_NAME.match(texts[i + 1].strip())
                if m:
                    found.append(m.group(1) or m.group(2))
        for name in found:
            for part in [name, *name.split()] if " " in name else [name]:
                if len(part) >= 2 and part not in self._names and part.lower() not in _NOT_NAMES:
                    self._names.append(part)
                    self._canonical.setdefault(part, name)
        self._names.sort(key=len, reverse=True)  # "Ben Smith" before "Ben"

    def _placeholder(self, kind: str, value: str) -> str:
        label = PLACEHOLDER_TYPES[kind]
        key = (label, re.sub(r"[\s().+-]", "", value).lower())
        if key not in self._ids:
            self._next[label] = self._next.get(label, 0) + 1
            self._ids[key] = f"[{label}_{self._next[label]}]"
        self.counts[label] = self.counts.get(label, 0) + 1
        return self._ids[key]

    def __call__(self, text: str) -> str:
        spans = [(m.start, m.end, self._placeholder(m.type, m.text)) for m in find_pii(text)]
        out, pos = [], 0
        for s, e, ph in spans:
            out.append(text[pos:s])
            out.append(ph)
            pos = e
        out.append(text[pos:])
        text = "".join(out)
        for name in self._names:
            cjk = bool(re.match(r"[\u4e00-\u9fff]", name))
            pattern = re.escape(name) if cjk else rf"\b{re.escape(name)}\b"
            text = re.sub(pattern, lambda m: self._placeholder("name", self._canonical.get(m.group(), m.group())), text)
        return text

