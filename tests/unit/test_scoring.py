"""The cascade over a batch: every record scored by rules and grounding, the judge only where needed,
a judge failure marks a record and never drops it, and the cost account adds up."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dialinsight_core import schemas
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.llm import Engine, LabelRequest, LabelResult, parse_json
from dialinsight_core.prompts import build_prompts
from dialinsight_core.quality.scoring import overall, score_labels
from tests.support.fake_openai import answer


class ScriptedJudge(Engine):
    """A stand-in judge engine that replies from a script and records what it was asked."""

    name, model = "scripted", "scripted-judge"

    def __init__(self, reply):
        self.reply = reply
        self.seen: list[LabelRequest] = []
        self.closed = False

    def generate(self, requests):
        self.seen += requests
        return [self.reply(r) for r in requests]

    def close(self):
        self.closed = True


def _batch(settings, behaviour="good", n=6):
    res = ingest(settings, max_dialogues=n)
    lib = load_library(settings)
    out_schemas = load_output_schemas(settings)
    prompts = build_prompts(res.dialogues, res.turns, lib, out_schemas, settings, "2026-11-25").prompts
    labels = []
    for p in prompts.to_pylist():
        body = {"messages": json.loads(p["messages"]),
                "response_format": {"json_schema": {"schema": out_schemas[p["output_schema_id"]]}}}
        text, finish = answer(body, behaviour(p) if callable(behaviour) else behaviour)
        labels.append({"prompt_id": p["prompt_id"], "output_text": text, "output_json": parse_json(text), "model": "m",
                       "engine": "openai", "sampling_params_hash": "h", "prompt_tokens": 100, "completion_tokens": 50,
                       "finish_reason": finish, "latency_s": 0.1, "cache_hit": False,
                       "model_fingerprint": "sha256:test"})
    return schemas.table(schemas.LABELS, labels), prompts, res.turns, lib, out_schemas


def _ok(req):
    return LabelResult(req.prompt_id, json.dumps({"rationale": "fine", "faithfulness": 4, "completeness": 4,
                                                  "instruction_following": 5, "fluency": 5}), "stop", 300, 40, 0.1)


def test_every_record_gets_every_cheap_dimension_and_the_judge_sees_only_its_share(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="0.2", DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE="0.25")
    labels, prompts, turns, lib, out_schemas = _batch(s, n=10)
    judge = ScriptedJudge(_ok)
    res = score_labels(labels, prompts, turns, lib, out_schemas, s, lambda: judge)
    df = res.scored.to_pandas()
    assert len(df) == labels.num_rows == res.stats["labels_in"]
    for d in ("schema_valid", "refusal", "pii_leak", "echo", "grounding", "coverage"):
        assert df[f"q_{d}"].between(0, 1).all(), d
    judged = df[df.judge_reason.notna()]
    assert 0 < len(judged) == len(judge.seen) <= int(0.25 * len(df)) and judge.closed
    assert (judged.layers_run == "rules,grounding,judge").all()
    assert (df[df.judge_reason.isna()].layers_run == "rules,grounding").all()
    assert df[df.judge_reason.isna()].q_judge_faithfulness.isna().all()
    cost = res.stats
    assert cost["layers"] == {"rules": len(df), "grounding": len(df), "judge": len(judged)}
    assert cost["judge"]["tokens"] == 340 * len(judged) and cost["judge"]["share"] <= 0.25
    assert cost["audit"]["judged_ok"] == (judged.judge_reason == "audit").sum()


def test_no_record_in_doubt_means_no_judge_engine_is_built(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="0", DIALINSIGHT__QUALITY__JUDGE__BAND_LOW="0.0",
                      DIALINSIGHT__QUALITY__JUDGE__BAND_HIGH="0.0", DIALINSIGHT__QUALITY__JUDGE__DOUBT_MARGIN="0")
    labels, prompts, turns, lib, out_schemas = _batch(s, n=4)

    def never():
        raise AssertionError("the judge engine must not be built")

    res = score_labels(labels, prompts, turns, lib, out_schemas, s, never)
    assert res.stats["layers"]["judge"] == 0 and res.scored.num_rows == labels.num_rows


def test_judge_failure_marks_the_record_and_keeps_the_cheap_verdict(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="1.0", DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE="1.0")
    labels, prompts, turns, lib, out_schemas = _batch(s, n=4)
    judge = ScriptedJudge(lambda r: LabelResult(r.prompt_id, None, None, 0, 0, 1.0, "timeout", "read timed out"))
    res = score_labels(labels, prompts, turns, lib, out_schemas, s, lambda: judge)
    df = res.scored.to_pandas()
    assert len(df) == labels.num_rows and (df.judge_status == "failed:timeout").all()
    assert (df.layers_run == "rules,grounding,judge_failed").all()
    assert (df.overall_score == df.cheap_score).all() and df.q_judge_faithfulness.isna().all()
    assert res.stats["judge"]["failed_by_reason"] == {"failed:timeout": len(df)}
    assert all(json.loads(f)["judge"]["status"] == "failed:timeout" for f in df.quality_findings)


def test_a_low_judge_verdict_lowers_the_overall_score(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="1.0", DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE="1.0")
    labels, prompts, turns, lib, out_schemas = _batch(s, n=3)
    low = ScriptedJudge(lambda r: LabelResult(r.prompt_id, json.dumps(
        {"rationale": "invented price", "faithfulness": 1, "completeness": 1, "instruction_following": 1, "fluency": 1}),
        "stop", 300, 40, 0.1))
    df = score_labels(labels, prompts, turns, lib, out_schemas, s, lambda: low).scored.to_pandas()
    assert (df.overall_score < df.cheap_score).all() and (df.q_judge_faithfulness == 0.0).all()
    assert set(df.judge_rationale) == {"invented price"}


def test_planted_defects_get_their_evidence(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__ENABLED="false")
    kinds = ["pii", "refusal", "invented", "echo"]
    labels, prompts, turns, lib, out_schemas = _batch(s, behaviour=lambda p: kinds[int(p["prompt_id"], 16) % 4], n=8)
    df = score_labels(labels, prompts, turns, lib, out_schemas, s, None).scored.to_pandas()
    by_kind = {k: df[[kinds[int(pid, 16) % 4] == k for pid in df.prompt_id]] for k in kinds}
    assert (by_kind["pii"].q_pii_leak == 0).all() and (by_kind["refusal"].q_refusal == 0).all()
    assert (by_kind["invented"].q_grounding <= 0.5).all() and (by_kind["echo"].q_echo < 0.5).all()
    findings = [json.loads(f) for f in by_kind["pii"].quality_findings]
    assert all("pii_leak" in f for f in findings)


def test_not_mentioned_is_not_a_claim(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__ENABLED="false")
    labels, prompts, turns, lib, out_schemas = _batch(s, n=2)
    rows = labels.to_pylist()
    pr = {p["prompt_id"]: p for p in prompts.to_pylist()}
    ie = next(r for r in rows if pr[r["prompt_id"]]["task_family"] == "information_extraction")
    ie["output_text"] = json.dumps({"fields": [{"name": "request", "value": "the customer asked about the apartment"}],
                                    "not_mentioned": ["gym", "parking", "98765"]})
    ie["output_json"] = parse_json(ie["output_text"])
    df = score_labels(schemas.table(schemas.LABELS, [ie]), prompts, turns, lib, out_schemas, s, None).scored.to_pandas()
    assert "unsupported" not in (df.quality_findings[0] or "")


@pytest.mark.parametrize(("dims", "expected"), [
    ({"a": 1.0, "b": 0.0}, 0.5),
    ({"a": 1.0, "b": None}, 1.0),  # an unjudged dimension does not count
    ({"a": None, "b": None}, 0.0),
])
def test_overall_uses_the_dimensions_that_ran(dims, expected):
    assert overall(dims, {"a": 1.0, "b": 1.0}) == expected


def test_scoring_by_shard_equals_scoring_at_once(make_settings):
    """Shards scored one at a time (what the score stage does to bound memory) give the same rows and
    the same judge selection as the whole run at once: the cap and audit sample are the run's."""
    from dialinsight_core.prompts import shard_prompts, shard_turns
    from dialinsight_core.quality.scoring import score_parts

    s = make_settings(DIALINSIGHT__QUALITY__JUDGE__AUDIT_FRACTION="0.2", DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE="0.3")
    labels, prompts, turns, lib, out_schemas = _batch(s, behaviour=lambda p: "copy" if p["prompt_id"] < "4" else "good",
                                                      n=12)
    whole = score_labels(labels, prompts, turns, lib, out_schemas, s, lambda: ScriptedJudge(_ok), "2026-11-25")
    shards = shard_prompts(prompts, 3)
    parts = []
    for p, t in zip(shards, shard_turns(turns, shards), strict=True):
        assert set(t.column("dialogue_id").to_pylist()) == set(p.column("dialogue_id").to_pylist())
        ids = set(p.column("prompt_id").to_pylist())
        parts.append((labels.filter([i in ids for i in labels.column("prompt_id").to_pylist()]), p, t))
    out = []
    stats = score_parts(parts, lib, out_schemas, s, lambda: ScriptedJudge(_ok), "2026-11-25", out.append)
    by_shard = pa.concat_tables(out).sort_by("prompt_id")
    assert by_shard.equals(whole.scored.sort_by("prompt_id"))
    assert stats["judge"] == whole.stats["judge"] and stats["audit"] == whole.stats["audit"]
    assert stats["judge"]["judged"] > 0 and len(out) == 3


def test_scoring_shards_in_worker_processes_equals_one_process(make_settings):
    """The cheap layers in a pool of spawned processes (what large runs get) give the same rows."""
    from dialinsight_core.prompts import shard_prompts, shard_turns
    from dialinsight_core.quality.scoring import score_parts, score_workers

    s = make_settings()
    labels, prompts, turns, lib, out_schemas = _batch(s, n=6)
    shards = shard_prompts(prompts, 2)
    parts = []
    for p, t in zip(shards, shard_turns(turns, shards), strict=True):
        ids = set(p.column("prompt_id").to_pylist())
        parts.append((labels.filter([i in ids for i in labels.column("prompt_id").to_pylist()]), p, t))
    one, two = [], []
    score_parts(parts, lib, out_schemas, s, None, "2026-11-25", one.append, workers=1)
    score_parts(parts, lib, out_schemas, s, None, "2026-11-25", two.append, workers=2)
    assert pa.concat_tables(two).equals(pa.concat_tables(one))
    assert score_workers(s, 100, 4) == 1 and score_workers(s, 10_000, 1) == 1  # small runs and one shard: in process
    assert score_workers(make_settings(DIALINSIGHT__QUALITY__WORKERS="3"), 10_000, 8) == 3


def test_cost_account_is_counted_in_arrow_as_in_python():
    """The cost account sums the run's columns in Arrow; the figures are those of counting rows."""
    import pyarrow as pa

    from dialinsight_core.quality.scoring import cost_stats

    status = ["ok", None, "", "failed:timeout", "ok", "failed:parse", "failed:timeout", None]
    judge_tokens = [120, None, 0, 30, 80, None, 10, None]
    prompt_tokens, completion_tokens = [10, 20, None, 5, 1, 2, 3, 4], [1, None, 2, 3, 4, 5, 6, None]
    t = pa.table({"judge_status": pa.array(status, pa.string()), "judge_tokens": pa.array(judge_tokens, pa.int64()),
                  "prompt_tokens": pa.array(prompt_tokens, pa.int64()),
                  "completion_tokens": pa.array(completion_tokens, pa.int64())})
    st = cost_stats(t, {}, {}, [(True, True), (True, False)], 1.0, 0.5, 0.5, 0.0)
    j = st["judge"]
    assert (j["judged"], j["ok"], j["failed"]) == (5, 2, 3)
    assert j["failed_by_reason"] == {"failed:timeout": 2, "failed:parse": 1}
    assert j["tokens"] == 240 and j["label_tokens"] == sum(x or 0 for x in prompt_tokens + completion_tokens)
    assert st["layers"]["judge"] == 5 and j["share"] == round(5 / 8, 4)
