"""A snapshot built from a folder of broken, empty and hostile inputs publishes no unredacted
personal datum anywhere under ``snapshots/`` (issue 13's "done when"): not in the accepted or
rejected data, not in quarantine, not in the exports, the card, the report or the Data Docs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from dialinsight_core.runs.nightly import RunContext, run_all
from dialinsight_core.storage import store_from_settings

# every planted personal datum, as it appears in the inputs (full-width forms included)
SECRETS = ["13912345678", "１３９８７６５４３２１", "11010519491231002X", "wang.xm@example.com", "6222020200112233449",
           "黄芳", "王小明", "陈思远", "Sarah Connor", "415-555-2671", "建国路88号", "ORD-88231457", "jsmith_88"]


def _zh_dialogue(i: int) -> dict:
    return {"conv_id": f"h{i}", "utterances": [
        {"speaker": "经纪人", "content": f"您好，我是经纪人黄芳，请问有什么可以帮您？（第{i}位客户）"},
        {"speaker": "客户", "content": f"我叫王小明，想租两室一厅，预算每月{4000 + 100 * i}元，电话13912345678。"},
        {"speaker": "经纪人", "content": "好的王先生，阳光花园有一套89平米的，在12楼，月租4500元。"
                                        "地址在北京市朝阳区建国路88号。"},
        {"speaker": "客户", "content": "可以，身份证11010519491231002X，邮箱wang.xm@example.com，"
                                      "定金打到卡号6222020200112233449。"},
        {"speaker": "经纪人", "content": f"收到，我帮您约周六下午三点看房，订单号ORD-88231457，第{i}次确认。"},
    ]}


def _hostile_folder(root: Path) -> dict[str, Path]:
    jsonl = root / "crm"
    jsonl.mkdir(parents=True)
    lines = [json.dumps(_zh_dialogue(i), ensure_ascii=False) for i in range(6)]
    lines.append('{"conv_id": "broken", "utterances": [{"speaker": "客户", "content": "我叫陈思远，电话13912345678')  # cut
    lines.append(json.dumps({"conv_id": "robot", "utterances": [  # an unknown speaker kind
        {"speaker": "机器人", "content": "陈思远您好，您的手机１３９８７６５４３２１已登记。"},
        {"speaker": "客户", "content": "好的，我的用户名是jsmith_88。"}]}, ensure_ascii=False))
    lines.append(json.dumps({"conv_id": "alone", "utterances": [{"speaker": "客户", "content": "我是陈思远，13912345678"}]},
                            ensure_ascii=False))
    lines.append(json.dumps({"conv_id": "huge", "utterances": [
        {"speaker": "客户", "content": "我叫陈思远，电话13912345678。" + "房" * 5000},
        {"speaker": "经纪人", "content": "Sarah Connor will call you at 415-555-2671."}]}, ensure_ascii=False))
    (jsonl / "export.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (jsonl / "empty.jsonl").write_bytes(b"")
    (jsonl / "array.json").write_text(json.dumps([_zh_dialogue(10), {"conv_id": "x", "utterances": "黄芳 13912345678"}],
                                                 ensure_ascii=False), encoding="utf-8")
    (jsonl / "junk.bin").write_bytes("王小明 13912345678 \x00\x01\x02".encode())
    csv = root / "csv"
    csv.mkdir()
    (csv / "calls.csv").write_text(
        "dialogue_id,turn_idx,role,text\n"
        "c1,0,客户,我叫王小明，想租一室一厅，预算3000元。\n"
        'c1,1,经纪人,"好的，我是黄芳，电话13912345678，阳光花园月租3200元。"\n'
        'c1,2,客户,"this row has "bad" quotes 13912345678 Sarah Connor\n'
        "c1,3,客户,好的，周六见。\n", encoding="utf-8")
    return {"crm": jsonl, "csv": csv}


def test_a_snapshot_from_hostile_inputs_holds_no_personal_datum_in_clear(make_settings, fake_openai, tmp_path):
    folders = _hostile_folder(tmp_path / "inputs")
    srv = fake_openai()
    sources = [
        {"name": "crm", "adapter": "jsonl", "uri": str(folders["crm"]),
         "fields": {"dialogue_id": "conv_id", "turns": "utterances", "role": "speaker", "text": "content"},
         "roles": {"客户": "customer", "经纪人": "agent"}},
        {"name": "calls", "adapter": "csv", "uri": str(folders["csv"]), "roles": {"客户": "customer", "经纪人": "agent"}},
    ]
    s = make_settings(DIALINSIGHT__SOURCES=json.dumps(sources, ensure_ascii=False), DIALINSIGHT__ENGINE__KIND="openai",
                      DIALINSIGHT__ENGINE__BASE_URL=srv.base_url, DIALINSIGHT__ENGINE__MAX_RETRIES="0",
                      DIALINSIGHT__GATES__MIN_MEAN__SCHEMA_VALID="0", DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="1.0",
                      DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.0")
    out = run_all(RunContext(s, "2026-11-25", "manual__hostile"))
    store = store_from_settings(s)
    root = Path(store.uri.removeprefix("file://")) / "snapshots"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert out["snapshot_uri"] and files
    manifest = json.loads(next(p for p in files if p.name == "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["quarantined"] > 0  # the hostile inputs were read, not skipped
    checked = 0
    for path in files:
        if path.suffix == ".parquet":
            text = pd.read_parquet(io.BytesIO(path.read_bytes())).astype(str).to_csv()
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        leaked = [x for x in SECRETS if x in text]
        assert not leaked, (str(path.relative_to(root)), leaked)
        checked += 1
    assert checked >= 10
