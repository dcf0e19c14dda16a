"""The whole pipeline in one process against the test OpenAI server (fast path)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from dialinsight_core.pipeline import BatchGateFailed, RunContext, run_all
from dialinsight_core.storage import LATEST_KEY, store_from_settings
from tests.support.fake_openai import planted


def _settings(make_settings, srv, **env):
    return make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
                         DIALINSIGHT__ENGINE__MAX_RETRIES="0", **env)


def _read(store, key) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def test_planted_defects_are_rejected_with_reasons(make_settings, fake_openai):
    behaviours = {0: "repeat", 1: "truncated", 2: "malformed", 3: "copy", 4: "error500"}

    def plan(body):
        h = sum(map(ord, json.dumps(body["messages"]))) % 10
        return behaviours.get(h, "good")

    srv = fake_openai(plan)
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="40")
    out = run_all(RunContext(s, "2026-11-25", "manual__t1"))
    store = store_from_settings(s)
    snap = out["snapshot_uri"].split(store.uri + "/")[1]
    data, rej, qua = (_read(store, f"{snap}/{d}/part-00000.parquet") for d in ("data", "rejected", "quarantined"))
    manifest = store.read_json(f"{snap}/manifest.json")
    c = manifest["counts"]
    assert c["prompts"] == len(data) + len(rej) + len(qua) == 80  # nothing lost
    assert c["accepted"] == len(data) and c["rejected"] == len(rej) and c["quarantined"] == len(qua)
    seen = srv.requests
    assert len(qua) == seen["error500"] and set(qua.reason_code) == {"http_500"}
    reasons = rej.reason_code.str.split(",").explode().value_counts().to_dict()
    assert reasons.get("repetitive", 0) >= seen["repeat"]
    assert reasons.get("truncated", 0) == seen["truncated"]
    assert reasons.get("schema_invalid", 0) >= seen["malformed"] + seen["truncated"]
    assert reasons.get("copies_dialogue", 0) >= seen["copy"]
    assert (data.overall_score >= s.quality.overall_min).all() and (data.q_schema_valid == 1).all()
    # lineage on every published row
    for col in ("dialogue_id", "instruction_id", "template_id", "variant", "sampling_weight", "model",
                "sampling_params_hash", "snapshot_id", "config_hash", "code_version", "gate_suite_version", "turn_span"):
        assert data[col].notna().all(), col
    assert manifest["gx"]["batch_gate_success"] is True
    assert store.read_json(f"{snap}/gx/row_gate.json")["results"]
    assert store.read_json(LATEST_KEY)["snapshot_id"] == manifest["snapshot_id"]


def test_same_logical_date_publishes_same_record_ids(make_settings, fake_openai):
    srv = fake_openai(planted(0.3, "repeat"))
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="12")
    a = run_all(RunContext(s, "2026-11-25", "manual__a"))
    b = run_all(RunContext(s, "2026-11-25", "manual__b"))
    again = run_all(RunContext(s, "2026-11-25", "manual__a"))  # a retried publish is a no-op
    store = store_from_settings(s)
    ids = [sorted(_read(store, u.split(store.uri + "/")[1] + "/data/part-00000.parquet").prompt_id)
           for u in (a["snapshot_uri"], b["snapshot_uri"])]
    assert ids[0] == ids[1] and len(ids[0]) > 0
    assert again.get("already_published") is True


def test_failing_batch_gate_publishes_nothing(make_settings, fake_openai):
    srv = fake_openai(planted(0.3, "repeat"))
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="8")
    run_all(RunContext(s, "2026-11-24", "manual__ok"))
    store = store_from_settings(s)
    before = store.read_bytes(LATEST_KEY)
    strict = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="8", DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.99")
    with pytest.raises(BatchGateFailed, match="accept_rate_below_min"):
        run_all(RunContext(strict, "2026-11-25", "manual__strict"))
    assert store.read_bytes(LATEST_KEY) == before
    assert not store.list("snapshots/ds=2026-11-25/")
    assert store.list("work/ds=2026-11-25/run=manual__strict/gate/gx/")  # evidence kept
