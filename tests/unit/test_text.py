"""The one CJK-aware text layer (dialinsight_core.text): what every check compares."""

from __future__ import annotations

from dialinsight_core.text import clean_text, detect_lang, fold, fold_map, ngrams, normalise_text, tokens


def test_digits_and_ideographs_are_separate_tokens_and_chinese_is_segmented_into_words():
    assert tokens("9月22日下午三点看房") == ("9", "月", "22", "日", "下午", "三点", "看", "房")  # was one token
    assert "出租车" in tokens("我要打出租车去机场") and "租" not in tokens("我要打出租车去机场")
    assert tokens("月租4500元, 2 bedrooms") == ("月租", "4500", "元", "2", "bedrooms")


def test_full_width_and_half_width_forms_match_as_equal():
    assert tokens("ＡＢＣ１２３，Ｔｏｋｙｏ") == tokens("abc123,tokyo") == ("abc", "123", "tokyo")
    assert fold("（３室）") == "(3室)"
    assert normalise_text(" 你好，\n 世界！ ") == normalise_text("你好, 世界!")
    assert detect_lang("ＨＥＬＬＯ ｗｏｒｌｄ") == "en"


def test_stored_text_is_kept_as_spoken():
    said = "您好！请问（两室一厅）的那套，月租４５００元吗？"
    assert clean_text(said) == said  # full-width punctuation and digits survive
    assert clean_text(" a\u200bb\x07c \r\nnext  ") == "abc\nnext"  # only invisible damage is undone


def test_fold_map_points_every_folded_character_back_at_the_original():
    text = "手机１３８１２３４５６７８。"
    folded, index = fold_map(text, lower=False)
    start = folded.index("138")
    assert text[index[start]: index[start + 10] + 1] == "１３８１２３４５６７８"


def test_ngrams_over_words():
    assert ngrams(tokens("我想租一套两室一厅"), 2)[:2] == [("我", "想"), ("想", "租")]


def test_each_text_is_segmented_once():
    from dialinsight_core.text import _tokens

    _tokens.cache_clear()
    for _ in range(50):
        tokens("经纪人带客户看了三套房子")
    info = _tokens.cache_info()
    assert info.misses == 1 and info.hits == 49


def _fixture_texts() -> list[str]:
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    out: list[str] = []
    for path in [*fixtures.glob("pii_labelled/*.jsonl"), *fixtures.glob("quality_labelled/*.jsonl")]:
        out += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for path in sorted((fixtures / "star_zh" / "dialogues").glob("*.json")):
        out.append(path.read_text(encoding="utf-8"))
    return out


def test_the_fast_viterbi_decodes_every_run_as_jieba_does():
    """posseg_viterbi replaces jieba.posseg's decoder: same score, same route, on the runs the
    fixtures make it decode and on random runs (known characters, and rare ideographs that may
    be any of 256 states)."""
    import random
    import sys

    from dialinsight_core.text import CJK, posseg_viterbi, tagger

    posseg = tagger()
    jieba_viterbi = sys.modules["jieba.posseg.viterbi"].viterbi  # jieba's own function, never patched
    tables = (posseg.char_state_tab_P, posseg.start_P, posseg.trans_P, posseg.emit_P)
    runs: list[str] = []
    memo = posseg.viterbi
    posseg.viterbi = lambda obs, *a: (runs.append(obs), jieba_viterbi(obs, *a))[1]
    try:
        for text in [t for t in _fixture_texts() if CJK.search(t)][::20]:  # every 20th: ~280 texts
            posseg.lcut(text[:400])
    finally:
        posseg.viterbi = memo
    rng = random.Random(7)
    known = sorted(posseg.char_state_tab_P)
    runs += ["".join(rng.choice(known) for _ in range(rng.randint(1, 6))) for _ in range(80)]
    runs += ["".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 3))) for _ in range(12)]
    runs = list(dict.fromkeys(runs))
    assert len(runs) > 200
    assert [posseg_viterbi(r, *tables) for r in runs] == [jieba_viterbi(r, *tables) for r in runs]


def test_tagged_words_are_jiebas_own_tags():
    import sys

    from dialinsight_core.text import CJK, tagged_words, tagger

    posseg = tagger()
    texts = [*[t for t in _fixture_texts() if CJK.search(t)][:60], "我是经纪人黄芳，电话13812345678，明天下午三点带您看房。"]
    memo, posseg.viterbi = posseg.viterbi, sys.modules["jieba.posseg.viterbi"].viterbi
    try:
        plain = [tuple((p.word, p.flag) for p in posseg.cut(t)) for t in texts]
    finally:
        posseg.viterbi = memo
    tagged_words.cache_clear()
    assert [tagged_words(t) for t in texts] == plain
    assert posseg.viterbi.cache_info().hits > 0  # runs recur: 元, 看房


def test_fold_map_through_translate_equals_folding_each_character():
    import unicodedata

    def per_character(text: str, lower: bool) -> tuple[str, list[int]]:
        out, index = [], []
        for i, ch in enumerate(text):
            f = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
            f = f.lower() if lower else f
            out.append(f)
            index.extend([i] * len(f))
        return "".join(out), index

    samples = ["Ｔｏｋｙｏ，３室（两室一厅）", "ﬁle ㍱ ½ İstanbul ΣΟΦΟΣ", "e\u0301 ①② ㈱", "", "plain ascii",
               *_fixture_texts()[:40]]
    for text in samples:
        for lower in (True, False):
            assert fold_map(text, lower) == per_character(text, lower), text[:40]


def test_behaviour_and_scene_keywords_count_as_keyword_count_does():
    from dialinsight_core.config import load_settings
    from dialinsight_core.text import keyword_count

    settings = load_settings()
    from dialinsight_core.ingest.steps import classify_behaviour

    def reference(role: str, text: str) -> str:
        best, best_hits = "other", 0
        for name, keywords in settings.taxonomy.behaviours.get(role, {}).items():
            hits = sum(1 for k in dict.fromkeys(map(fold, keywords)) if keyword_count(k, text, first=True) > 0)
            if hits > best_hits:
                best, best_hits = name, hits
        return best

    turns = ["您好，请问有什么可以帮您？", "我想租一套两室一厅，预算５０００", "Hi, I'd like to see the flat on Friday?",
             "这套月租4500元，押一付三。", "我打出租车过去", "Thanks, bye!", "？"]
    for role in ("agent", "customer"):
        for text in turns:
            assert classify_behaviour(role, text, settings) == reference(role, text)
