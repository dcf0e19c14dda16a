from __future__ import annotations

import json

from dialinsight_core.ingest import detect_lang, ingest, parse_star
from tests.conftest import FIXTURES, STAR


def test_star_adapter_keeps_only_real_turns():
    raw = parse_star((STAR / "dialogues" / "3.json").read_bytes(), "dialogues/3.json")
    manifest = {json.loads(line)["dialogue_id"]: json.loads(line) for line in (STAR / "manifest.jsonl").open()}
    assert len(raw.turns) == manifest[3]["n_user_wizard_events"]
    assert {r for r, _, _ in raw.turns} == {"agent", "customer"}
    texts = [t for _, t, _ in raw.turns]
    # the wizard's unsent draft ("request_suggestions") must not become a turn
    assert "Any specific points of interest?" not in texts
    assert raw.turns[0] == ("customer", "Hello!", {"action": "utter", "event_idx": 0})
    assert raw.scene_hints == ["apartment_search"]


def test_ingest_sample_scene_map_and_conservation(make_settings):
    s = make_settings()
    res = ingest(s, max_dialogues=25)
    st = res.stats
    assert st["files_read"] == 25 == st["dialogues_kept"] + st["quarantined"]
    assert set(res.dialogues.column("scene").to_pylist()) <= {"rental_search", "viewing_appointment"}
    assert res.turns.num_rows == sum(res.dialogues.column("n_turns").to_pylist())
    assert set(res.turns.column("lang").to_pylist()) == {"en"}


def test_broken_files_are_quarantined_with_reasons(make_settings):
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([
        {"name": "broken", "adapter": "star", "uri": str(FIXTURES / "star_broken")}]))
    res = ingest(s)
    reasons = {json.loads(r["record"])["file"]: r["reason_code"] for r in res.quarantined.to_pylist()}
    assert reasons == {
        "dialogues/bad-json.json": "unreadable_json",
        "dialogues/bad-encoding.json": "bad_encoding",
        "dialogues/no-events.json": "malformed_structure",
        "dialogues/list-top.json": "malformed_structure",
        "dialogues/single-role.json": "single_role",
        "dialogues/too-few.json": "too_few_turns",
        "dialogues/non-text.json": "non_text_turn",
        "dialogues/huge-turn.json": "turn_too_long",
        "dialogues/ok-1.json": "duplicate",  # sorted order: ok-1-copy.json is read first
    }
    assert res.dialogues.column("dialogue_id").to_pylist() == ["broken:ok-1-copy"]
    assert res.stats["files_read"] == 10 == res.dialogues.num_rows + res.quarantined.num_rows
    assert all(r["reason_detail"] for r in res.quarantined.to_pylist())


def test_chinese_transcripts(make_settings):
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([
        {"name": "zh", "adapter": "star", "uri": str(FIXTURES / "star_zh"),
         "scene_map": {"apartment_schedule": "viewing_appointment"}}]))
    res = ingest(s)
    d = {r["dialogue_id"]: r for r in res.dialogues.to_pylist()}
    assert {r["lang"] for r in d.values()} == {"zh"}
    assert d["zh:zh-001"]["scene"] == "viewing_appointment"  # from the source's task
    assert d["zh:zh-002"]["scene"] == "rental_search"  # from taxonomy keywords (租, 预算, 户型)
    assert d["zh:zh-003"]["scene"] == "purchase_consultation"  # 买, 首付, 贷款
    turns = [t for t in res.turns.to_pylist() if t["dialogue_id"] == "zh:zh-001"]
    assert [t["role"] for t in turns][:3] == ["customer", "agent", "customer"]  # UserGuide dropped
    assert not any("草稿" in t["text"] for t in turns)  # request_suggestions draft dropped


def test_detect_lang():
    assert detect_lang("I want a flat") == "en"
    assert detect_lang("我想租一套两室一厅，预算4500元") == "zh"
    assert detect_lang("1234 !!") == "und"
