"""Each rule dimension has a good and a bad case, in English and Chinese; removing a check fails a test."""

from __future__ import annotations

import json

import pytest

from dialinsight_core.quality import rules

DIALOGUE_EN = ("I want a 1 bedroom apartment on floor 15 or higher. What is your budget? 3996 credits. "
               "I found a flat in One on Center Apartments near a school, 460 credits, south balcony.")
DIALOGUE_ZH = "我想租一套两室一厅，预算每月4500元。阳光花园有一套，89平方米，在12楼，朝南阳台。"
SCHEMA = json.loads(open("config/output_schemas/summarisation.json").read())


def test_schema_validity():
    assert rules.score_schema_valid(json.dumps({"summary": "x", "key_points": []}), SCHEMA) == 1.0
    assert rules.score_schema_valid(json.dumps({"summary": "x"}), SCHEMA) == 0.0  # required key missing
    assert rules.score_schema_valid(None, SCHEMA) == 0.0  # unparseable


def test_non_empty_and_truncation():
    assert rules.score_non_empty("   \n ") == 0.0
    assert rules.score_non_empty("ok 1") == 1.0
    assert rules.score_not_truncated("length") == 0.0
    assert rules.score_not_truncated("stop") == 1.0


def test_length_bounds():
    assert rules.score_length("x" * 50, 20, 100) == 1.0
    assert rules.score_length("x" * 5, 20, 100) == 0.25
    assert rules.score_length("x" * 400, 20, 100) == 0.25


@pytest.mark.parametrize(("text", "lang", "score"), [
    ("The customer wants a one bedroom flat.", "en", 1.0),
    ("客户想租一套两室一厅。", "zh", 1.0),
    ("The customer wants a one bedroom flat.", "zh", 0.0),
    ("客户想租一套两室一厅。", "en", 0.0),
])
def test_language_match(text, lang, score):
    assert rules.score_lang_match(text, lang) == score


def test_repetition_en_and_zh():
    assert rules.score_repetition("The customer wants a flat on a high floor with a south balcony.") == 1.0
    assert rules.score_repetition("the apartment is nice " * 20) < 0.1
    assert rules.score_repetition("客户想租一套两室一厅，预算四千五。") == 1.0
    assert rules.score_repetition("客户房子" * 30) < 0.1  # no whitespace: CJK characters are tokens


def test_copy_of_dialogue():
    assert rules.score_copy("The customer looks for a high flat and the agent offers one.", DIALOGUE_EN, 8) == 1.0
    assert rules.score_copy(DIALOGUE_EN, DIALOGUE_EN, 8) == 0.0
    assert rules.score_copy(DIALOGUE_ZH, DIALOGUE_ZH, 8) == 0.0
    assert rules.score_copy("客户预算每月四千五，经纪人推荐了阳光花园。", DIALOGUE_ZH, 8) > 0.8


def test_grounding_catches_invented_numbers_and_topics():
    ok = "The customer wants a 1 bedroom apartment on floor 15 with a budget of 3996 credits."
    assert rules.score_grounding(ok, DIALOGUE_EN, DIALOGUE_EN) == 1.0
    invented_price = "The customer wants a 1 bedroom apartment for 9999 credits."
    assert rules.score_grounding(invented_price, DIALOGUE_EN, DIALOGUE_EN) <= 0.75
    off_topic = "Dream vacation with catering services and a luxury yacht cruise."
    assert rules.score_grounding(off_topic, DIALOGUE_EN, DIALOGUE_EN) < 0.6
    # character bigrams straddle word boundaries ("户预"), so grounded Chinese scores high, not 1.0
    assert rules.score_grounding("客户预算每月4500元，想要朝南阳台。", DIALOGUE_ZH, DIALOGUE_ZH) >= 0.8
    assert rules.score_grounding("客户预算每月9000元，想要海景别墅和游艇。", DIALOGUE_ZH, DIALOGUE_ZH) < 0.6


def test_content_text_reads_json_values():
    out = json.dumps({"summary": "A flat", "key_points": ["floor 15", "3996 credits"], "rating": 4})
    assert rules.content_text(out, out) == "A flat\nfloor 15\n3996 credits\n4"
    assert rules.content_text("raw text", None) == "raw text"


def test_overall_is_weighted_mean_in_unit_interval():
    dims = dict.fromkeys(rules.DIMENSIONS, 1.0)
    weights = dict.fromkeys(rules.DIMENSIONS, 1.0)
    assert rules.overall(dims, weights) == 1.0
    dims["schema_valid"] = 0.0
    weights["schema_valid"] = 3.0
    assert rules.overall(dims, weights) == pytest.approx(7 / 10)
