"""A published snapshot is a dataset a user trains on with the usual tools, no join and no code of
ours: complete rows with lineage, exports a chat template renders, a card `datasets` loads."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dialinsight_core import schemas
from dialinsight_core.runs.nightly import RunContext, run_all
from dialinsight_core.storage import store_from_settings
from tests.conftest import FIXTURES, ROOT
from tests.support.fake_openai import planted_mix

MODEL_DIR = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, fake_openai_module):
    """One run over 30 dialogues with evolved instructions, the judge, a split and a mix-in."""
    tmp = tmp_path_factory.mktemp("snap")
    lib = yaml.safe_load((ROOT / "config/instructions/library.yaml").read_text())
    evolved = [dict(e, instruction_id=f"{e['instruction_id']}-ev1", parent_id=e["instruction_id"], operator="deepen",
                    round=1, origin="evolved", text=e["text"] + " Be specific.") for e in lib["instructions"]]
    lib["instructions"] += evolved
    (tmp / "library.yaml").write_text(yaml.safe_dump(lib, allow_unicode=True))
    srv = fake_openai_module(planted_mix({"repeat": 0.2, "copy": 0.1}))
    from dialinsight_core.config import load_settings

    s = load_settings(environ={
        "DIALINSIGHT__STORAGE__URI": f"file://{tmp / 'store'}",
        "DIALINSIGHT__ENGINE__KIND": "openai", "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url,
        "DIALINSIGHT__ENGINE__MAX_RETRIES": "0", "DIALINSIGHT__INGEST__MAX_DIALOGUES": "30",
        "DIALINSIGHT__PROMPTS__LIBRARY_PATH": str(tmp / "library.yaml"),
        "DIALINSIGHT__GATES__MIN_MEAN__SCHEMA_VALID": "0",
        "DIALINSIGHT__PUBLISHING__EXPORTS__VALIDATION_FRACTION": "0.3",
        "DIALINSIGHT__PUBLISHING__EXPORTS__MIXIN__URI": str(FIXTURES / "general_mixin" / "general.jsonl"),
        "DIALINSIGHT__PUBLISHING__EXPORTS__MIXIN__RATIO": "0.25",
    })
    out = run_all(RunContext(s, "2026-11-25", "manual__dataset"))
    store = store_from_settings(s)
    prefix = out["snapshot_uri"].removeprefix(store.uri + "/")
    return s, store, prefix, Path(out["snapshot_uri"].removeprefix("file://"))


@pytest.fixture(scope="module")
def fake_openai_module():
    from tests.support.fake_openai import FakeOpenAIServer

    servers = []

    def start(plan=None):
        srv = FakeOpenAIServer(plan).__enter__()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def _table(store, key) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def test_every_row_is_a_complete_training_example(snapshot):
    s, store, prefix, _ = snapshot
    data, rej = _table(store, f"{prefix}/data/part-00000.parquet"), _table(store, f"{prefix}/rejected/part-00000.parquet")
    assert len(data) and len(rej)
    assert list(data.columns) == schemas.PUBLISHED.names and list(rej.columns) == schemas.PUBLISHED_REJECTED.names
    turns_key = next(k for k in store.list("work/") if k.endswith("ingest/turns.parquet"))
    turns = pd.read_parquet(io.BytesIO(store.read_bytes(turns_key)))
    first_turn = turns.sort_values("turn_idx").groupby("dialogue_id").text.first().to_dict()
    for df in (data, rej):
        for row in df.itertuples():
            msgs = list(row.messages)
            assert [m["role"] for m in msgs] == ["system", "user", "assistant"], row.prompt_id
            assert all(m["content"] for m in msgs[:2])
            assert msgs[-1]["content"] == row.output_text
            user = msgs[1]["content"]
            assert row.instruction_text and row.instruction_text in user  # the instruction, as sent
            assert first_turn[row.dialogue_id] in user  # the (redacted) dialogue, as sent
    lineage = ["dialogue_id", "source", "source_file", "turn_span", "instruction_id", "instruction_text",
               "instruction_origin", "instruction_round", "library_version", "template_id", "variant", "sampling_weight",
               "seed", "model", "model_fingerprint", "sampling_params", "sampling_params_hash", "overall_score",
               "gate_suite_version", "snapshot_id", "config_hash", "code_version"]
    for df in (data, rej):
        for col in lineage:
            assert df[col].notna().all(), col
        assert df.model_fingerprint.str.startswith("name:").all()  # an OpenAI-compatible server: known by name only
        assert (df.sampling_params.map(json.loads).map(lambda p: p["max_tokens"]) == s.engine.max_tokens).all()
        evolved = df.instruction_origin == "evolved"
        assert evolved.any() and (~evolved).any()
        assert df.loc[evolved, ["instruction_parent_id", "instruction_operator"]].notna().all().all()
        assert (df.loc[evolved, "instruction_round"] == 1).all()
        assert df.loc[~evolved, "instruction_parent_id"].isna().all()
        judged = df.judge_status.notna()
        assert (df.judge_model.notna() == judged).all()
    assert rej.reason_code.notna().all() and rej.reason_detail.notna().all()


def test_exports_hold_the_accepted_rows_split_by_dialogue_plus_the_mixin(snapshot):
    _, store, prefix, _ = snapshot
    manifest = store.read_json(f"{prefix}/manifest.json")
    ex = manifest["exports"]
    n_acc = manifest["counts"]["accepted"]
    assert set(ex["files"]) == {"openai", "sharegpt", "alpaca", "provenance"}
    rows = {fmt: {split: [json.loads(x) for x in store.read_bytes(f"{prefix}/{key}").decode().splitlines()]
                  for split, key in splits.items()} for fmt, splits in ex["files"].items()}
    assert set(rows["openai"]) == {"train", "validation"}
    mixed = round(0.25 * n_acc)
    assert ex["mixin"]["rows"] == mixed
    for fmt in rows:
        assert sum(len(v) for v in rows[fmt].values()) == n_acc + mixed, fmt
    prov = rows["provenance"]
    sides = {split: {p["dialogue_id"] for p in ps if p["origin"] == "domain"} for split, ps in prov.items()}
    assert sides["train"] and sides["validation"] and not sides["train"] & sides["validation"]
    assert ex["dialogues"] == {split: len(ids) for split, ids in sides.items()}  # distinct, counted across parts
    assert sum(p["origin"] == "mixin" and p["mixin_source"] == "general" for ps in prov.values() for p in ps) == mixed
    for split, ps in prov.items():  # provenance is line by line with the other formats
        assert [r["id"] for r in rows["sharegpt"][split]] == [p["id"] for p in ps] == [r["id"] for r in rows["alpaca"][split]]
    assert all(set(r) == {"messages"} for v in rows["openai"].values() for r in v)
    assert all(r["conversations"][-1]["from"] == "gpt" for v in rows["sharegpt"].values() for r in v)
    assert all(r["output"] and r["instruction"] for v in rows["alpaca"].values() for r in v)
    data = _table(store, f"{prefix}/data/part-00000.parquet")
    domain_ids = {p["id"] for ps in prov.values() for p in ps if p["origin"] == "domain"}
    assert domain_ids == set(data.prompt_id)


@pytest.mark.skipif(not MODEL_DIR.is_dir(), reason="make setup prepares the labeling model's folder")
def test_the_labeling_models_chat_template_renders_every_exported_row(snapshot):
    from transformers import AutoTokenizer

    _, store, prefix, _ = snapshot
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    files = store.read_json(f"{prefix}/manifest.json")["exports"]["files"]["openai"]
    n = 0
    for key in files.values():
        for line in store.read_bytes(f"{prefix}/{key}").decode().splitlines():
            msgs = json.loads(line)["messages"]
            text = tok.apply_chat_template(msgs, tokenize=False)
            assert msgs[-1]["content"] in text and msgs[-2]["content"][:200] in text
            ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
            assert len(ids) > 10 and tok.decode(ids).count("<|im_start|>") >= len(msgs)
            n += 1
    assert n > 10


def test_datasets_pandas_and_duckdb_load_the_snapshot_folder(snapshot, tmp_path, monkeypatch):
    import datasets
    import duckdb

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    _, store, prefix, folder = snapshot
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "mit" and meta["language"] == ["en"] and meta["task_categories"] == ["text-generation"]
    assert {c["config_name"] for c in meta["configs"]} == {"default", "rejected"}
    assert "pipeline smoke test" in card and "## How to load" in card
    n_acc = store.read_json(f"{prefix}/manifest.json")["counts"]["accepted"]
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == n_acc
    row = ds["train"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    rejected = datasets.load_dataset(str(folder), "rejected", cache_dir=str(tmp_path / "hf"))
    assert rejected["train"].num_rows == store.read_json(f"{prefix}/manifest.json")["counts"]["rejected"]
    assert len(pd.read_parquet(folder / "data")) == n_acc
    got = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/data/*.parquet')").fetchall()
    assert got == [(n_acc,)]


def _no_external_reference(page: str) -> None:
    """Nothing in the page fetches anything: no script, no stylesheet link, no remote src/href/url()."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page)


def test_report_is_offline_and_diffs_against_the_previous_snapshot(snapshot, fake_openai_module):
    s, store, prefix, folder = snapshot
    first_page = (folder / "report.html").read_text()
    _no_external_reference(first_page)
    assert first_page.count("<svg") >= 4 and "This is the first snapshot" in first_page
    first = store.read_json(f"{prefix}/manifest.json")
    assert first["report"]["diff"] is None and first["files"]["report"] == "report.html"
    # the next night: 4 more dialogues, the same defects, and another good answer to a third of the prompts
    srv = fake_openai_module(planted_mix({"repeat": 0.2, "copy": 0.1, "good_alt": 0.3}))
    s2 = s.with_overrides({"engine.base_url": srv.base_url, "labeling.cache": False})
    out = run_all(RunContext(s2, "2026-11-25", "manual__dataset2", {"max_dialogues": 34}))
    prefix2 = out["snapshot_uri"].removeprefix(store.uri + "/")
    second = store.read_json(f"{prefix2}/manifest.json")
    d = second["report"]["diff"]
    a = _table(store, f"{prefix}/data/part-00000.parquet").set_index("prompt_id")
    b = _table(store, f"{prefix2}/data/part-00000.parquet").set_index("prompt_id")
    common = a.index.intersection(b.index)
    changed = [i for i in common if a.at[i, "output_text"] != b.at[i, "output_text"]
               or round(a.at[i, "overall_score"], 6) != round(b.at[i, "overall_score"], 6)]
    assert d["previous"] == first["snapshot_id"]
    assert d["new"] == len(b.index.difference(a.index)) > 0
    assert d["removed"] == len(a.index.difference(b.index))
    assert d["changed"] == len(changed) > 0 and d["unchanged"] == len(common) - len(changed)
    assert d["mix_now"] == {k: round(v, 4) for k, v in b.task_family.value_counts(normalize=True).items()}
    page = store.read_bytes(f"{prefix2}/report.html").decode()
    _no_external_reference(page)
    assert f"Previous: <code>{first['snapshot_id']}</code>" in page and page.count("<svg") >= 5
    assert second["summary_md"] in page.replace("&#x27;", "'").replace("&quot;", '"') or "### dialinsight snapshot" in page
