from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

from dialinsight_core import schemas
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.prompts import build_prompts, shard_prompts
from tests.conftest import FIXTURES


def _build(s, ds="2026-11-25", n=20):
    res = ingest(s, max_dialogues=n)
    return build_prompts(res.dialogues, res.turns, load_library(s), load_output_schemas(s), s, ds), res


def test_prompts_are_seeded_and_reproducible(settings):
    a, _ = _build(settings)
    b, _ = _build(settings)
    assert a.prompts.equals(b.prompts)
    c, _ = _build(settings, ds="2026-11-26")  # another night draws other instructions
    assert a.prompts.column("prompt_id").to_pylist() != c.prompts.column("prompt_id").to_pylist()


def test_dialogue_first_and_shared_prefix(settings):
    """An ask placed after the dialogue leaves the dialogue as a prefix shared by every such prompt
    of that dialogue (vLLM's prefix cache); one placed before it still carries the whole dialogue."""
    res, ing = _build(settings, n=12)
    assert res.stats["prompts"] == 12 * settings.prompts.instructions_per_dialogue
    first_turn = {t["dialogue_id"]: t["text"] for t in ing.turns.to_pylist() if t["turn_idx"] == 0}
    by_dialogue: dict[str, list[tuple[str, str]]] = {}
    for p in res.prompts.to_pylist():
        by_dialogue.setdefault(p["dialogue_id"], []).append((p["variant"], json.loads(p["messages"])[1]["content"]))
    placements = Counter()
    for did, items in by_dialogue.items():
        after = [u for v, u in items if v.endswith("-after")]
        for v, u in items:
            placements[v.split("-")[1]] += 1
            if v.endswith("-after"):
                assert u.startswith("Dialogue (") and u.index(first_turn[did]) < len(u) - 1
            else:
                assert not u.startswith("Dialogue (") and "\n\nDialogue (" in u and u.rstrip().endswith(
                    ing.turns.filter(pa.compute.equal(ing.turns.column("dialogue_id"), did)).column("text")[-1].as_py())
        if len(after) == 2:
            dialogue = after[0][: after[0].rindex("\n", 0, after[0].index(first_turn[did]) + 1)]
            assert after[1].startswith(dialogue)
    assert placements["after"] > placements["before"] > 0


def test_weighted_sampling_matches_target_shares(make_settings):
    s = make_settings(DIALINSIGHT__PROMPTS__INSTRUCTIONS_PER_DIALOGUE="1")
    res = ingest(s)  # all 334 sample dialogues
    out = build_prompts(res.dialogues, res.turns, load_library(s), load_output_schemas(s), s, "2026-11-25")
    shares = Counter(out.prompts.column("task_family").to_pylist())
    n = out.prompts.num_rows
    for fam, cfg in s.task_families.items():
        assert abs(shares[fam] / n - cfg.target_share) < 0.07, (fam, shares[fam] / n)
    assert out.stats["family_target"]["summarisation"] == 0.25


def test_chinese_dialogues_get_chinese_instructions(make_settings):
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([{"name": "zh", "uri": str(FIXTURES / "star_zh")}]))
    out, _ = _build(s)
    lib = {r["instruction_id"]: r for r in load_library(s).to_pylist()}
    for p in out.prompts.to_pylist():
        assert lib[p["instruction_id"]]["lang"] in ("zh", "*")
        user = json.loads(p["messages"])[1]["content"]
        assert user.startswith("对话") and "客户:" in user


def test_unservable_dialogues_are_quarantined(make_settings):
    s = make_settings(DIALINSIGHT__PROMPTS__MAX_DIALOGUE_CHARS="300")
    out, ing = _build(s, n=10)
    assert out.stats["quarantined"] > 0
    assert set(out.quarantined.column("reason_code").to_pylist()) == {"dialogue_too_long"}
    assert out.stats["dialogues_in"] == out.stats["dialogues_prompted"] + out.stats["quarantined"] == 10
    # a dialogue whose language has no instruction
    d = ing.dialogues.slice(0, 1).to_pylist()[0]
    d["lang"] = "und"
    res = build_prompts(schemas.table(schemas.DIALOGUES, [d]), ing.turns, load_library(s), load_output_schemas(s),
                        make_settings(), "2026-11-25")
    assert res.quarantined.column("reason_code").to_pylist() == ["no_instruction"]


def test_shards_keep_dialogues_together_and_are_bounded(settings):
    out, _ = _build(settings, n=30)
    shards = shard_prompts(out.prompts, 4)
    assert 1 <= len(shards) <= 4
    assert sum(s.num_rows for s in shards) == out.prompts.num_rows
    owners = {}
    for i, sh in enumerate(shards):
        for d in sh.column("dialogue_id").to_pylist():
            assert owners.setdefault(d, i) == i
    assert len(shard_prompts(out.prompts.slice(0, 1), 8)) == 1


def test_the_stage_streams_turns_and_cuts_what_whole_tables_cut(make_settings):
    """run_build_prompts reads turns a few at a time (a part ends where a dialogue does) and writes
    prompts and shards as it goes: the same prompts as build_prompts on whole tables, and the same
    shards (prompts and turns) as shard_prompts / shard_turns cut from them."""
    import pyarrow as pa

    from dialinsight_core.prompts import shard_turns
    from dialinsight_core.runs.nightly import RunContext, run_build_prompts, run_ingest

    s = make_settings(DIALINSIGHT__INGEST__MAX_DIALOGUES="30", DIALINSIGHT__PROMPTS__BATCH_TURNS="7",
                      DIALINSIGHT__LABELING__SHARDS="4", DIALINSIGHT__PROMPTS__MAX_DIALOGUE_CHARS="800")
    ctx = RunContext(s, "2026-11-25", "manual__stream")
    ing = run_ingest(ctx)
    out = run_build_prompts(ctx, ing)
    dialogues = ctx.store.read_table(ing["keys"]["dialogues"], schemas.DIALOGUES)
    turns = ctx.store.read_table(ing["keys"]["turns"], schemas.TURNS)
    whole = build_prompts(dialogues, turns, load_library(s), load_output_schemas(s), s, ctx.ds)
    streamed = ctx.store.read_table(out["keys"]["prompts"], schemas.PROMPTS)
    assert streamed.num_rows == whole.prompts.num_rows > 20
    assert streamed.sort_by("prompt_id").equals(whole.prompts.sort_by("prompt_id"))
    assert whole.stats["quarantined"] > 0 and out["stats"] == whole.stats  # a too-long dialogue is quarantined either way
    quarantined = ctx.store.read_table(out["keys"]["quarantined"], schemas.QUARANTINED)
    assert quarantined.sort_by("record_id").equals(whole.quarantined.sort_by("record_id"))
    cut = shard_prompts(whole.prompts, 4)
    cut_turns = shard_turns(turns, cut)
    assert [sh["n"] for sh in out["shards"]] == [c.num_rows for c in cut]
    for sh, want, want_turns in zip(out["shards"], cut, cut_turns, strict=True):
        got = ctx.store.read_table(sh["key"], schemas.PROMPTS)
        assert got.sort_by("prompt_id").equals(want.sort_by("prompt_id"))
        # a shard's parts (one small file each) are joined into row groups of 4,096 rows, not one a part
        assert ctx.store.open_parquet(sh["key"]).metadata.num_row_groups == 1
        assert ctx.store.open_parquet(sh["turns_key"]).metadata.num_row_groups == 1
        got_turns = ctx.store.read_table(sh["turns_key"], schemas.TURNS)
        assert got_turns.sort_by([("dialogue_id", "ascending"), ("turn_idx", "ascending")]).equals(
            want_turns.sort_by([("dialogue_id", "ascending"), ("turn_idx", "ascending")]))
    # turns of one dialogue stored apart are a broken input, not a silent half dialogue
    from dialinsight_core.runs.nightly import dialogue_parts

    first = turns.column("dialogue_id")[0].as_py()
    mine = turns.filter(pa.compute.equal(turns.column("dialogue_id"), first))
    broken = pa.concat_tables([mine.slice(0, 1), turns.filter(pa.compute.not_equal(turns.column("dialogue_id"), first)),
                               mine.slice(1)])
    with pytest.raises(ValueError, match="not stored together"):
        list(dialogue_parts(dialogues, broken.to_batches(max_chunksize=5)))
    # dialogues stream too (read ahead 3 rows at a time here): each part gets exactly its turns'
    # dialogues, in stored order, and a dialogue without turns comes last
    lonely = dialogues.slice(0, 1).set_column(0, "dialogue_id", pa.array(["no-turns"]))
    stored = pa.concat_tables([dialogues.slice(0, 4), lonely, dialogues.slice(4)])
    parts = list(dialogue_parts(stored.to_batches(max_chunksize=3), turns.to_batches(max_chunksize=5)))
    for part_dialogues, part_turns in parts[:-1]:
        assert set(part_dialogues.column("dialogue_id").to_pylist()) == set(part_turns.column("dialogue_id").to_pylist())
    assert parts[-1][0].column("dialogue_id").to_pylist() == ["no-turns"] and parts[-1][1].num_rows == 0
    assert pa.concat_tables([d for d, _ in parts[:-1]]).equals(dialogues)
