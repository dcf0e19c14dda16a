"""The whole pipeline in one process against the test OpenAI server (fast path)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dialinsight_core.runs.nightly import BatchGateFailed, RunContext, run_all
from dialinsight_core.storage import LATEST_KEY, store_from_settings
from tests.support.fake_openai import DEFECT_REASONS, is_judge, planted, planted_mix


def _settings(make_settings, srv, **env):
    return make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
                         DIALINSIGHT__ENGINE__MAX_RETRIES="0", **env)


def _read(store, key) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


def test_planted_defects_are_rejected_with_reasons(make_settings, fake_openai):
    behaviours = {0: "repeat", 1: "truncated", 2: "malformed", 3: "copy", 4: "error500"}

    def plan(body):
        if is_judge(body):
            return "good"
        h = sum(map(ord, json.dumps(body["messages"]))) % 10
        return behaviours.get(h, "good")

    srv = fake_openai(plan)
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="40", DIALINSIGHT__GATES__MIN_MEAN__SCHEMA_VALID="0")
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
    # the "malformed" reply is an unterminated JSON string, and a pasted stretch of dialogue or a loop
    # cut at the field's maxLength stops mid-sentence: all are cut, whatever their finish reason says
    cut = seen["truncated"] + seen["malformed"]
    assert cut <= reasons.get("truncated", 0) <= cut + seen["copy"] + seen["repeat"], (reasons, seen)
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


def test_each_planted_quality_defect_is_rejected_with_its_reason(make_settings, fake_openai):
    """A planted share of every defect kind: each planted record is rejected with the reason for
    its defect; clean records pass; the judge sees at most its configured share."""
    kinds = ["refusal", "boilerplate", "pii", "echo", "invented", "wrong_lang", "repeat", "copy", "truncated"]
    plan = planted_mix(dict.fromkeys(kinds, 0.05))
    srv = fake_openai(plan)
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="60", DIALINSIGHT__GATES__MIN_MEAN__SCHEMA_VALID="0",
                  DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="0.5", DIALINSIGHT__GATES__MIN_MEAN__PII_LEAK="0.9")
    out = run_all(RunContext(s, "2026-11-25", "manual__defects"))
    store = store_from_settings(s)
    snap = out["snapshot_uri"].split(store.uri + "/")[1]
    data, rej = (_read(store, f"{snap}/{d}/part-00000.parquet") for d in ("data", "rejected"))
    prompts = _read(store, "work/ds=2026-11-25/run=manual__defects/prompts/prompts.parquet")
    planted_kind = {p.prompt_id: plan({"messages": json.loads(p.messages)}) for p in prompts.itertuples()}
    family = dict(zip(prompts.prompt_id, prompts.task_family, strict=True))
    rej_reasons = {r.prompt_id: set(r.reason_code.split(",")) for r in rej.itertuples()}
    # the pii_leak batch bound was relaxed for this run only because leaks are planted (5 %, plus chance):
    # no answer but a planted one may leak
    assert {p for p, r in rej_reasons.items() if "pii_leak" in r} <= {p for p, k in planted_kind.items() if k == "pii"}
    checked = {k: 0 for k in kinds}
    for pid, kind in planted_kind.items():
        if kind == "good":
            continue
        if kind == "boilerplate" and family[pid] in s.quality.boilerplate_exempt_families:
            continue  # an agent's reply may legitimately say "let me know if you have any questions"
        assert pid in rej_reasons, (kind, pid)
        assert DEFECT_REASONS[kind] in rej_reasons[pid], (kind, rej_reasons[pid])
        checked[kind] += 1
    assert all(n >= 1 for n in checked.values()), checked  # every defect kind was planted and caught
    clean = [pid for pid, k in planted_kind.items() if k == "good"]
    clean_rejected = [pid for pid in clean if pid in rej_reasons]
    assert clean_rejected == [], [rej_reasons[p] for p in clean_rejected]
    assert set(data.prompt_id) <= set(clean) | {p for p, k in planted_kind.items() if k == "boilerplate"}
    # evidence a person can act on: the rejected record says what was wrong
    detail = {r.prompt_id: json.loads(r.reason_detail) for r in rej.itertuples()}
    pii = next(p for p, k in planted_kind.items() if k == "pii")
    pii_item = next(d for d in detail[pii] if d["reason_code"] == "pii_leak")
    assert "phone" in pii_item["evidence"] or "email" in pii_item["evidence"]
    # ...without publishing the leaked datum itself: answer, chat, findings and evidence are redacted
    leaked = ("415-555-2671", "13812345678")
    for col in rej.columns:
        text = rej[col].astype(str).str.cat(sep="\n")
        assert not any(x in text for x in leaked), col
    assert "[PHONE_1]" in rej.set_index("prompt_id").at[pii, "output_text"]
    assert list(rej.set_index("prompt_id").at[pii, "messages"])[-1]["content"].count("[PHONE_1]") >= 1
    raw_rejected = _read(store, "work/ds=2026-11-25/run=manual__defects/gate/rejected.parquet")
    assert any(x in raw_rejected.output_text.str.cat() for x in leaked)  # the work table kept it: the test plants it
    inv = next(p for p, k in planted_kind.items() if k == "invented")
    inv_item = next(d for d in detail[inv] if d["reason_code"] == "ungrounded")
    assert "num:98765" in inv_item["evidence"]["unsupported_facts"]
    # the judge: only borderline + audit records, never more than max_share; its cost is reported
    manifest = store.read_json(f"{snap}/manifest.json")
    cost = manifest["quality_cost"]
    n = len(prompts)
    assert cost["layers"]["rules"] == cost["layers"]["grounding"] == n
    assert 0 < cost["layers"]["judge"] <= int(s.quality.judge.max_share * n)
    assert srv.requests_by_kind()["judge"] == cost["layers"]["judge"]
    assert cost["judge"]["tokens"] > 0 and cost["judge"]["share"] <= s.quality.judge.max_share
    scored = pd.concat([data, rej])
    judged = scored[scored.judge_reason.notna()]
    assert set(judged.judge_reason) <= {"borderline", "audit"}
    assert judged.q_judge_faithfulness.notna().all() and (judged.judge_status == "ok").all()
    assert scored[scored.judge_reason.isna()].q_judge_faithfulness.isna().all()
    assert manifest["gx"]["suites"]["row_gate"]["version"] == s.gates.suite_version
    assert store.exists(f"{snap}/gx/data_docs/index.html")


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
    with pytest.raises(BatchGateFailed, match="accept_rate_below_min") as failed:
        run_all(RunContext(strict, "2026-11-25", "manual__strict"))
    assert store.read_bytes(LATEST_KEY) == before
    written = failed.value.written  # what the gate wrote before it stopped the run (the benchmark reads it)
    assert written is not None and written["gx"]["batch_gate_success"] is False
    assert written["stats"]["accepted"] + written["stats"]["rejected"] == written["stats"]["scored_in"] > 0
    assert store.exists(written["keys"]["accepted"]) and store.exists(written["keys"]["rejected"])
    assert not store.list("snapshots/ds=2026-11-25/")
    assert store.list("work/ds=2026-11-25/run=manual__strict/gate/gx/")  # evidence kept


def test_dialogues_published_earlier_are_not_labeled_again(make_settings, fake_openai):
    """Against earlier snapshots: a re-export of published dialogues is recorded, never labeled twice;
    a rerun of the same logical date is not affected (idempotency)."""
    srv = fake_openai()
    s = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="6",
                  DIALINSIGHT__INGEST__DEDUP_AGAINST_PUBLISHED="true")
    first = run_all(RunContext(s, "2026-11-24", "manual__first"))
    store = store_from_settings(s)
    snap = first["snapshot_uri"].split(store.uri + "/")[1]
    index = _read(store, f"{snap}/dialogues/index.parquet")
    assert len(index) == 6 and set(index.snapshot_id) == {"2026-11-24/manual__first"}
    rerun_same_date = run_all(RunContext(s, "2026-11-24", "manual__again"))
    assert rerun_same_date["counts"]["prompts"] == first["counts"]["prompts"]
    more = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="9",
                     DIALINSIGHT__INGEST__DEDUP_AGAINST_PUBLISHED="true")
    nxt = run_all(RunContext(more, "2026-11-25", "manual__next"))
    snap2 = nxt["snapshot_uri"].split(store.uri + "/")[1]
    qua = _read(store, f"{snap2}/quarantined/part-00000.parquet")
    dup = qua[qua.reason_code == "duplicate_of_published"]
    assert len(dup) == 6 and dup.reason_detail.str.contains("2026-11-24/manual__").all()
    stats = store.read_json(f"{snap2}/ingest_stats.json")
    assert stats["dialogues_kept"] == 3 and stats["duplicates"]["duplicate_of_published"] == 6
    assert nxt["counts"]["prompts"] == 6  # only the 3 new dialogues were prompted and labeled


def test_publish_streams_in_parts_and_writes_what_one_part_writes(make_settings, fake_openai):
    """Publish completes, redacts and writes a part of ``publishing.batch_rows`` rows at a time (rejected
    answers redacted in worker processes): the snapshot holds what publishing it in one part holds,
    and its files are written row group by row group."""
    srv = fake_openai(planted_mix({"pii": 0.3, "repeat": 0.2}))
    whole = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="20", DIALINSIGHT__GATES__MIN_MEAN__PII_LEAK="0",
                      DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0", DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="1")
    parts = _settings(make_settings, srv, DIALINSIGHT__INGEST__MAX_DIALOGUES="20", DIALINSIGHT__GATES__MIN_MEAN__PII_LEAK="0",
                      DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0", DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="1",
                      DIALINSIGHT__PUBLISHING__BATCH_ROWS="3", DIALINSIGHT__PUBLISHING__WORKERS="2",
                      DIALINSIGHT__PUBLISHING__PARALLEL_MIN_ROWS="1")
    a = run_all(RunContext(whole, "2026-11-25", "manual__whole"))
    b = run_all(RunContext(parts, "2026-11-25", "manual__parts"))
    store = store_from_settings(whole)
    snaps = [u.split(store.uri + "/")[1] for u in (a["snapshot_uri"], b["snapshot_uri"])]
    per_run = ["snapshot_id", "config_hash", "cache_hit", "latency_s"]  # the second run is answered from the cache
    for d in ("data", "rejected"):
        one, many = (_read(store, f"{snap}/{d}/part-00000.parquet").drop(columns=per_run).sort_values("prompt_id")
                     .reset_index(drop=True) for snap in snaps)
        assert len(one) > 6, d
        pd.testing.assert_frame_equal(one.astype(str), many.astype(str))
    rejected = _read(store, f"{snaps[1]}/rejected/part-00000.parquet")
    leaked = rejected[rejected.reason_code.str.contains("pii_leak")]
    assert len(leaked) > 0 and leaked.output_text.str.contains(r"\[(?:PHONE|EMAIL|ID|NAME)", regex=True).all()
    assert all(m[-1]["role"] == "assistant" and m[-1]["content"] == t for m, t in zip(leaked.messages, leaked.output_text,
                                                                                      strict=True))
    n_groups = pq.ParquetFile(io.BytesIO(store.read_bytes(f"{snaps[1]}/data/part-00000.parquet"))).num_row_groups
    assert n_groups == -(-a["counts"]["accepted"] // 3)
    manifests = [store.read_json(f"{snap}/manifest.json") for snap in snaps]
    assert manifests[0]["record_ids_sha256"] == manifests[1]["record_ids_sha256"]
    assert manifests[0]["exports"]["counts"] == manifests[1]["exports"]["counts"]
    for fmt, splits in manifests[0]["exports"]["files"].items():
        total = 0
        for key in splits.values():  # train and validation (dialogues held out)
            lines = [sorted(store.read_bytes(f"{snap}/{key}").decode().splitlines()) for snap in snaps]
            assert lines[0] == lines[1], (fmt, key)
            total += len(lines[0])
        assert total == a["counts"]["accepted"], fmt
    assert manifests[0]["report"]["rates"] == manifests[1]["report"]["rates"]


def test_the_sampler_learns_the_accepted_mix_from_earlier_nights(make_settings, fake_openai):
    """Night 0 draws for the targets alone; its gate records each stratum's outcomes; night 1 reads
    them, re-solves the weights and its accepted mix lands closer to the targets (the server's known
    rule: a fixed share of each family's answers are loops the rules reject)."""
    from benchmarks.mix_bench import LOOP_SHARE, rule_plan

    env = {"DIALINSIGHT__INGEST__MAX_DIALOGUES": "200", "DIALINSIGHT__QUALITY__JUDGE__ENABLED": "false",
           "DIALINSIGHT__GATES__TASK_MIX_TOLERANCE": "0.5"}
    srv = fake_openai(rule_plan(make_settings(**env), LOOP_SHARE))
    s = _settings(make_settings, srv, **env)
    store = store_from_settings(s)
    got = []
    for night in range(2):
        ctx = RunContext(s, f"2026-11-0{night + 1}", f"manual__n{night}")
        out = run_all(ctx)
        prompts = store.read_json(ctx.key("prompts/stats.json"))
        gate = store.read_json(ctx.key("gate/stats.json"))
        manifest = store.read_json(out["snapshot_uri"].split(store.uri + "/")[1] + "/manifest.json")
        got.append((prompts, gate, manifest))
        outcomes = store.read_json(gate["outcomes_key"])
        assert sum(n for n, _ in outcomes["strata"].values()) == gate["accepted"] + gate["rejected"]
        assert sum(a for _, a in outcomes["strata"].values()) == gate["accepted"]
    (p0, g0, _), (p1, g1, m1) = got
    assert p0["sampler"]["runs"] == [] and p1["sampler"]["runs"] == [g0["outcomes_key"]]
    assert p1["sampler"]["families"]["data_analysis"] > 1 > p1["sampler"]["families"]["summarisation"]
    dev0, dev1 = (g["mix"]["task_family"]["max_abs_deviation"] for g in (g0, g1))
    assert dev1 < dev0 and dev1 <= 0.05, (dev0, dev1)
    assert m1["mix_audit"]["accepted"]["task_family"]["max_abs_deviation"] == dev1
    assert m1["mix_audit"]["sampler_digest"] == p1["sampler"]["digest"] != p0["sampler"]["digest"]
    page = store.read_bytes(out["snapshot_uri"].split(store.uri + "/")[1] + "/report.html").decode()
    assert "Strata: task family" in page and "adaptive weights from 1 earlier run" in page
    # a rerun of night 1's date after a backfill of an older date: the date's pinned weights, the same prompts
    from dialinsight_core.runs.nightly import run_build_prompts, run_ingest

    store.write_json("sampler/outcomes/ds=2026-10-01/run=manual__backfill.json",
                     {"strata": {"summarisation|viewing_appointment|both|en": [100, 0]}})
    again = RunContext(s, "2026-11-02", "manual__rerun")
    p_again = run_build_prompts(again, run_ingest(again))
    assert p_again["stats"]["sampler"] == p1["sampler"]
    ids = (lambda c: sorted(store.read_table(c.key("prompts/prompts.parquet")).column("prompt_id").to_pylist()))  # noqa: E731
    assert ids(again) == ids(RunContext(s, "2026-11-02", "manual__n1"))
