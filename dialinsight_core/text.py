"""Shared text utilities (bottom layer): language detection, CJK-aware tokens, role names, stable
hashes. Every stage uses these; none of them knows about a stage (docs/architecture.md).

One CJK-aware text layer for every check (docs/quality.md, "Text layer"): stored text is never
rewritten; checks compare a *folded* copy (NFKC, so full-width and half-width forms are equal,
lower case), tokenised with a real Chinese word segmenter (jieba) for runs of ideographs, digit
runs split from ideographs ("9月22日" -> 9 / 月 / 22 / 日) and words for Latin script. Each distinct
text is folded and segmented once per process (LRU caches), since the quality layers look at the
same dialogue once per prompt.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# runs of ideographs (segmented by jieba), of digits (a decimal point stays inside), of other letters
_RUN = re.compile(r"(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)|(?P<num>\d+(?:\.\d+)?)|(?P<word>[^\W\d_]+)")



def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up >= 30% of the letters, 'en' otherwise, 'und' without letters."""
    text = fold(text)
    letters = _LETTER.findall(text)
    if not letters:
        return "und"
    return "zh" if len(CJK.findall(text)) / len(letters) >= 0.3 else "en"


def prompt_lang(lang: str) -> str:
    """The template language for a detected language: Chinese dialogues get Chinese prompts."""
    return "zh" if lang == "zh" else "en"


def normalise_text(text: str) -> str:
    """The matching copy of a text (dedup keys, comparisons): folded and with whitespace collapsed.
    Never stored, prompted or published: ingest keeps the speaker's text (``clean_text``)."""
    return re.sub(r"\s+", " ", fold(text)).strip()


def clean_text(text: str) -> str:
    """What ingest stores: the speaker's text with only invisible damage undone (control and
    zero-width characters, trailing spaces); punctuation, width and case are kept as spoken."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")


@lru_cache(maxsize=16384)  # counts bound the caches, sizes do not: whole dialogues pass through here
def fold(text: str) -> str:
    """NFKC + lower case: "Ｔｏｋｙｏ，３室" and "tokyo,3室" compare equal. Same length class as
    the input for everything but compatibility ligatures; use ``fold_map`` when offsets matter."""
    return unicodedata.normalize("NFKC", text).lower()


class _FoldTable(dict[int, str]):
    """Character code -> its fold (NFKC per character, lower case), filled on first sight: the
    table ``str.translate`` folds a whole text with, at C speed, once a character was seen."""

    def __init__(self, lower: bool) -> None:
        super().__init__()
        self.lower = lower

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        f = unicodedata.normalize("NFKC", ch) if code > 127 else ch
        if self.lower:
            f = f.lower()
        self[code] = f
        return f


_FOLD_TABLES = {True: _FoldTable(True), False: _FoldTable(False)}


def fold_map(text: str, lower: bool = True) -> tuple[str, list[int]]:
    """The folded text and, per folded character, the index of the original character it came
    from: detectors run on the folded copy, redaction replaces the original span."""
    folded = text.translate(_FOLD_TABLES[lower])
    if len(folded) == len(text):  # no character folded to several (none folds to nothing): 1:1
        return folded, list(range(len(text)))
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        f = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        if lower:
            f = f.lower()
        out.append(f)
        index.extend([i] * len(f))
    return "".join(out), index


@cache
def segmenter() -> ModuleType:
    """jieba, imported and its dictionary loaded on first use: importing it costs ~0.5 s, and the
    DAG files (parsed every few seconds) import this module through the config."""
    import jieba  # lazy, see above

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading lines are not a task's verdict
    jieba.initialize()
    return jieba


@lru_cache(maxsize=8192)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for m in _RUN.finditer(fold(text)):
        if m.lastgroup == "cjk":
            out.extend(segmenter().lcut(m.group(), HMM=False))
        else:
            out.append(m.group())
    return tuple(out)


_REPEATS = re.compile(r"(.)\1{8,}", re.S)


VITERBI_MEMO = 1 << 16  # distinct out-of-vocabulary runs kept (each a few characters and its route)
_MIN_FLOAT = -3.14e100  # jieba.posseg.viterbi's score of an emission its tables lack


def posseg_viterbi(obs: str, states: Any, start_p: Any, trans_p: Any, emit_p: Any) -> tuple[float, list[Any]]:
    """jieba.posseg.viterbi (MIT), the same result, over the transitions that exist only.

    jieba scores every (previous state, state) pair and lets a missing transition score -inf; a
    character its table does not know may be any of 256 states, so one character can cost 65,536
    sums. Here a state's score is the best over the states that can precede it (pulled), or each
    previous state pushes to its successors, whichever is less work. Every candidate is the same
    float sum in the same order, and ties go to the larger state as in jieba's ``max`` over
    (score, state) tuples, so the route is identical (tested against jieba's own function)."""
    all_states = trans_p.keys()
    ch = obs[0]
    prev = {y: start_p[y] + emit_p[y].get(ch, _MIN_FLOAT) for y in states.get(ch, all_states)}
    paths: list[dict[Any, Any]] = [dict.fromkeys(prev, "")]
    for t in range(1, len(obs)):
        prev_states = [x for x in prev if trans_p[x]]
        expect = {y for x in prev_states for y in trans_p[x]}
        obs_states = set(states.get(obs[t], all_states)) & expect
        if not obs_states:
            obs_states = expect if expect else set(all_states)
        ch = obs[t]
        emit = {y: emit_p[y].get(ch, _MIN_FLOAT) for y in obs_states}
        best: dict[Any, tuple[float, Any]] = {}
        if len(obs_states) * len(prev_states) <= len(expect) * 4:  # few candidates: pull
            for y, e in emit.items():
                b = None
                for y0 in prev_states:
                    tp = trans_p[y0].get(y)
                    if tp is not None:
                        c = (prev[y0] + tp + e, y0)
                        if b is None or c > b:
                            b = c
                if b is not None:
                    best[y] = b
        else:  # a character of many states: push along the transitions
            for y0 in prev_states:
                v0 = prev[y0]
                for y, tp in trans_p[y0].items():
                    e = emit.get(y)
                    if e is not None:
                        c = (v0 + tp + e, y0)
                        b = best.get(y)
                        if b is None or c > b:
                            best[y] = c
        prev = {y: b[0] for y, b in best.items()}
        paths.append({y: b[1] for y, b in best.items()})
    prob, state = max((v, y) for y, v in prev.items())
    route: list[Any] = [None] * len(obs)
    for i in range(len(obs) - 1, -1, -1):
        route[i] = state
        state = paths[i][state]
    return prob, route


@cache
def tagger() -> ModuleType:
    """jieba.posseg, with its HMM decoder replaced by ``posseg_viterbi`` and memoised per run.

    posseg decodes with a pure-Python Viterbi every run of characters its dictionary does not
    know (names, numbers with units, 我想在): 87 % of tagging time, 1.2 ms a run. ``posseg_viterbi``
    returns the same routes about 5x faster, and runs recur (元, 楼, 看房), so a bounded LRU over
    it answers most of them: the tags are exactly jieba's (docs/benchmarks.md). Installed once per
    process, on first use; other callers of jieba.posseg get the same tags, faster."""
    import jieba.posseg as posseg  # lazy: its tables take ~1 s to import (see ``segmenter``)

    segmenter()
    decode = posseg.viterbi
    if getattr(decode, "memoised", False):
        return posseg
    tables = (posseg.char_state_tab_P, posseg.start_P, posseg.trans_P, posseg.emit_P)

    @lru_cache(maxsize=VITERBI_MEMO)
    def run(obs: str) -> tuple[float, list[Any]]:
        return posseg_viterbi(obs, *tables)

    def viterbi(obs: str, states: Any, start_p: Any, trans_p: Any, emit_p: Any) -> Any:
        if states is tables[0] and start_p is tables[1] and trans_p is tables[2] and emit_p is tables[3]:
            return run(obs)  # posseg's own tables (routes are read, never changed, by posseg)
        return decode(obs, states, start_p, trans_p, emit_p)

    viterbi.memoised = True  # type: ignore[attr-defined]
    viterbi.cache_info = run.cache_info  # type: ignore[attr-defined]
    posseg.viterbi = viterbi
    return posseg


@lru_cache(maxsize=8192)  # whole dialogues and answers: a bounded window (a dialogue's prompts come together)
def tagged_words(text: str) -> tuple[tuple[str, str], ...]:
    """(word, part-of-speech) of the Chinese in ``text`` (jieba.posseg: ``n*`` nouns, ``nr`` person
    names, ``v`` verbs...); empty for text without ideographs. Cached like ``tokens``."""
    if not CJK.search(text):
        return ()
    # a run of one repeated character (房房房…, a hostile or broken input) holds no word worth
    # tagging, and jieba's HMM pays ~20 µs per character of it: keep 8 of it
    return tuple((p.word, p.flag) for p in tagger().cut(_REPEATS.sub(r"\1" * 8, text)))


def keyword_count(keyword: str, text: str, first: bool = False) -> int:
    """Occurrences of a taxonomy keyword in ``text`` on word boundaries: English words as words
    ("hi" is not in "this"), Chinese keywords only where a word of the segmenter starts (租 is in
    我想租房 and 租金, not in 出租车; 电话 is in 电话号码). Punctuation keywords ("?", "[name_") match anywhere.
    Both sides are folded, so full-width forms count. ``first``: stop at the first one."""
    return folded_count(fold(keyword), fold(text), first)


def folded_count(kw: str, low: str, first: bool = False) -> int:
    """``keyword_count`` of a folded keyword in a folded text: a classifier that tries many
    keywords on one text folds each once (``keyword_count``'s own folds are per call)."""
    if not kw or kw not in low:
        return 0
    if not (kw[0].isalnum() or CJK.match(kw)):  # punctuation: anywhere
        hits = re.finditer(re.escape(kw), low)
    elif not CJK.search(kw):  # a word: not inside another word
        hits = re.finditer(rf"(?<![a-z0-9]){re.escape(kw)}(?![a-z0-9])", low)
    else:  # Chinese: where a segmenter word starts
        starts = _word_starts(low)
        hits = (m for m in re.finditer(re.escape(kw), low) if m.start() in starts)
    return int(next(hits, None) is not None) if first else sum(1 for _ in hits)


@lru_cache(maxsize=16384)
def _word_starts(folded: str) -> frozenset[int]:
    """Offsets where the segmenter's words start in an already folded text."""
    starts = set()
    for m in _RUN.finditer(folded):
        pos = m.start()
        for w in segmenter().lcut(m.group(), HMM=False) if m.lastgroup == "cjk" else [m.group()]:
            starts.add(pos)
            pos += len(w)
    return frozenset(starts)


def tokens(text: str) -> tuple[str, ...]:
    """Folded word tokens: jieba words inside runs of ideographs, digit runs and Latin words apart
    ("看房9月22日" -> 看房 / 9 / 月 / 22 / 日). Cached: each distinct text is segmented once."""
    return _tokens(text)


@lru_cache(maxsize=8192)
def latin_tokens(text: str) -> tuple[str, ...]:
    """The tokens of ``tokens`` outside runs of ideographs (digit runs, Latin words), without
    segmenting anything: what a check that compares only Latin words needs, at regex cost."""
    return tuple(m.group() for m in _RUN.finditer(fold(text)) if m.lastgroup != "cjk")


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
