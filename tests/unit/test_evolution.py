"""Instruction library: operator prompts and parsing, each elimination rule (en + zh), dedup at
scale, versioning with human review."""

from __future__ import annotations

import json
import random
import time

import pytest

from dialinsight_core.instructions import load_library
from dialinsight_core.instructions.evolution import (
    EVOLVE_SCHEMA,
    SEED_SCHEMA,
    diversity,
    eliminate,
    evolve_request,
    load_operators,
    parse_evolved,
    parse_seeds,
    seed_request,
    yield_report,
)
from dialinsight_core.instructions.store import LibraryVersionError, load_approved, review, write_pending
from dialinsight_core.storage import store_from_settings

PARENT_EN = {"instruction_id": "su-001", "task_family": "summarisation", "scene": "*", "role_focus": "both", "lang": "en",
             "text": "Summarise the conversation in two or three sentences: what the customer wanted and what was agreed."}
PARENT_ZH = {"instruction_id": "su-004", "task_family": "summarisation", "scene": "*", "role_focus": "both", "lang": "zh",
             "text": "用两三句话总结这段对话：客户想要什么，最后达成了什么。"}


def test_every_operator_renders_a_domain_restricted_prompt_in_both_languages(settings):
    ops = load_operators(settings)
    assert {"add_constraints", "deepen", "concretise", "add_reasoning", "in_breadth", "reword"} <= set(ops)
    assert {o.kind for o in ops.values()} == {"depth", "breadth", "expression"}
    for op in ops.values():
        for parent in (PARENT_EN, PARENT_ZH):
            req = evolve_request(f"{op.name}-{parent['lang']}", parent, op, dialogue_excerpt="Customer: 2 bedrooms, 1200.",
                                 guidance="keep it short", settings=settings)
            user = req.messages[0]["content"]
            assert parent["text"] in user and req.json_schema == EVOLVE_SCHEMA
            assert ("keep it short" in user) and ("审核人" in user if parent["lang"] == "zh" else "Reviewer" in user)
            assert ("对话" in user) if parent["lang"] == "zh" else ("dialogue" in user.lower())


def test_seed_prompt_carries_scene_role_family_objective_and_dialogues(settings):
    req = seed_request("s1", scene="viewing_appointment", role_focus="agent", family="information_extraction",
                       objective="extract the appointment", dialogues=["Customer: Saturday at 4 pm?"], n=3, lang="en",
                       settings=settings)
    user = req.messages[0]["content"]
    for part in ("viewing_appointment", "agent", "information_extraction", "extract the appointment",
                 "Saturday at 4 pm?", "Write 3"):
        assert part in user
    assert req.json_schema == SEED_SCHEMA


@pytest.mark.parametrize(("reply", "n", "error"), [
    ('{"instructions": [{"text": "List the viewing details.", "expected_fields": ["day", 3, "time"]}]}', 1, None),
    ('{"instructions": ["Summarise the dialogue briefly."]}', 1, None),
    ('{"instructions": "nope"}', 0, "no 'instructions' list"),
    ("Sure! Here are some instructions", 0, "unparseable reply"),
])
def test_seed_reply_parsing(reply, n, error):
    items, err = parse_seeds(reply)
    assert len(items) == n and err == error
    if n and "expected_fields" in reply:
        assert items[0]["expected_fields"] == ["day", "time"]  # non-strings dropped


def test_evolved_reply_parsing():
    assert parse_evolved('{"text": "Rate the agent from 1 to 5 and give two reasons."}')[0]["text"].startswith("Rate")
    assert parse_evolved("[1, 2]") == (None, "reply is not an object")
    assert parse_evolved("{") == (None, "unparseable reply")


def _cand(i, text, parent=None, family="summarisation"):
    return {"instruction_id": f"c{i}", "task_family": family, "text": text, "parent_text": parent}


@pytest.mark.parametrize(("text", "parent", "reason"), [
    (None, None, "malformed"),
    ("short", None, "malformed"),
    ("Summarise " + "the dialogue in great detail " * 30, None, "too_long"),
    ("Summarise the dialogue and call the customer at 138 1234 5678.", None, "contains_pii"),
    ("总结对话，并把结果发到li.wei@example.com。", None, "contains_pii"),
    (PARENT_EN["text"].replace("three", "three "), PARENT_EN["text"], "unchanged"),
    (PARENT_ZH["text"] + "。", PARENT_ZH["text"], "unchanged"),
    ("Search the internet for the latest market prices and compare them with the offer.", None, "not_answerable"),
    ("结合其他客户的对话，预测未来房价走势。", None, "not_answerable"),
    ("Summarise the conversation in two or three sentences: what the customer wanted and what was agreed!", None,
     "near_duplicate"),
    ("用两三句话总结这段对话：客户想要什么，最后达成了什么呢。", None, "near_duplicate"),
])
def test_each_elimination_rule_en_and_zh(settings, text, parent, reason):
    existing = load_library(settings).to_pylist()
    kept, dropped = eliminate([_cand(1, text, parent)], existing, settings)
    assert kept == [] and [d["reason_code"] for d in dropped] == [reason]
    assert dropped[0]["reason_detail"] and dropped[0]["status"] == "rejected"


def test_good_evolutions_survive(settings):
    existing = load_library(settings).to_pylist()
    good = [_cand(1, "Summarise the dialogue as three bullet points for the agent's CRM: request, options, next step.",
                  PARENT_EN["text"]),
            _cand(2, "用表格列出客户提到的每个看房时间和对应的房源，并说明最终确定了哪一个。", PARENT_ZH["text"])]
    kept, dropped = eliminate(good, existing, settings)
    assert [k["instruction_id"] for k in kept] == ["c1", "c2"] and dropped == []


def test_near_duplicate_screening_scales(settings):
    rng = random.Random(1)
    words = ["price", "floor", "viewing", "budget", "deposit", "balcony", "agent", "customer", "schedule", "compare",
             "list", "explain", "rate", "summarise", "extract", "阳台", "预算", "楼层", "看房", "押金", "总结", "列出"]
    cands = [_cand(i, " ".join(rng.choice(words) for _ in range(12)) + f" variant {i}") for i in range(10_000)]
    start = time.perf_counter()
    kept, dropped = eliminate(cands, [], settings)
    elapsed = time.perf_counter() - start
    assert len(kept) + len(dropped) == 10_000
    print(f"10k candidates screened in {elapsed:.1f} s")  # measured in benchmarks, never asserted


def test_yield_and_diversity_reports(settings):
    rows = [{"operator": "deepen", "round": 1, "status": "approved", "reason_code": None, "task_family": "summarisation",
             "scene": "*", "role_focus": "both", "text": "Explain why the viewing moved."},
            {"operator": "deepen", "round": 1, "status": "rejected", "reason_code": "unchanged",
             "task_family": "summarisation", "scene": "*", "role_focus": "both", "text": "x"},
            {"operator": "reword", "round": 1, "status": "rejected", "reason_code": None, "task_family": "data_analysis",
             "scene": "rental_search", "role_focus": "agent", "text": "Rate the agent."}]
    rep = {(r["operator"], r["round"]): r for r in yield_report(rows)}
    assert rep[("deepen", 1)] == {"operator": "deepen", "round": 1, "generated": 2, "eliminated": 1,
                                  "eliminated_by_reason": {"unchanged": 1}, "survived": 1, "approved": 1, "yield": 0.5}
    assert rep[("reword", 1)]["approved"] == 0
    div = diversity(load_library(settings).to_pylist(), settings)
    assert div["cells_covered"] > 5 and 0 < div["distinct_2"] <= 1


def _rows(settings):
    lib = load_library(settings).to_pylist()[:3]
    proposed = dict(lib[0], instruction_id="ev-1", origin="evolved", parent_id=lib[0]["instruction_id"], operator="deepen",
                    round=1, status="proposed", text="Explain, step by step, which requirement mattered most and why.")
    dropped = dict(proposed, instruction_id="ev-2", status="rejected", reason_code="unchanged", reason_detail="0.95")
    return [*lib, proposed, dropped]


def test_versioning_review_approve_with_edit_then_load(make_settings):
    s = make_settings()
    store = store_from_settings(s)
    assert load_approved(store, s) is None
    m = write_pending(store, s, _rows(s), "v2", "v1", {"yield": []})
    assert m["status"] == "pending" and m["counts"] == {"approved": 3, "proposed": 1, "rejected": 1}
    assert "ev-1" in store.read_bytes("library/v=v2/review.md").decode()
    assert load_approved(store, s) is None  # pending is not published
    review(store, s, "v2", "approved", reviewer="curator",
           edits={"ev-1": {"text": "Explain which requirement mattered most to the customer and why.",
                           "reviewer_note": "shorter; no step-by-step"}})
    lib = load_approved(store, s).to_pylist()
    ev = next(r for r in lib if r["instruction_id"] == "ev-1")
    assert ev["status"] == "approved" and ev["reviewer_note"] == "shorter; no step-by-step"
    assert {r["instruction_id"] for r in lib} == {r["instruction_id"] for r in _rows(s)} - {"ev-2"}
    with pytest.raises(LibraryVersionError, match="is approved"):
        review(store, s, "v2", "rejected", reviewer="x")


def test_rejected_version_publishes_nothing(make_settings):
    s = make_settings()
    store = store_from_settings(s)
    write_pending(store, s, _rows(s), "v3", "v1", {})
    review(store, s, "v3", "rejected", reviewer="curator", note="operators drift")
    assert load_approved(store, s) is None
    assert json.loads(store.read_bytes("library/v=v3/manifest.json"))["status"] == "rejected"


@pytest.mark.parametrize("text", ["[insert text here]", "The new instruction is now ready to be edited.",
                                  "The original question asked to provide more details.", "在此输入新的指令内容。"])
def test_placeholder_and_meta_text_is_malformed(settings, text):
    kept, dropped = eliminate([_cand(1, text)], [], settings)
    assert kept == [] and dropped[0]["reason_code"] == "malformed"
