"""The real dialinsight_evaluate DAG under dag.test() on a snapshot the pipeline published (test
engine with planted rejects), the real SmolLM2-135M fine-tuned for a few steps on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_core.runs.evaluate import base_model
from dialinsight_core.runs.nightly import RunContext, run_all
from dialinsight_core.storage import store_from_settings
from tests.support.dags import load_dag
from tests.support.fake_openai import planted

pytestmark = pytest.mark.slow

TINY = {  # a working loop in about two minutes: what the DAG does, not what the numbers say
    "DIALINSIGHT__EVALUATE__FINETUNE__MAX_STEPS": "2",
    "DIALINSIGHT__EVALUATE__FINETUNE__CHECKPOINT_EVERY": "1",
    "DIALINSIGHT__EVALUATE__GENERAL__ITEMS_PER_SET": "2",
    "DIALINSIGHT__EVALUATE__DOMAIN_PROMPTS": "2",
    "DIALINSIGHT__EVALUATE__MAX_NEW_TOKENS": "24",
    "DIALINSIGHT__AIRFLOW__RETRIES": "0",
}


def _jsonl(store, key):
    return [json.loads(x) for x in store.read_bytes(key).decode().splitlines() if x.strip()]


@pytest.mark.timeout(900)
def test_evaluate_dag_fine_tunes_and_reports_before_and_after(airflow_db, make_settings, fake_openai, monkeypatch):
    srv = fake_openai(planted(0.3, "repeat"))
    env = {"DIALINSIGHT__ENGINE__KIND": "openai", "DIALINSIGHT__ENGINE__BASE_URL": srv.base_url,
           "DIALINSIGHT__INGEST__MAX_DIALOGUES": "40", **TINY}
    s = make_settings(**env)
    if not Path(base_model(s)).is_dir():
        pytest.skip("no model folder (make setup)")
    out = run_all(RunContext(s, "2026-11-25", "manual__evalsrc"))
    store = store_from_settings(s)
    snap = out["snapshot_uri"].removeprefix(store.uri + "/")
    for k, v in {**env, "DIALINSIGHT__STORAGE__URI": s.storage.uri}.items():
        monkeypatch.setenv(k, v)

    run = load_dag("dialinsight_evaluate").test(run_conf={"snapshot_uri": out["snapshot_uri"]})
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states == {("plan", -1): "success", ("model", 0): "success", ("model", 1): "success",
                      ("model", 2): "success", ("report", -1): "success"}

    summ = store.read_json(f"{snap}/eval/eval-summary.json")
    prefix = summ["eval_prefix"].removeprefix(store.uri + "/")
    # held out by dialogue: never in a training set; the ablation is as large and holds rejected rows
    held = {r["dialogue_id"] for r in _jsonl(store, f"{prefix}/inputs/heldout.jsonl")}
    acc, abl = (_jsonl(store, f"{prefix}/inputs/{v}.jsonl") for v in ("accepted", "ablation"))
    manifest = store.read_json(f"{snap}/manifest.json")
    assert held and len(acc) == manifest["exports"]["counts"]["train"]["domain"] == len(abl)
    assert not held & {r["dialogue_id"] for r in acc + abl}
    assert any(r["origin"] == "rejected" for r in abl) and all(r["origin"] == "domain" for r in acc)
    assert summ["training_sets"]["ablation"]["mean_overall_score"] < summ["training_sets"]["accepted"]["mean_overall_score"]
    # before -> after for both fine-tunes, paired on the same general items
    assert set(summ["after"]) == {"accepted", "ablation"}
    for v, m in summ["after"].items():
        assert summ["variants"][v]["training"]["steps"] == 2, v
        assert m["general_change"]["n"] == summ["variants"]["base"]["general"]["n"] == 6
        assert m["domain_score"] is not None and 0 <= m["domain_score"] <= 1
        assert store.exists(f"{prefix}/models/{v}/final/adapter_model.safetensors")
    assert summ["regression"]["regressed"] in (True, False) and summ["regression"]["action"] == "warn"
    page = store.read_bytes(f"{snap}/eval/report.html").decode()
    assert "<svg" in page and "Before → after" in page and "Quality ablation" in page
    # the asset event carries the headline figures
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.execute(select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(
            AssetModel.name == "dialinsight_evaluation", AssetEvent.source_run_id == run.run_id)).scalars().all()
    (extra,) = extras
    assert extra["snapshot_uri"] == out["snapshot_uri"] and extra["report"].endswith("/eval/report.html")
    assert extra["domain_before"] == summ["before"]["domain_score"]
    assert extra["general_delta_points"] == summ["after"]["accepted"]["general_change"]["delta_points"]
