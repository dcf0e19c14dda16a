"""The instructions stages against the test OpenAI server: seeds -> evolution -> elimination ->
pending version -> review; then the nightly prompt stage uses the approved version."""

from __future__ import annotations

import json

from dialinsight_core.inference.openai_engine import OpenAIEngine
from dialinsight_core.instructions.store import load_approved
from dialinsight_core.runs.instructions import export_for_review, finalise, generate
from dialinsight_core.runs.nightly import RunContext, run_build_prompts, run_ingest
from tests.support.fake_openai import FakeOpenAIServer


def _settings(make_settings, srv, **env):
    return make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
                         DIALINSIGHT__ENGINE__MAX_RETRIES="0", DIALINSIGHT__INSTRUCTIONS__SEEDS_PER_CELL="2",
                         DIALINSIGHT__INSTRUCTIONS__MAX_PARENTS="3", DIALINSIGHT__INSTRUCTIONS__SEED_FAMILIES="[summarisation]",
                         **env)


def _run(make_settings, fake_openai, decision, params=None):
    srv: FakeOpenAIServer = fake_openai()
    s = _settings(make_settings, srv)
    ctx = RunContext(s, "2026-11-26", f"manual__lib_{decision}", params={"max_dialogues": 4})
    engine = OpenAIEngine(s.engine)
    try:
        gen = generate(ctx, engine)
    finally:
        engine.close()
    exported = export_for_review(ctx, gen)
    manifest = finalise(ctx, exported, {"chosen_options": [decision], "params_input": params or {},
                                        "responded_by_user": {"id": "1", "name": "curator"}})
    return s, ctx, gen, exported, manifest, srv


def test_generate_review_approve_and_nightly_uses_the_version(make_settings, fake_openai):
    s, ctx, gen, exported, manifest, srv = _run(make_settings, fake_openai, "Approve", {"note": "prefer short tasks"})
    doc = ctx.store.read_json(gen["key"])
    rows = doc["rows"]
    assert gen["stats"]["candidates"] == len(rows) > 0 and srv.total > 0
    assert {r["origin"] for r in rows} == {"seed", "evolved"}
    assert all(r["status"] == "proposed" or r["reason_code"] for r in rows)  # eliminated ones keep a reason
    ops = {y["operator"] for y in doc["report"]["yield"]}
    assert {"seed", "add_constraints", "deepen", "concretise", "add_reasoning", "in_breadth", "reword"} <= ops
    assert manifest["status"] == "approved" and manifest["reviewed_by"] == "curator"
    approved_by_op = {(y["operator"], y["round"]): y["approved"] for y in manifest["yield"]}
    assert sum(approved_by_op.values()) == sum(1 for r in rows if r["status"] == "proposed")  # yield after review
    approved = load_approved(ctx.store, s)
    assert approved is not None and set(approved.column("library_version").to_pylist()) == {exported["version"]}
    # the next nightly uses the new version and records it in the lineage of every prompt
    nightly = RunContext(s, "2026-11-27", "manual__n", params={"max_dialogues": 3})
    pr = run_build_prompts(nightly, run_ingest(nightly))
    prompts = nightly.store.read_table(pr["keys"]["prompts"])
    assert set(prompts.column("library_version").to_pylist()) == {exported["version"]}
    # the reviewer's note guides the next round
    from dialinsight_core.runs.instructions import reviewer_guidance

    assert "prefer short tasks" in reviewer_guidance(ctx.store, s)


def test_rejected_review_publishes_nothing(make_settings, fake_openai):
    s, ctx, _, exported, manifest, _ = _run(make_settings, fake_openai, "Reject", {"note": "ask about the dialogue's facts"})
    assert manifest["status"] == "rejected" and load_approved(ctx.store, s) is None
    from dialinsight_core.runs.instructions import reviewer_guidance

    assert reviewer_guidance(ctx.store, s) == "ask about the dialogue's facts"  # guides the next round
    lib = ctx.store.read_json(f"library/v={exported['version']}/manifest.json")
    assert lib["status"] == "rejected"


def test_approve_with_edits(make_settings, fake_openai):
    srv = fake_openai()
    s = _settings(make_settings, srv)
    ctx = RunContext(s, "2026-11-26", "manual__edit", params={"max_dialogues": 4})
    engine = OpenAIEngine(s.engine)
    gen = generate(ctx, engine)
    engine.close()
    exported = export_for_review(ctx, gen)
    proposed = [r for r in ctx.store.read_json(gen["key"])["rows"] if r["status"] == "proposed"]
    a, b = proposed[0]["instruction_id"], proposed[1]["instruction_id"]
    edits = {a: {"status": "rejected", "reviewer_note": "off topic"},
             b: {"text": "Summarise the dialogue in one sentence for the agent.", "reviewer_note": "tightened"}}
    finalise(ctx, exported, {"chosen_options": ["Approve"], "params_input": {"edits": json.dumps(edits)}})
    lib = {r["instruction_id"]: r for r in load_approved(ctx.store, s).to_pylist()}
    assert a not in lib and lib[b]["text"] == "Summarise the dialogue in one sentence for the agent."
