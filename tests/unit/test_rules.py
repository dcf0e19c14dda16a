"""Each rule dimension has a good and a bad case, in English and Chinese; removing a check fails a test."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert rules.score_not_truncated("length")[0] == 0.0
    assert rules.score_not_truncated("stop") == (1.0, None)


SUMMARY_SCHEMA = json.loads(Path("config/output_schemas/summarisation.json").read_text(encoding="utf-8"))
IE_SCHEMA = json.loads(Path("config/output_schemas/information_extraction.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("text", "why"), [
    ('{"summary": "客户想在浦东租一套一室一厅，预算每月', "unfinished JSON"),  # cut by a proxy, reported "stop"
    ('{"summary": "The customer wanted a 1-bedroom flat in Oakland for abo", "key_points": []}', "summary ends mid-sentence"),
    ('{"summary": "客户想在浦东租一套一室一厅，预算每", "key_points": ["预算5200元"]}', "summary ends mid-sentence"),
])
def test_truncation_is_read_from_the_content_whatever_the_finish_reason(text, why):
    from dialinsight_core.llm import parse_json

    score, hit = rules.score_not_truncated("stop", text, parse_json(text), rules.marked_keys(SUMMARY_SCHEMA, "prose"))
    assert score == 0.0 and why in hit["cut"]


def test_finished_answers_are_not_truncated():
    for text in ('{"summary": "客户想租房。", "key_points": []}', '{"summary": "The viewing is on Friday.", "key_points": []}',
                 '{"summary": "他说：“好的”", "key_points": ["未完"]}'):  # a key point need not be a sentence
        assert rules.score_not_truncated("stop", text, text, rules.marked_keys(SUMMARY_SCHEMA, "prose")) == (1.0, None)


def test_language_and_echo_read_values_not_schema_field_names():
    """A clean Chinese extraction with English field names (or the instruction's own Chinese field
    names) is Chinese and does not echo the instruction."""
    ctx = rules.RuleContext("information_extraction", "zh", "我想在浦东租一套一室一厅，预算每月5200元左右。",
                            "列出客户提出的所有房源要求（如户型、预算、楼层、位置），每项给出字段名和客户给出的值。", IE_SCHEMA,
                            20, 1200, form="phrases")
    for names in (("layout", "budget", "location"), ("户型", "预算", "位置")):
        out = json.dumps({"fields": [{"name": n, "value": v} for n, v in zip(names, ("一室一厅", "每月5200元左右", "浦东"),
                                                                             strict=True)]}, ensure_ascii=False)
        dims, findings = rules.score_record({"output_text": out, "output_json": out, "finish_reason": "stop"}, ctx, 8)
        assert dims["lang_match"] == 1.0 and dims["echo"] == 1.0, (names, findings)


@pytest.mark.parametrize(("form", "values", "ok"), [
    ("phrases", ["一室一厅", "每月5200元左右"], True),
    ("phrases", ["好的，已经为您订好了。具体入住时间我马上帮您确认"], False),  # a reply pasted into a field
    ("report", ["客户想租一室一厅，经纪人约了周六看房。"], True),
    ("report", ["押金是5000元，周六我在门口等您。"], False),  # a reply instead of a summary
    ("reply", ["押金是5000元，周六我在门口等您。"], True),
    ("reply", ["客户想租一室一厅，经纪人约了周六看房。"], False),  # a summary instead of a reply
    ("report", ["The agent said: \"see you Friday\"."], True),  # quoting the dialogue is fine
    ("reply", ["I'll see you on Friday at 3pm."], True),
    ("reply", ["The customer wanted a flat and the agent booked a viewing."], False),
])
def test_task_form(form, values, ok):
    assert (rules.score_task_form(values, form)[0] == 1.0) is ok


def test_repetition_inside_one_value_is_caught():
    content = "1\nOakland Oakland Oakland Oakland Oakland Oakland Oakland Oakland\nabout $5200 a month"
    assert rules.score_repetition(content) == 0.0
    assert rules.score_repetition("客服先向客户致歉" * 8 + "\n确认了购买价格和保修状态") < 0.5


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


def test_content_text_reads_json_values():
    out = json.dumps({"summary": "A flat", "key_points": ["floor 15", "3996 credits"], "rating": 4})
    assert rules.content_text(out, out) == "A flat\nfloor 15\n3996 credits\n4"
    assert rules.content_text("raw text", None) == "raw text"


def test_repetition_catches_character_loops():
    assert rules.score_repetition("ok" + "!" * 30) == 0.0
    assert rules.score_repetition("哈" * 20) == 0.0
    assert rules.score_repetition("abcabcabcabcabcabcabcabc") == 0.0  # one token, still a loop
    assert rules.score_repetition("The price is 10000000 per year.") == 1.0  # long numbers are not loops


ECHO_INSTR = "Summarise the conversation in two or three sentences: what the customer wanted and what was agreed."


def test_echo_of_the_instruction_en_and_zh():
    assert rules.score_echo("The customer wanted a one bedroom flat; a viewing was booked for Friday.", ECHO_INSTR, 4)[0] == 1.0
    score, share = rules.score_echo(ECHO_INSTR, ECHO_INSTR, 4)
    assert score == 0.0 and share == 1.0
    zh_instr = "用两三句话总结这段对话：客户想要什么，最后达成了什么。"
    assert rules.score_echo("客户想租两室一厅，约好周二下午看房。", zh_instr, 4)[0] > 0.8
    assert rules.score_echo("总结这段对话：客户想要什么，最后达成了什么。", zh_instr, 4)[0] < 0.2


@pytest.mark.parametrize("text", [
    "As an AI language model, I cannot access the dialogue.",
    "I'm sorry, I cannot help with this request.",
    "I cannot complete this task without more information.",
    "There is no dialogue provided.",
    "作为一个AI语言模型，我无法回答这个问题。",
    "抱歉，我无法完成这个任务。",
])
def test_refusal_caught_en_and_zh(text):
    score, hit = rules.score_refusal(text)
    assert score == 0.0 and hit["kind"] == "refusal"


@pytest.mark.parametrize("text", [
    "The customer wants a flat. I hope this helps!",
    "Certainly! Here is the JSON you asked for: the customer wants a flat.",
    "The customer wants a flat. Let me know if you need anything else.",
    "以下是您要求的JSON：客户想租房。",
    "客户想租两室一厅。希望以上信息对您有帮助。",
])
def test_boilerplate_caught_en_and_zh(text):
    score, hit = rules.score_refusal(text)
    assert score == 0.0 and hit["kind"] == "boilerplate"


@pytest.mark.parametrize("text", [
    "I'm sorry, that flat was rented yesterday, but I can show you a similar one.",  # the agent's voice
    "I cannot lower the rent further, but the deposit can be split.",
    "抱歉，这套房子已经租出去了，我可以带您看类似的。",
    "我不能再降价了，不过押金可以分两次付。",
    "The customer wants a one bedroom flat near a school.",
])
def test_refusal_precision_agent_speech_is_not_a_refusal(text):
    assert rules.score_refusal(text) == (1.0, None)


def test_boilerplate_exempt_when_the_family_speaks_as_the_agent():
    reply = "The flat is available from May. Let me know if you have any other questions."
    assert rules.score_refusal(reply, boilerplate=False)[0] == 1.0
    assert rules.score_refusal(reply, boilerplate=True)[0] == 0.0


@pytest.mark.parametrize(("text", "kind"), [
    ("Call the customer on 138 1234 5678.", "phone"),
    ("客户手机13812345678，请回电。", "phone"),
    ("The agent's office number is (415) 555-2671.", "phone"),
    ("客户身份证号11010519491231002X。", "id_number"),
    ("Send the contract to li.wei@example.com.", "email"),
    ("The flat is unit 12B on the fifth floor.", "unit_number"),
    ("房子在3号楼2单元501室。", "unit_number"),
])
def test_pii_leak_caught_en_and_zh(text, kind):
    score, hit = rules.score_pii_leak(text)
    assert score == 0.0 and kind in hit


@pytest.mark.parametrize("text", [
    "Rent is $1,200 per month for 89 square metres on floor 15.",
    "两室一厅，89㎡，12楼，月租4500元，2024年5月3日起租。",
    "3室1厅，总价350万，首付105万。",
    "The viewing is on 2024-05-03 at 3pm; the budget is 3500-4000.",
    "Contact: [PHONE], [EMAIL]",  # placeholders from redaction are not PII
])
def test_pii_precision_domain_facts_survive(text):
    assert rules.score_pii_leak(text) == (1.0, None)


def test_score_record_returns_every_rule_dimension_with_evidence():
    label = {"output_text": '{"summary": "As an AI, call 13812345678", "key_points": []}',
             "output_json": '{"key_points": [], "summary": "As an AI, call 13812345678"}', "finish_reason": "stop"}
    ctx = rules.RuleContext("summarisation", "en", DIALOGUE_EN, ECHO_INSTR, SCHEMA, 5, 500)
    dims, findings = rules.score_record(label, ctx, 8)
    assert set(dims) == set(rules.RULE_DIMENSIONS) and all(0 <= v <= 1 for v in dims.values())
    assert dims["refusal"] == 0.0 and dims["pii_leak"] == 0.0
    assert findings["pii_leak"] == {"phone": ["13812345678"]} and findings["refusal"]["kind"] == "refusal"


def test_no_pii_false_positives_on_the_star_sample(settings):
    """Precision on real data: 4,980 real apartment-rental turns (prices, floors, times) hold no PII."""
    from dialinsight_core.ingest import ingest
    from dialinsight_core.pii import find_pii

    texts = ingest(settings).turns.column("text").to_pylist()
    assert len(texts) > 1000
    assert [m for t in texts for m in find_pii(t)] == []
