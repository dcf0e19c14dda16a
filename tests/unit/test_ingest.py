from __future__ import annotations

import json

import pytest

from dialinsight_core.ingest import ingest, parse_star
from dialinsight_core.text import detect_lang
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


def test_each_step_reports_where_records_left_the_stage(make_settings):
    """read -> validate -> redact -> dedup -> classify: each step counts in / out / quarantined by reason."""
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([
        {"name": "broken", "adapter": "star", "uri": str(FIXTURES / "star_broken")}]))
    steps = ingest(s).stats["steps"]
    assert list(steps) == ["read", "validate", "redact", "dedup", "classify"]
    assert steps["read"] == {"records_in": 10, "records_out": 5, "quarantined": 5, "quarantined_by_reason": {
        "unreadable_json": 1, "bad_encoding": 1, "malformed_structure": 2, "non_text_turn": 1}}
    assert steps["validate"] == {"records_in": 5, "records_out": 2, "quarantined": 3, "quarantined_by_reason": {
        "single_role": 1, "too_few_turns": 1, "turn_too_long": 1}}
    assert steps["redact"] == {"records_in": 2, "records_out": 2, "quarantined": 0, "quarantined_by_reason": {}}
    assert steps["dedup"] == {"records_in": 2, "records_out": 1, "quarantined": 1, "quarantined_by_reason": {"duplicate": 1}}
    assert steps["classify"] == {"records_in": 1, "records_out": 1, "quarantined": 0, "quarantined_by_reason": {}}
    for before, after in zip(list(steps.values()), list(steps.values())[1:], strict=False):
        assert before["records_out"] == after["records_in"]
    for st in steps.values():
        assert st["records_in"] == st["records_out"] + st["quarantined"]


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


def _zh_pii_settings(make_settings):
    return make_settings(DIALINSIGHT__SOURCES=json.dumps([
        {"name": "zhpii", "adapter": "star", "uri": str(FIXTURES / "star_zh_pii")}]))


def test_pii_is_redacted_before_any_later_stage_and_counted(make_settings):
    from dialinsight_core.instructions import load_library, load_output_schemas
    from dialinsight_core.prompts import build_prompts

    s = _zh_pii_settings(make_settings)
    res = ingest(s)
    text = "\n".join(res.turns.column("text").to_pylist())
    for secret in ("13912345678", "xiaoming.wang@example.com", "11010519491231002X", "王小明", "501室", "南京路100号"):
        assert secret not in text, secret
    for fact in ("4500元", "89平方米", "12楼", "两室一厅", "下午三点", "310万"):
        assert fact in text, fact  # domain facts survive
    d = {r["dialogue_id"]: json.loads(r["pii_counts"]) for r in res.dialogues.to_pylist()}
    assert d["zhpii:zh-pii-001-edited"] == {"ADDRESS": 1, "EMAIL": 1, "ID_NUMBER": 1, "NAME": 2, "PHONE": 1, "UNIT": 1}
    assert d["zhpii:zh-pii-002"] == {}
    assert res.stats["pii_redactions"]["PHONE"] == 1 and res.stats["dialogues_with_pii"] == 1
    prompts = build_prompts(res.dialogues, res.turns, load_library(s), load_output_schemas(s), s, "2026-11-25").prompts
    blob = "\n".join(prompts.column("messages").to_pylist())
    assert "13912345678" not in blob and "11010519491231002X" not in blob and "[PHONE_1]" in blob


def test_near_duplicate_dialogues_are_recorded_not_dropped(make_settings):
    res = ingest(_zh_pii_settings(make_settings))
    q = res.quarantined.to_pylist()
    assert [r["reason_code"] for r in q] == ["near_duplicate"]
    # files are read in sorted order: the edited copy comes first, the original is its near duplicate
    assert "zhpii:zh-pii-001-edited" in q[0]["reason_detail"]
    assert json.loads(q[0]["record"])["file"] == "dialogues/zh-pii-001.json"
    kept = sorted(res.dialogues.column("dialogue_id").to_pylist())
    assert kept == ["zhpii:zh-pii-001-edited", "zhpii:zh-pii-002"]  # same template, different dialogue: kept
    assert res.stats["files_read"] == 3 == len(kept) + len(q)


def _mixed_folder(tmp_path):
    """A folder of mixed-format exports, including broken ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "exports"
    d.mkdir()
    lines = [
        {"conv_id": "c1", "utterances": [{"speaker": "usr", "content": "I need a 2 bedroom flat, budget $1,500."},
                                         {"speaker": "sys", "content": "Maple Court has one for $1,450 on floor 3."}]},
        {"conv_id": "c2", "utterances": [{"speaker": "客户", "content": "我想租两室一厅，预算4500元，电话13912345678。"},
                                         {"speaker": "经纪人", "content": "阳光花园有一套，89平方米，月租4300元。"}]},
        {"conv_id": "c3", "utterances": [{"speaker": "usr", "content": 42}, {"speaker": "sys", "content": "ok"}]},
        {"conv_id": "c4", "utterances": [{"speaker": "bot", "content": "hi"}, {"speaker": "sys", "content": "hello"}]},
    ]
    body = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{not json\n"
    (d / "chats.jsonl").write_text(body, encoding="utf-8")
    (d / "turns.csv").write_text(
        "dialogue_id,turn_idx,role,text\n"
        "t1,0,customer,Is the flat on Oak Street still free?\n"
        "t1,1,agent,\"Yes, from May 3, rent 1200 per month.\"\n"
        "t2,0,customer,Hello\n"
        "t2,0,agent,Hi there\n", encoding="utf-8")
    (d / "latin1.csv").write_bytes("dialogue_id,turn_idx,role,text\nx,0,customer,caf\xe9\n".encode("latin-1"))
    pq.write_table(pa.table({"dialogue_id": ["p1", "p1", "p2", "p2"], "turn_idx": [0, 1, 0, 1],
                             "role": ["客户", "经纪人", "客户", "客户"],
                             "text": ["能便宜点吗？", "最多优惠200元。", "只有我一个人说话", "还是我"]}),
                   d / "turns.parquet")
    return d


def test_mixed_format_folder_ingests_without_a_crash_and_accounts_for_everything(make_settings, tmp_path):
    d = _mixed_folder(tmp_path)
    roles = {"usr": "customer", "sys": "agent", "客户": "customer", "经纪人": "agent"}
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([
        {"name": "chats", "adapter": "jsonl", "uri": str(d), "roles": roles,
         "fields": {"dialogue_id": "conv_id", "turns": "utterances", "role": "speaker", "text": "content"}},
        {"name": "crm", "adapter": "csv", "uri": str(d)},
        {"name": "dwh", "adapter": "parquet", "uri": str(d), "roles": roles},
    ]))
    res = ingest(s)
    kept = sorted(res.dialogues.column("dialogue_id").to_pylist())
    assert kept == ["chats:c1", "chats:c2", "crm:t1", "dwh:p1"]
    reasons = sorted((r["record_id"], r["reason_code"]) for r in res.quarantined.to_pylist())
    assert reasons == [
        ("chats:chats.jsonl#L3", "non_text_turn"),
        ("chats:chats.jsonl#L4", "unknown_role"),
        ("chats:chats.jsonl#L5", "unreadable_json"),
        ("crm:latin1.csv", "bad_encoding"),
        ("crm:turns.csv#t2", "duplicate_turn_index"),
        ("dwh:turns.parquet#p2", "single_role"),
    ]
    st = res.stats
    assert st["files_read"] == 10 == len(kept) + len(reasons)  # every record accounted for
    turns = res.turns.to_pandas()
    assert set(turns.role) == {"agent", "customer"}
    zh = turns[turns.dialogue_id == "chats:c2"]
    assert set(zh.lang) == {"zh"} and "[PHONE_1]" in zh.text.iloc[0] and "13912345678" not in "".join(turns.text)
    assert turns[turns.dialogue_id == "crm:t1"].text.tolist()[1] == "Yes, from May 3, rent 1200 per month."


@pytest.mark.parametrize(("role", "text", "behaviour"), [
    ("customer", "I'm looking for a 2 bedroom flat near the park.", "state_need"),
    ("customer", "我想租两室一厅，预算4500元。", "state_need"),
    ("customer", "能便宜一点吗？再优惠点", "negotiate"),
    ("customer", "Thanks, that's perfect!", "thank"),
    ("agent", "Could you give me your name, please?", "ask_identity"),
    ("agent", "阳光花园有一套，推荐给您。", "recommend"),
    ("agent", "请问您的预算是多少？需要几室？", "ask_need"),
    ("agent", "This is a sentence without any cue", "other"),
    ("agent", "this is fine", "other"),  # "hi" must not match inside "this"
])
def test_role_behaviour_classifier_en_and_zh(settings, role, text, behaviour):
    from dialinsight_core.ingest import classify_behaviour

    assert classify_behaviour(role, text, settings) == behaviour


def test_behaviour_distribution_is_reported(make_settings):
    res = ingest(make_settings(), max_dialogues=20)
    dist = res.stats["behaviours"]
    assert set(dist) == {"agent", "customer"}
    assert sum(dist["agent"].values()) + sum(dist["customer"].values()) == res.turns.num_rows
    assert set(res.turns.column("behaviour").to_pylist()) - {"other"}


def _unplaced_source(tmp_path):
    d = tmp_path / "unplaced"
    d.mkdir()
    lines = [{"id": "u1", "turns": [{"role": "customer", "text": "Good morning."},
                                    {"role": "agent", "text": "Good morning, what can I do for you today?"}]},
             {"id": "u2", "turns": [{"role": "customer", "text": "I want to rent a flat, budget 1200."},
                                    {"role": "agent", "text": "Sure."}]}]
    (d / "x.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    return json.dumps([{"name": "u", "adapter": "jsonl", "uri": str(d)}])


def test_llm_scene_classifier_revisits_only_what_the_rules_left_unplaced(make_settings, fake_openai, tmp_path):
    from dialinsight_core.inference.openai_engine import OpenAIEngine
    from dialinsight_core.ingest.scene_classifier import classify_scenes_llm

    srv = fake_openai()
    s = make_settings(DIALINSIGHT__SOURCES=_unplaced_source(tmp_path), DIALINSIGHT__ENGINE__KIND="openai",
                      DIALINSIGHT__ENGINE__BASE_URL=srv.base_url)
    res = ingest(s)
    src = {d["dialogue_id"]: d["scene_source"] for d in res.dialogues.to_pylist()}
    assert src == {"u:u1": "default", "u:u2": "keywords"}
    engine = OpenAIEngine(s.engine)
    out = classify_scenes_llm(res, engine, s)
    engine.close()
    d = {r["dialogue_id"]: r for r in out.dialogues.to_pylist()}
    assert d["u:u1"]["scene_source"] == "llm" and d["u:u1"]["scene"] in s.taxonomy.scenes
    assert d["u:u2"]["scene_source"] == "keywords" and d["u:u2"]["scene"] == "rental_search"
    assert srv.total == 1  # only the unplaced dialogue was sent
    assert set(out.turns.to_pandas().query("dialogue_id == 'u:u1'").scene) == {d["u:u1"]["scene"]}
    assert out.stats["llm_scene_classifier"]["asked"] == 1


def test_llm_scene_classifier_failure_keeps_the_default_and_says_so(make_settings, fake_openai, tmp_path):
    from dialinsight_core.inference.openai_engine import OpenAIEngine
    from dialinsight_core.ingest.scene_classifier import classify_scenes_llm

    srv = fake_openai(lambda body: "malformed")
    s = make_settings(DIALINSIGHT__SOURCES=_unplaced_source(tmp_path), DIALINSIGHT__ENGINE__KIND="openai",
                      DIALINSIGHT__ENGINE__BASE_URL=srv.base_url, DIALINSIGHT__ENGINE__MAX_RETRIES="0")
    engine = OpenAIEngine(s.engine)
    out = classify_scenes_llm(ingest(s), engine, s)
    engine.close()
    d = {r["dialogue_id"]: r for r in out.dialogues.to_pylist()}
    assert d["u:u1"]["scene_source"] == "llm_failed" and d["u:u1"]["scene"] == s.taxonomy.default_scene
    assert out.stats["llm_scene_classifier"]["failed"] == 1


def test_sources_are_read_from_s3_object_storage(make_settings, moto_s3, s3_bucket, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    line = {"id": "s1", "turns": [{"role": "客户", "text": "我想租房，预算3000元，电话13812345678"},
                                  {"role": "经纪人", "text": "好的，绿城小区有一套，每月2900元。"}]}
    s3.put_object(Bucket=s3_bucket, Key="exports/2026-11-25/chats.jsonl",
                  Body=json.dumps(line, ensure_ascii=False).encode("utf-8"))
    s = make_settings(DIALINSIGHT__STORAGE__S3_ENDPOINT_URL=moto_s3, DIALINSIGHT__SOURCES=json.dumps([
        {"name": "crm", "adapter": "jsonl", "uri": f"s3://{s3_bucket}/exports",
         "roles": {"客户": "customer", "经纪人": "agent"}}]))
    res = ingest(s)
    assert res.dialogues.column("dialogue_id").to_pylist() == ["crm:s1"]
    assert "[PHONE_1]" in res.turns.column("text").to_pylist()[0]


def test_english_near_duplicate_export_is_caught_and_template_sibling_kept(make_settings, tmp_path):
    d = tmp_path / "en"
    d.mkdir()
    turns = ["Hello, I want to schedule a viewing at North Hill Apartments for Saturday at 4 pm.",
             "Sure. Have you already paid the application fee for the apartment?",
             "Yes, I paid it last week together with the deposit of 500 dollars.",
             "Great, there is still a viewing available at that time. Would you like me to book it for you?",
             "Yes please, and could you tell me whether the flat has a balcony and an elevator?",
             "It has a south-facing balcony and an elevator. I have booked the viewing for Saturday at 4 pm."]
    sibling = ["Hello, I want to schedule a viewing at Shadyside Apartments for Monday at 10 am.",
               "Sure. Have you already paid the application fee for the apartment?",
               "No, I have not paid anything yet.",
               "I am sorry, but you need to pay the fee before a viewing can be booked.",
               "Okay, how much is the fee and where do I pay it?", "The fee is 30 dollars and you can pay it online."]

    def line(did, ts):
        return json.dumps({"id": did, "turns": [{"role": ["customer", "agent"][i % 2], "text": t}
                                                for i, t in enumerate(ts)]})
    edited = [t.replace("500", "450") for t in turns]
    (d / "a.jsonl").write_text("\n".join([line("orig", turns), line("reexport", edited), line("sibling", sibling)]))
    res = ingest(make_settings(DIALINSIGHT__SOURCES=json.dumps([{"name": "en", "adapter": "jsonl", "uri": str(d)}])))
    q = {r["record_id"]: r for r in res.quarantined.to_pylist()}
    assert [r["reason_code"] for r in q.values()] == ["near_duplicate"] and "en:orig" in q["en:a.jsonl#L2"]["reason_detail"]
    assert sorted(res.dialogues.column("dialogue_id").to_pylist()) == ["en:orig", "en:sibling"]


def test_gb18030_csv_export_with_configured_encoding(make_settings, tmp_path):
    d = tmp_path / "gbk"
    d.mkdir()
    (d / "crm.csv").write_bytes("dialogue_id,turn_idx,role,text\ng1,0,客户,我想租两室一厅，预算4500元。\n"
                                "g1,1,经纪人,阳光花园有一套，月租4300元。\n".encode("gb18030"))
    src = {"name": "gbk", "adapter": "csv", "uri": str(d), "roles": {"客户": "customer", "经纪人": "agent"}}
    as_utf8 = ingest(make_settings(DIALINSIGHT__SOURCES=json.dumps([src])))
    assert [q["reason_code"] for q in as_utf8.quarantined.to_pylist()] == ["bad_encoding"]
    res = ingest(make_settings(DIALINSIGHT__SOURCES=json.dumps([dict(src, encoding="gb18030")])))
    assert res.turns.column("text").to_pylist()[0] == "我想租两室一厅，预算4500元。"  # kept as spoken
    assert res.dialogues.column("lang").to_pylist() == ["zh"]


def _src(d, adapter="jsonl", **kw) -> str:
    return json.dumps([{"name": "crm", "adapter": adapter, "uri": str(d), **kw}])


@pytest.mark.parametrize("layout", ["missing", "empty_dir", "bin_only", "csv_for_jsonl"])
def test_a_source_that_gives_nothing_is_a_clear_error_not_an_empty_run(make_settings, tmp_path, layout):
    from dialinsight_core.ingest import SourceError

    d = tmp_path / "exports"
    if layout != "missing":
        d.mkdir()
    if layout == "bin_only":
        (d / "dump.bin").write_bytes(b"\x00\x01")
    if layout == "csv_for_jsonl":
        (d / "calls.csv").write_text("dialogue_id,role,text\n1,customer,hi\n")
    with pytest.raises(SourceError) as err:
        ingest(make_settings(DIALINSIGHT__SOURCES=_src(d)))
    msg = str(err.value)
    assert "source 'crm' (adapter jsonl)" in msg and str(d) in msg and "optional: true" in msg
    if layout == "bin_only":
        assert "1 .bin" in msg
    if layout == "csv_for_jsonl":
        assert "`adapter: csv`" in msg
    # marked optional, the same source reads as nothing, on purpose
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d, optional=True)))
    assert res.stats["files_read"] == 0


def test_empty_files_are_quarantined_records(make_settings, tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    (d / "a.jsonl").write_bytes(b"")
    (d / "b.jsonl").write_bytes(b"\n  \n")
    (d / "c.json").write_text("[]")
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d)))
    got = {json.loads(r["record"])["file"]: r["reason_code"] for r in res.quarantined.to_pylist()}
    assert got == {"a.jsonl": "empty_file", "b.jsonl": "empty_file", "c.json": "empty_file"}
    assert res.stats["files_read"] == 3
    d2 = tmp_path / "csv"
    d2.mkdir()
    (d2 / "calls.csv").write_text("dialogue_id,turn_idx,role,text\n")
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d2, adapter="csv")))
    assert [r["reason_code"] for r in res.quarantined.to_pylist()] == ["empty_file"]


def test_json_exports_holding_an_array_or_an_object_of_dialogues_are_read(make_settings, tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    turns = [{"role": "customer", "text": "I want to rent a two-bedroom flat near the metro."},
             {"role": "agent", "text": "Sure, what is your monthly budget for the flat?"},
             {"role": "customer", "text": "About 4500 a month, and I need parking."}]
    (d / "array.json").write_text(json.dumps([{"id": "a1", "turns": turns}, {"id": "a2", "turns": turns[::-1]}]))
    (d / "wrapped.json").write_text(json.dumps({"exported": "2026-12-01", "dialogues": [{"id": "w1", "turns": turns[:2]}]}))
    (d / "by_id.json").write_text(json.dumps({"k1": {"turns": [turns[1], turns[0], turns[2]]}}))
    (d / "one.json").write_text(json.dumps({"id": "o1", "turns": [turns[1], turns[2]]}))
    (d / "bad.json").write_text(json.dumps({"a": 1, "b": 2}))
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d), DIALINSIGHT__INGEST__MIN_TURNS="2",
                               DIALINSIGHT__INGEST__NEAR_DUP_THRESHOLD="1.0"))
    kept = sorted(res.dialogues.column("dialogue_id").to_pylist())
    assert kept == ["crm:a1", "crm:a2", "crm:k1", "crm:o1", "crm:w1"]
    files = sorted(res.dialogues.column("source_file").to_pylist())
    assert files == ["array.json#0", "array.json#1", "by_id.json#k1", "one.json", "wrapped.json#dialogues[0]"]
    (q,) = res.quarantined.to_pylist()
    assert q["reason_code"] == "malformed_structure" and "array or an object of dialogues" in q["reason_detail"]


def test_quarantine_keeps_a_redacted_excerpt_and_a_pointer_never_the_raw_text(make_settings, tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    raw = ('{"id": "x1", "turns": [{"role": "customer", "text": "My name is Ben Carter, call me on 13812345678 '
           'or ben.carter@example.com"}, {"role": "agent", "text": 42}]}')
    (d / "calls.jsonl").write_text(raw + "\n" + '{"id": "x2", "turns": "not a list", "note": "身份证 110101199003078515"}\n')
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d)))
    rows = res.quarantined.to_pylist()
    assert [r["reason_code"] for r in rows] == ["non_text_turn", "malformed_structure"]
    for r in rows:
        rec = json.loads(r["record"])
        assert rec["file"].startswith("calls.jsonl#L") and len(rec["sha256"]) == 64 and rec["bytes"] > 0
        for secret in ("13812345678", "ben.carter@example.com", "110101199003078515", "Ben Carter"):
            assert secret not in r["record"], secret
    first = json.loads(rows[0]["record"])
    assert "[PHONE_1]" in first["head"] and "[EMAIL_1]" in first["head"] and "[NAME_1]" in first["head"]


def test_cli_stops_at_once_on_a_source_that_gives_nothing(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, DIALINSIGHT__STORAGE__URI=f"file://{tmp_path / 'store'}",
               DIALINSIGHT__SOURCES=_src(tmp_path / "nowhere"))
    res = subprocess.run([sys.executable, "-m", "dialinsight_core", "run", "--ds", "2026-11-25"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "source 'crm' (adapter jsonl) has no" in res.stderr and "nothing is there" in res.stderr
    assert not (tmp_path / "store" / "snapshots").exists()


def test_a_bad_csv_row_is_quarantined_with_its_line_and_the_rest_of_the_file_is_read(make_settings, tmp_path):
    d = tmp_path / "crm"
    d.mkdir()
    (d / "calls.csv").write_text(
        "dialogue_id,turn_idx,role,text\n"
        "1,0,customer,I want to rent a two-bedroom flat near the metro please.\n"
        '1,1,agent,"Sure, what is your monthly budget for the flat?"\n'
        "2,0,customer,this row has, too, many, columns, call 13812345678\n"
        "2,1,agent,Hello there how can I help you with renting today?\n"
        "2,2,customer,I need a studio near the university for next month.\n")
    res = ingest(make_settings(DIALINSIGHT__SOURCES=_src(d, adapter="csv"), DIALINSIGHT__INGEST__MIN_TURNS="2"))
    assert sorted(res.dialogues.column("dialogue_id").to_pylist()) == ["crm:1", "crm:2"]
    (q,) = res.quarantined.to_pylist()
    assert q["record_id"] == "crm:calls.csv#L4" and q["reason_code"] == "bad_csv_row"
    assert q["reason_detail"] == "line 4: 8 column(s) where the header has 4"
    assert "13812345678" not in q["record"] and "[PHONE_1]" in json.loads(q["record"])["head"]
    assert res.stats["files_read"] == 3 == res.stats["dialogues_kept"] + res.stats["quarantined"]


def test_extra_speaker_kinds_map_to_drop_or_event(make_settings, tmp_path):
    """A bot's menu prompts are left out (``drop``), a system event is kept with the next turn's meta
    (``event``) and redacted like a turn; an unmapped kind says what to set."""
    (tmp_path / "x.jsonl").write_text(json.dumps({"conv_id": "c1", "utterances": [
        {"speaker": "机器人", "content": "请按1转人工服务。"},
        {"speaker": "客户", "content": "我想租两室一厅，预算4500元。"},
        {"speaker": "系统", "content": "通话已转接至经纪人黄芳，电话13912345678"},
        {"speaker": "经纪人", "content": "您好，阳光花园有一套两室一厅，月租4500元。"},
        {"speaker": "客户", "content": "好的，周六看房。"}]}, ensure_ascii=False) + "\n"
        + json.dumps({"conv_id": "c2", "utterances": [{"speaker": "客户", "content": "你好"},
                                                      {"speaker": "访客", "content": "在吗"},
                                                      {"speaker": "经纪人", "content": "您好"}]}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    fields = {"dialogue_id": "conv_id", "turns": "utterances", "role": "speaker", "text": "content"}
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps([{
        "name": "crm", "adapter": "jsonl", "uri": str(tmp_path), "fields": fields,
        "roles": {"客户": "customer", "经纪人": "agent", "机器人": "drop", "系统": "event"}}], ensure_ascii=False))
    res = ingest(s)
    turns = [t for t in res.turns.to_pylist() if t["dialogue_id"] == "crm:c1"]
    assert [t["role"] for t in turns] == ["customer", "agent", "customer"]
    assert "请按1" not in json.dumps(res.turns.to_pylist(), ensure_ascii=False)
    events = json.loads(turns[1]["meta"])["events_before"]
    assert events == ["通话已转接至经纪人[NAME_1]，电话[PHONE_1]"]
    q = {r["reason_code"]: r["reason_detail"] for r in res.quarantined.to_pylist()}
    assert "`drop`" in q["unknown_role"] and "`event`" in q["unknown_role"] and "访客" in q["unknown_role"]


@pytest.mark.parametrize("source", ["star_broken", "star_zh_pii"])
def test_worker_processes_give_the_same_tables_and_quarantine(make_settings, source):
    """Redaction and classification in spawned workers (what runs past ``ingest.parallel_after``
    records get) change nothing: same rows, same quarantine rows and reasons, same stats."""
    src = json.dumps([{"name": "s", "adapter": "star", "uri": str(FIXTURES / source)}])
    one = ingest(make_settings(DIALINSIGHT__SOURCES=src, DIALINSIGHT__INGEST__WORKERS="1"))
    two = ingest(make_settings(DIALINSIGHT__SOURCES=src, DIALINSIGHT__INGEST__WORKERS="2",
                               DIALINSIGHT__INGEST__PARALLEL_AFTER="1"))
    for name in ("turns", "dialogues", "index", "quarantined"):
        assert getattr(two, name).equals(getattr(one, name)), name
    assert two.stats == one.stats and one.stats["files_read"] > 1


def test_dedup_keys_from_worker_processes_decide_as_one_process(make_settings, tmp_path):
    """The content hashes and MinHash signatures computed in the workers (``prepare``) are those
    the main process computes: the same exact and near duplicates are found, naming the same
    earlier dialogue, and the index carries the same signatures."""
    from benchmarks.synth_corpus import CorpusSpec, generate, source_config

    generate(CorpusSpec(n=300, exact_dup_share=0.05, near_dup_share=0.1), tmp_path / "corpus")
    sources = json.dumps([source_config("synth", tmp_path / "corpus")])
    one = ingest(make_settings(DIALINSIGHT__SOURCES=sources, DIALINSIGHT__INGEST__WORKERS="1"))
    two = ingest(make_settings(DIALINSIGHT__SOURCES=sources, DIALINSIGHT__INGEST__WORKERS="2",
                               DIALINSIGHT__INGEST__PARALLEL_AFTER="1", DIALINSIGHT__INGEST__DEDUP_BATCH="64"))
    assert {"duplicate", "near_duplicate"} <= set(one.stats["quarantined_by_reason"])
    for name in ("turns", "dialogues", "index"):
        assert getattr(two, name).equals(getattr(one, name)), name
    cols = ["record_id", "reason_code", "reason_detail"]
    assert two.quarantined.select(cols).equals(one.quarantined.select(cols))


def test_dedup_across_batches_through_the_run_index_decides_as_one_batch(make_settings, tmp_path):
    """Dialogues kept in earlier batches are asked of a run index on disk, not held in memory: with
    batches of 50 the same records are kept and quarantined, for the same reasons and with the same
    earlier dialogue named, as with the whole run in one batch (exact and near repeats of the
    synthetic corpus, en and zh, planted far apart)."""
    from benchmarks.synth_corpus import CorpusSpec, generate, source_config

    generate(CorpusSpec(n=400, exact_dup_share=0.05, near_dup_share=0.1), tmp_path / "corpus")
    sources = json.dumps([source_config("synth", tmp_path / "corpus")])
    one = ingest(make_settings(DIALINSIGHT__SOURCES=sources, DIALINSIGHT__INGEST__DEDUP_BATCH="100000",
                               DIALINSIGHT__INGEST__PARALLEL_AFTER="100000"))
    many = ingest(make_settings(DIALINSIGHT__SOURCES=sources, DIALINSIGHT__INGEST__DEDUP_BATCH="50",
                                DIALINSIGHT__INGEST__PARALLEL_AFTER="100000"))
    reasons = {r["reason_code"] for r in one.quarantined.to_pylist()}
    assert {"duplicate", "near_duplicate"} <= reasons
    assert many.quarantined.select(["record_id", "reason_code", "reason_detail"]).equals(
        one.quarantined.select(["record_id", "reason_code", "reason_detail"]))
    assert many.dialogues.equals(one.dialogues) and many.index.equals(one.index)
    # line L of the corpus is dialogue synth-…-{L-1}: count the repeats of a dialogue of an earlier batch
    far = [(int(r["record_id"].rsplit("#L", 1)[1]) - 1, int(r["reason_detail"][-8:]))
           for r in many.quarantined.to_pylist() if r["reason_code"] in ("duplicate", "near_duplicate")]
    assert sum(1 for line, earlier in far if line // 50 > earlier // 50) >= 20
