"""Grounding layer: facts in the answer must be in the dialogue; coverage of what the instruction asks.

Every fact kind (number, price, count, date, time, weekday, amenity, place/property name) has a
supported and an invented case, in English and Chinese.
"""

from __future__ import annotations

import json

import pytest

from dialinsight_core.quality.grounding import extract_facts, score_coverage, score_grounding, zh_numeral

AMENITIES = ("balcony", "elevator", "gym", "pool", "parking", "阳台", "电梯", "健身房", "车位")
DIALOGUE_EN = ("Customer: I need two bedrooms, my budget is $1,200 a month. Can I see it on Tuesday at 3 pm?\n"
               "Agent: Maple Court has a 2 bedroom flat with a balcony for 1150 per month on the 5th floor. "
               "The viewing fee is 20 dollars. It is free from May 3.")
DIALOGUE_ZH = ("客户：我想租两室一厅，预算每月4500元，周二下午三点能看房吗？\n"
               "经纪人：阳光花园有一套，89平方米，在12楼，朝南阳台，押金1.5万。")
PROMPT = "List every requirement the customer states."


@pytest.mark.parametrize("answer", [
    "The customer wants 2 bedrooms with a budget of 1200 dollars.",           # number words -> digits
    "Maple Court offers a 2 bedroom flat for $1,150 per month.",              # price with separators
    "The viewing is on Tuesday at 15:00.",                                    # 3 pm == 15:00
    "The flat has a balcony and is on floor 5.",                              # amenity + ordinal
    "It is free from May 3 and the viewing fee is $20.",                      # date + fee
])
def test_supported_facts_en(answer):
    score, unsupported = score_grounding(answer, DIALOGUE_EN, PROMPT, AMENITIES)
    assert unsupported == [] and score > 0.6


@pytest.mark.parametrize(("answer", "fact"), [
    ("The customer wants 4 bedrooms with a budget of 1200 dollars.", "num:4"),     # count
    ("Maple Court offers the flat for $1,450 per month.", "num:1450"),             # price
    ("The viewing is on Tuesday at 4pm.", "time:4:00"),                           # time
    ("The viewing is on Friday at 3pm.", "weekday:4"),                            # weekday
    ("The flat has a balcony and a gym.", "amenity:gym"),                         # amenity
    ("The agent offers a flat in Oak Tower.", "name:Oak Tower"),                  # place / property name
    ("It is free from May 9.", "num:9"),                                          # date
])
def test_invented_facts_en_are_caught(answer, fact):
    score, unsupported = score_grounding(answer, DIALOGUE_EN, PROMPT, AMENITIES)
    assert fact in unsupported and score <= 0.5


@pytest.mark.parametrize("answer", [
    "客户想租2室1厅，预算4500元。",          # 两室一厅 == 2室1厅
    "周二15:00看房。",                       # 下午三点 == 15:00
    "阳光花园89平米，12楼，有阳台。",         # place + area + floor + amenity
    "押金15000元。",                         # 1.5万 == 15000
    "客户预算四千五百元。",                    # Chinese numerals
])
def test_supported_facts_zh(answer):
    score, unsupported = score_grounding(answer, DIALOGUE_ZH, "列出客户的要求", AMENITIES)
    assert unsupported == [] and score > 0.6, unsupported


@pytest.mark.parametrize(("answer", "fact"), [
    ("客户想租三室一厅。", "num:3"),
    ("客户预算每月9000元。", "num:9000"),
    ("周五下午三点看房。", "weekday:4"),
    ("周二上午十点看房。", "time:10:00"),
    ("房子有电梯和阳台。", "amenity:电梯"),
    ("海景花园有一套。", "place:海景花园"),
])
def test_invented_facts_zh_are_caught(answer, fact):
    score, unsupported = score_grounding(answer, DIALOGUE_ZH, "列出客户的要求", AMENITIES)
    assert fact in unsupported and score <= 0.5


def test_off_topic_answer_scores_low_without_any_fact():
    score, unsupported = score_grounding("Dream vacation with catering services and a luxury yacht cruise.",
                                         DIALOGUE_EN, PROMPT, AMENITIES)
    assert unsupported == [] and score < 0.6


def test_numbers_in_the_instruction_support_the_answer():
    _score, unsupported = score_grounding("Service rating: 4 out of 5.", DIALOGUE_EN, "Rate it from 1 to 5.", AMENITIES)
    assert "num:5" not in unsupported


def test_zh_numerals():
    assert [zh_numeral(t) for t in ("三", "十二", "两千五", "三百零五", "一万二")] == [3, 12, 2500, 305, 12000]


def test_answer_facts_are_strict_dialogue_facts_generous():
    assert "num:1" not in extract_facts("客户看了一个房子")  # grammar, not a count
    assert "num:1" in extract_facts("客户看了一个房子", generous=True)


SCHEMA = {"type": "object", "properties": {"findings": {"type": "array"}, "conclusion": {"type": "string"},
                                           "rating": {"type": "integer"}}, "required": ["findings", "conclusion"]}


def test_coverage_of_expected_fields():
    expected = ["name|apartment", "price|rent", "floor|level", "amenit|balcony|$not_mentioned"]
    full = {"fields": [{"name": "apartment", "value": "Maple Court"}, {"name": "rent", "value": "1150"},
                       {"name": "floor", "value": "5"}, {"name": "balcony", "value": "yes"}]}
    text = json.dumps(full)
    assert score_coverage(text, text, expected, SCHEMA) == (1.0, [])
    half = {"fields": [{"name": "apartment", "value": "Maple Court"}, {"name": "rent", "value": "1150"}]}
    score, missing = score_coverage(json.dumps(half), json.dumps(half), expected, SCHEMA)
    assert score == 0.5 and missing == ["floor|level", "amenit|balcony|$not_mentioned"]
    honest = dict(half, not_mentioned=["floor", "amenities"])  # saying it is not in the dialogue covers it
    assert score_coverage(json.dumps(honest), json.dumps(honest), expected, SCHEMA)[0] == 1.0


def test_coverage_json_key_and_chinese():
    assert score_coverage("服务不错", '{"findings": ["服务不错"], "conclusion": "好"}', ["$rating"], SCHEMA) == (0.0, ["$rating"])
    assert score_coverage("服务不错", '{"findings": ["x"], "conclusion": "y", "rating": 4}', ["$rating"], SCHEMA)[0] == 1.0
    assert score_coverage("客户预算4500元，租金4300元", None, ["budget|预算", "price|租金"], SCHEMA)[0] == 1.0


def test_coverage_without_expected_fields_uses_required_keys():
    assert score_coverage("x", '{"findings": ["a"], "conclusion": "b"}', [], SCHEMA) == (1.0, [])
    assert score_coverage("x", '{"findings": [], "conclusion": "b"}', [], SCHEMA) == (0.5, ["findings"])


def test_capitalised_words_at_line_starts_are_not_names():
    # one JSON value per line: "The" ending one value and "Main" starting the next are not a name
    text = "Points raised by the customer: budget. The\nMain topics were the flat\nI'm sure\n1. Viewing is fine"
    assert score_grounding(text, DIALOGUE_EN, PROMPT, AMENITIES)[1] == []
