"""Domain per source (issue 13, item 8): the system prompt's domain, the role names and the scene
taxonomy come from config per source; real estate is only the default. Chinese scene keywords
respect word boundaries."""

from __future__ import annotations

import json

from dialinsight_core import schemas
from dialinsight_core.config import SourceSettings
from dialinsight_core.ingest.steps import classify_behaviour, classify_scene_with_source
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.prompts import build_prompts

HOTEL = {"name": {"en": "hotel", "zh": "酒店"},
         "role_names": {"en": {"agent": "Front desk", "customer": "Guest"}, "zh": {"agent": "前台", "customer": "客人"}},
         "scenes": {"booking": {"description": "a guest books a room", "keywords": ["预订", "订", "入住", "book", "room"]},
                    "complaint": {"description": "a guest complains", "keywords": ["投诉", "噪音", "complain"]},
                    "other": {"description": "anything else"}},
         "default_scene": "other"}


def _hotel_settings(make_settings, tmp_path):
    return make_settings(
        DIALINSIGHT__DOMAINS=json.dumps({"real_estate": {"name": {"en": "real-estate", "zh": "房地产"}, "role_names": {
            "en": {"agent": "Agent", "customer": "Customer"}, "zh": {"agent": "经纪人", "customer": "客户"}}}, "hotel": HOTEL},
            ensure_ascii=False),
        DIALINSIGHT__SOURCES=json.dumps([{"name": "hotel_crm", "adapter": "jsonl", "uri": str(tmp_path), "domain": "hotel"}]))


def test_prompts_speak_of_the_sources_domain_and_roles(make_settings, tmp_path):
    s = _hotel_settings(make_settings, tmp_path)
    turns = [{"dialogue_id": "hotel_crm:1", "source": "hotel_crm", "turn_idx": i, "role": r, "text": t, "lang": "zh",
              "scene": "other", "behaviour": "other", "meta": "{}"}
             for i, (r, t) in enumerate([("customer", "你好，我想订10月1日入住的大床房，住两晚。"),
                                         ("agent", "您好，大床房每晚680元，含两份早餐。"), ("customer", "好的，那就订吧。")])]
    dialogues = [{"dialogue_id": "hotel_crm:1", "source": "hotel_crm", "scene": "other", "n_turns": 3, "lang": "zh",
                  "pii_counts": "{}", "content_hash": "h", "source_file": "f", "scene_source": "default"}]
    out = build_prompts(schemas.table(schemas.DIALOGUES, dialogues), schemas.table(schemas.TURNS, turns), load_library(s),
                        load_output_schemas(s), s, "2026-11-25").prompts
    for p in out.to_pylist():
        system, user = (m["content"] for m in json.loads(p["messages"]))
        assert "酒店" in system and "前台" in system and "客人" in system
        assert "房地产" not in system and "经纪人" not in system  # (the instruction is the library's own text)
        assert "前台: 您好，大床房每晚680元" in user and "客人: 你好" in user


def test_scenes_come_from_the_sources_domain(make_settings, tmp_path):
    s = _hotel_settings(make_settings, tmp_path)
    src = s.sources[0]
    assert classify_scene_with_source("隔壁噪音太大了，我要投诉。", [], src, s) == ("complaint", "keywords")
    assert classify_scene_with_source("你好。", [], src, s) == ("other", "default")


def test_chinese_scene_keywords_respect_word_boundaries(settings):
    src = SourceSettings(name="zh", uri="x")
    assert classify_scene_with_source("我想租一套两室一厅", [], src, settings)[0] == "rental_search"
    # 租 inside 出租车 (taxi) is no rental
    assert classify_scene_with_source("我打出租车过去，大概二十分钟到。", [], src, settings)[1] == "default"
    assert classify_behaviour("agent", "请问您的电话号码是多少？", settings) == "ask_identity"  # 电话 starts 电话号码
