"""Grounding layer of the quality cascade (docs/quality.md): cheap checks on every record.

*Grounding*: the facts an answer states (numbers, prices, counts, dates, times, weekdays and
months, amenities, place and property names) must be supported by the dialogue (or by the
instruction, for numbers such as "rate it from 1 to 5"). Facts are extracted strictly from the
answer and generously from the dialogue, so a paraphrase ("3pm" vs "15:00", "two bedrooms" vs
"2 bedrooms", "4500元" vs "4,500", "1.5万" vs "15000") is supported and an invented price is not.
Every unsupported fact halves the score and is listed as evidence.

*Coverage*: the share of the fields an instruction asks for (its ``expected_fields`` in the
library) that the answer covers. Both work on Chinese text without word segmentation.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from dialinsight_core.text import CJK as _CJK
from dialinsight_core.text import fold, latin_tokens, tagged_words

__all__ = ["extract_facts", "score_coverage", "score_grounding"]

_MULT = {"k": 1e3, "thousand": 1e3, "千": 1e3, "万": 1e4, "w": 1e4, "million": 1e6, "百万": 1e6, "亿": 1e8}
_NUM = re.compile(r"(?<![A-Za-z0-9.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(million|thousand|百万|亿|万|千|k\b|w\b)?",
                  re.IGNORECASE)
_TIME_EN = re.compile(r"(?<![\d:])(\d{1,2})(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'clock)(?!\w)", re.IGNORECASE)
_TIME_24 = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_TIME_ZH = re.compile(r"(早上|上午|中午|下午|傍晚|晚上)?([0-9]{1,2}|[零一二两三四五六七八九十]{1,3})\s*[点點]"
                      r"(半|[0-9]{1,2}分|[零一二三四五六七八九十]{1,3}分)?")
_ZH_DIGIT = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000}
# in the *answer*, Chinese numerals count as facts only before a domain counter ("三室", "五楼",
# "两千元"); "一个"/"一下" are grammar. In the dialogue every numeral counts (generous support).
_ZH_NUM_STRICT = re.compile(r"([零一二两三四五六七八九十百千万]+)(?=室|厅|卫|楼|层|平|元|块|万|号|月|岁|分钟|小时|年前|居)")
_ZH_NUM_ANY = re.compile(r"[零一二两三四五六七八九十百千万]+")
_EN_WORD_NUM = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())} | {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "half": 0.5}
_EN_NUM_STRICT = re.compile(r"\b(" + "|".join(_EN_WORD_NUM) + r")[ -](?:bed|bath|room|floor|stor|month|year|week|day|"
                            r"minute|hour|people|person|car|parking|level|unit|apartment|flat|option|house)", re.IGNORECASE)
_WEEKDAYS = {**{d: i for i, d in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])},
             **{f"{p}{c}": i for p in ("星期", "周", "礼拜") for i, c in enumerate("一二三四五六日")},
             "星期天": 6, "礼拜天": 6}
_MONTHS = {m: i + 1 for i, m in enumerate(["january", "february", "march", "april", "may", "june", "july", "august",
                                           "september", "october", "november", "december"])}
_MONTH_ABBR = {m[:3]: i for m, i in _MONTHS.items() if m != "may"}
# one regex per word list (each a set of whole words, so one scan finds every word that occurs)
_EN_WORD_ANY = re.compile(r"\b(?:" + "|".join(_EN_WORD_NUM) + r")\b", re.IGNORECASE)
_MONTH_ANY = {**_MONTHS, **_MONTH_ABBR}
_MONTH_ANY_RE = re.compile(r"\b(?:" + "|".join(sorted(_MONTH_ANY, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_MONTH_NAME_RE = re.compile(r"\b(?:" + "|".join(m for m in _MONTHS if m != "may") + r")\b")
_WEEKDAYS_ZH = tuple(d for d in _WEEKDAYS if not d.isascii())
_WEEKDAY_EN_RE = re.compile(r"\b(" + "|".join(d for d in _WEEKDAYS if d.isascii()) + r")s?\b")
_ROLE_AND_CALENDAR = {"agent", "customer", "i", "json", "am", "pm", "ok", *(d.rstrip("s") for d in _WEEKDAYS if d.isascii()),
                      *_MONTHS}
_LIST_MARKER = re.compile(r"(?m)^\s*(?:\d{1,2}[.)、]|[(（]\d{1,2}[)）])\s*")  # "1. ", "2) ", "（3）": numbering, not facts
_PLACE_ZH = re.compile(r"[\u4e00-\u9fff]{1,6}?(小区|花园|公寓|大厦|广场|家园|苑|府|路|街|站|大道)")
# capitalised words joined by spaces or "of/on/the/at/de/&" (never across lines: one JSON value per line)
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z'&-]+(?:[ \t]+(?:(?:of|on|the|at|de|&)[ \t]+)?[A-Z][a-zA-Z'&-]+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"“”()\[\]\n]|\s-)\s*$")


@cache
def stopwords() -> frozenset[str]:
    text = (Path(__file__).with_name("stopwords.txt")).read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() if not line.startswith("#") for w in line.split())


def _num_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")


def zh_numeral(text: str) -> float | None:
    """Chinese numeral to a number: 三 -> 3, 十二 -> 12, 两千五 -> 2500, 一万二 -> 12000."""
    total, section, digit, last_unit = 0.0, 0.0, None, 1
    for ch in text:
        if ch in _ZH_DIGIT:
            digit = _ZH_DIGIT[ch]
        elif ch in _ZH_UNIT:
            unit = _ZH_UNIT[ch]
            section += (digit if digit is not None else 1) * unit
            digit, last_unit = None, unit
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit, last_unit = 0.0, None, 10000
        else:
            return None
    if digit is not None:  # "两千五" = 2500: a trailing digit after a unit is one unit lower
        short = last_unit >= 100 and len(text) > 1 and "零" not in text
        section += digit * (last_unit // 10 if short else 1)
    value = total + section
    return value if value or text.strip("零") == "" else None


def _times(text: str, generous: bool) -> tuple[set[str], str]:
    """Times as 'time:h12:mm' keys, and the text with them blanked out."""
    found: set[str] = set()

    def add(hour: int, minute: int) -> None:
        if 0 <= hour <= 24 and 0 <= minute < 60:
            found.add(f"time:{(hour % 12) or 12}:{minute:02d}")

    def en(m: re.Match[str]) -> str:
        add(int(m.group(1)), int(m.group(2) or 0))
        return " "

    def h24(m: re.Match[str]) -> str:
        add(int(m.group(1)), int(m.group(2)))
        return " "

    def zh(m: re.Match[str]) -> str:
        hour = int(m.group(2)) if m.group(2).isdigit() else zh_numeral(m.group(2))
        if hour is None:
            return m.group()
        tail = m.group(3) or ""
        if not tail:
            minute = 0
        elif tail == "半":
            minute = 30
        else:
            minute = int(tail[:-1]) if tail[:-1].isdigit() else int(zh_numeral(tail[:-1]) or 0)
        add(int(hour), minute)
        return " "

    text = _TIME_EN.sub(en, text)
    text = _TIME_24.sub(h24, text)
    text = _TIME_ZH.sub(zh, text)
    return found, text


def _numbers(text: str, generous: bool) -> set[str]:
    out: set[str] = set()
    for m in _NUM.finditer(text):
        base = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        mult = _MULT.get((m.group(3) or "").lower(), 1.0)
        out.add(_num_key(base * mult))
        if generous:
            out.add(_num_key(base))  # "1.5万" also supports "1.5"
    for m in (_ZH_NUM_ANY if generous else _ZH_NUM_STRICT).finditer(text):
        v = zh_numeral(m.group(1) if m.groups() else m.group())
        if v is not None:
            out.add(_num_key(v))
    if generous:
        out.update(_num_key(_EN_WORD_NUM[m.group().lower()]) for m in _EN_WORD_ANY.finditer(text))
        out.update(str(_MONTH_ANY[m.group().lower()]) for m in _MONTH_ANY_RE.finditer(text))
    else:
        out.update(_num_key(_EN_WORD_NUM[m.group(1).lower()]) for m in _EN_NUM_STRICT.finditer(text))
    return out


def _named(text: str, amenities: tuple[str, ...]) -> set[str]:
    low = text.lower()
    out = {f"weekday:{_WEEKDAYS[name]}" for name in _WEEKDAYS_ZH if name in low}
    out.update(f"weekday:{_WEEKDAYS[m.group(1)]}" for m in _WEEKDAY_EN_RE.finditer(low))
    out.update(f"month:{_MONTHS[m.group()]}" for m in _MONTH_NAME_RE.finditer(low))
    for t, word_start in _amenity_matchers(amenities):
        if t in low and (word_start is None or word_start.search(low)):
            out.add(f"amenity:{t}")
    return out


@lru_cache(maxsize=64)
def _amenity_matchers(amenities: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str] | None], ...]:
    """Per amenity term (lower case): Chinese terms match anywhere, others from a word start."""
    return tuple((t, None if _CJK.search(t) else re.compile(rf"\b{re.escape(t)}"))
                 for t in dict.fromkeys(a.lower() for a in amenities))


def extract_facts(text: str, amenities: tuple[str, ...] = (), generous: bool = False) -> set[str]:
    """Canonical fact keys of ``text``: 'num:2500', 'time:3:00', 'weekday:1', 'amenity:balcony'."""
    if not generous:
        text = _LIST_MARKER.sub(" ", text)
    times, rest = _times(text, generous)
    facts = times | {f"num:{n}" for n in _numbers(rest, generous)} | _named(text, amenities)
    if generous:  # "at 3" in the dialogue supports "3pm" / "15:00" in the answer
        facts |= {f"time:{(int(float(n)) % 12) or 12}:00" for n in _numbers(rest, True)
                  if float(n).is_integer() and 1 <= float(n) <= 24}
    return facts


@lru_cache(maxsize=1024)
def _dialogue_facts(text: str, amenities: tuple[str, ...]) -> frozenset[str]:
    """``extract_facts(text, amenities, generous=True)`` of a dialogue, once for all its prompts."""
    return frozenset(extract_facts(text, amenities, generous=True))


def _names_en(text: str) -> set[str]:
    """Capitalised names that are not at the start of a sentence or a line ("Maple Court")."""
    stop = stopwords()
    out: set[str] = set()
    for m in _CAPITALISED.finditer(text):
        if _SENTENCE_START.search(text[: m.start()]):
            words = m.group().split()
            if len(words) == 1:
                continue  # a capitalised first word is just the start of a sentence
            name = " ".join(words[1:])  # drop the sentence-initial word
        else:
            name = m.group()
        words = [w for w in name.split() if not (w == "I" or w.startswith(("I'", "I’")))]  # I, I'm, I'll
        while words and words[0].lower() in stop:  # "on Friday" -> "Friday"
            words.pop(0)
        name = " ".join(words)
        content = [w.lower().rstrip("s") for w in words if w.lower() not in stop]
        if not content or all(w in _ROLE_AND_CALENDAR for w in content):
            continue
        out.add(name)
    return out


def _latin_units(toks: tuple[str, ...]) -> set[str]:
    """English content words of ``toks`` (stemmed crudely), never a number; stopwords excluded."""
    stop = stopwords()
    return {tok[:6] for tok in toks  # crude stem: "apartments" ~ "apartment"
            if len(tok) >= 3 and not _CJK.search(tok) and not tok.isdigit() and tok not in stop
            and not _ZH_NUM_ANY.fullmatch(tok)}


def _fact_units(text: str) -> set[str]:
    """Content units: English content words (stemmed crudely) and Chinese nouns and verbs of two
    or more characters (jieba's part-of-speech tags), never a number; stopwords excluded."""
    stop = stopwords()
    return _latin_units(latin_tokens(text)) | {
        w for w, flag in tagged_words(text) if flag[:1] in ("n", "v") and len(w) >= 2 and _CJK.search(w) and w not in stop}


@lru_cache(maxsize=4096)
def _source_units(text: str) -> frozenset[str]:
    """The English units of a source text (the dialogue, the prompt). Its Chinese words need no
    tagging: an answer's Chinese unit is supported wherever its characters stand together in the
    source, which covers every word the source's own tagging would yield (each is a substring)."""
    return frozenset(_latin_units(latin_tokens(text)))


def score_grounding(content: str, dialogue_text: str, prompt_text: str,
                    amenities: tuple[str, ...] = (), lexical: bool = True) -> tuple[float, list[str]]:
    """(score, unsupported facts). Score = 0.5 ** unsupported_facts * (0.5 + 0.5 * lexical support);
    with ``lexical=False`` (families that write new words: ``task_families.*.lexical_support``)
    only the first factor.

    Any invented fact brings the score to 0.5 or below (rejected at the default threshold 0.6);
    an answer about a different topic (content words and CJK bigrams absent from the prompt)
    scores near 0.5 as well.
    """
    support = _dialogue_facts(dialogue_text, amenities) | {
        f for f in extract_facts(prompt_text, (), generous=True) if f.startswith("num:")}
    unsupported = sorted(f for f in extract_facts(content, amenities) if f not in support)
    stems = {t[:6] for t in latin_tokens(dialogue_text) + latin_tokens(prompt_text)}  # compared with English names only
    unsupported += sorted(f"name:{n}" for n in _names_en(content)
                          if not all(w.lower()[:6] in stems for w in n.split() if w.lower() not in stopwords()))
    for m in _PLACE_ZH.finditer(content):
        tail = m.group()[-(len(m.group(1)) + 2):]
        if len(m.group()) >= len(m.group(1)) + 2 and tail not in dialogue_text:
            unsupported.append(f"place:{tail}")
    if not lexical:  # the family writes new words (a reply, an assessment): only its facts are checked
        return round(0.5 ** len(unsupported), 6), unsupported
    units = _fact_units(content)
    # units of each part apart: the dialogue's are cached across its prompts, and no unit spans the two
    src_units = _source_units(prompt_text) | _source_units(dialogue_text)
    # a Chinese word is supported wherever its characters stand together in the source (as written or
    # folded): the segmenter may cut the same characters differently in another sentence (看房 / 看 + 房)
    sources = (prompt_text, dialogue_text, fold(prompt_text), fold(dialogue_text))
    supported = [u for u in units if u in src_units or (_CJK.search(u) and any(u in f for f in sources))]
    lex = len(supported) / len(units) if units else 1.0
    score = (0.5 ** len(unsupported)) * (0.5 + 0.5 * lex)
    return round(score, 6), unsupported


def score_coverage(content: str, output_json: str | None, expected_fields: list[str],
                   schema: dict[str, Any]) -> tuple[float, list[str]]:
    """(share of expected fields covered, the missing ones).

    Each expected field is ``alt1|alt2|...``: covered when any alternative occurs in the answer
    (case-insensitive; an answer that lists it under ``not_mentioned`` covers it honestly). An
    alternative ``$key`` asks for a JSON key. Without expected fields: the share of the schema's
    required keys whose values are non-empty.
    """
    data = _load(output_json)
    if not expected_fields:
        required = schema.get("required", [])
        if not required:
            return 1.0, []
        missing = [k for k in required if not isinstance(data, dict) or _empty(data.get(k))]
        return round(1 - len(missing) / len(required), 6), missing
    low = content.lower()
    missing = []
    for field in expected_fields:
        alts = [a.strip() for a in field.split("|") if a.strip()]
        ok = any((isinstance(data, dict) and not _empty(data.get(a[1:]))) if a.startswith("$") and len(a) > 1
                 else a.lower() in low
                 for a in alts)
        if not ok:
            missing.append(field)
    return round(1 - len(missing) / len(expected_fields), 6), missing


def _load(output_json: str | None) -> Any:
    try:
        return json.loads(output_json) if output_json else None
    except (json.JSONDecodeError, ValueError):
        return None


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str | list | dict) and len(v) == 0)
