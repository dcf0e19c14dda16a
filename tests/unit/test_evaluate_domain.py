"""Domain scoring of a fine-tuned model's answers: the cascade and the reference measures (en + zh)."""

from __future__ import annotations

import json

import pytest

from dialinsight_core.evaluate import domain
from dialinsight_core.instructions import load_output_schemas
from dialinsight_core.runs.evaluate import score_domain


def test_token_f1_counts_words_in_english_and_characters_in_chinese():
    assert domain.token_f1("the viewing is on Saturday", "Viewing on Saturday") == pytest.approx(2 * 0.6 * 1.0 / 1.6)
    assert domain.token_f1("周六上午看房", "周六看房") == pytest.approx(2 * (4 / 6) * 1.0 / (4 / 6 + 1))
    assert domain.token_f1("", "") == 1.0 and domain.token_f1("x", "") == 0.0


def test_reference_score_matches_values_exactly_and_text_by_overlap():
    ref = json.dumps({"budget": "2000 euros", "rooms": 2, "notes": "the customer wants a quiet flat near the station"})
    same = domain.reference_score(ref, ref)
    assert same == 1.0
    part = domain.reference_score(json.dumps({"budget": "2000 Euros", "rooms": 3, "notes": "a quiet flat"}), ref)
    notes = domain.token_f1("a quiet flat", "the customer wants a quiet flat near the station")
    assert part == pytest.approx((1.0 + 0.0 + notes) / 3, abs=1e-4)
    assert domain.reference_score(None, ref) == 0.0  # no JSON: every field missed
    assert domain.reference_score(ref, None) is None  # nothing to compare against
    zh = json.dumps({"预算": "两千", "区域": "浦东新区靠近地铁站的两居室"}, ensure_ascii=False)
    assert domain.reference_score(zh, zh) == 1.0


def test_parse_json_takes_fenced_or_embedded_objects():
    assert json.loads(domain.parse_json('```json\n{"a": 1}\n```')) == {"a": 1}
    assert json.loads(domain.parse_json('Here it is: {"a": "周六"} thanks')) == {"a": "周六"}
    assert domain.parse_json("no json here") is None and domain.parse_json("[1, 2]") is None


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_cascade_prefers_a_grounded_schema_valid_answer(settings, lang):
    dialogue = {"en": "Customer: I want to view the flat on Saturday at 9am.\nAgent: Saturday at 9am is booked.",
                "zh": "客户：我想周六上午九点看房。\n经纪人：好的，周六上午九点已经为您预约。"}[lang]
    summary = {"en": "The customer booked a flat viewing for Saturday at 9am with the agent.",
               "zh": "客户预约了周六上午九点看房，经纪人已经确认了预约。"}[lang]
    points = {"en": ["Viewing on Saturday at 9am", "The agent confirmed the booking"],
              "zh": ["周六上午九点看房", "经纪人确认了预约"]}[lang]
    rec = {"prompt_id": "p1", "task_family": "summarisation", "lang": lang, "output_schema_id": "summarisation",
           "instruction_text": "Summarise the dialogue.",
           "messages": [{"role": "system", "content": "You label real-estate dialogues."},
                        {"role": "user", "content": f"{dialogue}\n\nSummarise the dialogue."}],
           "output_json": json.dumps({"summary": summary, "key_points": points}, ensure_ascii=False)}
    schemas = load_output_schemas(settings)
    good = json.dumps({"summary": summary, "key_points": points}, ensure_ascii=False)
    bad = "I am sorry, I cannot help with that. I cannot help with that. I cannot help with that."
    rows = score_domain([rec, rec], [(good, "stop"), (bad, "stop")], settings, schemas)
    assert rows[0]["json_valid"] and not rows[1]["json_valid"]
    assert rows[0]["cheap_score"] > rows[1]["cheap_score"] and rows[0]["passes"] and not rows[1]["passes"]
    assert rows[0]["reference_score"] == 1.0 and rows[1]["reference_score"] == 0.0
    s = domain.summary(rows)
    assert s["n"] == 2 and s["pass_rate"] == 0.5 and s["by_task_family"]["summarisation"]["n"] == 2
