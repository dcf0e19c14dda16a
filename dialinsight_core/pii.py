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
    ("street_address", re.compile(r"[\u4e00-\u9fff]{2,8}(?:路|街|大道|巷)\d{1,5}号")),
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
