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
