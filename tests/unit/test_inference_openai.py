"""The OpenAI-compatible engine against a local test server that injects faults."""

from __future__ import annotations

import json

from dialinsight_core.inference import LabelRequest, label_prompts
from dialinsight_core.inference.openai_engine import OpenAIEngine
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.prompts import build_prompts

SCHEMA = {"type": "object", "properties": {"reply": {"type": "string", "maxLength": 200}}, "required": ["reply"]}


def _engine(make_settings, srv, **env):
    s = make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url, **env)
    return OpenAIEngine(s.engine), s


def _req(i: int) -> LabelRequest:
    return LabelRequest(f"p{i}", [{"role": "user", "content": f"Dialogue:\nCustomer: flat {i}\nInstruction: reply"}],
                        SCHEMA)


def test_good_replies_follow_the_schema(make_settings, fake_openai):
    srv = fake_openai()
    engine, _ = _engine(make_settings, srv)
    out = engine.generate([_req(i) for i in range(5)])
    assert [r.prompt_id for r in out] == [f"p{i}" for i in range(5)]
    assert all(r.error_code is None and "reply" in json.loads(r.output_text) for r in out)
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 and r.finish_reason == "stop" for r in out)
    body = srv.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def test_server_errors_are_retried_then_become_records(make_settings, fake_openai):
    srv = fake_openai(plan=lambda body: "error500")
    engine, _s = _engine(make_settings, srv, DIALINSIGHT__ENGINE__MAX_RETRIES="1")
    out = engine.generate([_req(0)])
    assert out[0].error_code == "http_500" and out[0].output_text is None
    assert srv.total == 2  # first try + one retry


def test_timeouts_become_records(make_settings, fake_openai):
    srv = fake_openai(plan=lambda body: "slow", slow_s=2.0)
    engine, _ = _engine(make_settings, srv, DIALINSIGHT__ENGINE__TIMEOUT_S="0.3", DIALINSIGHT__ENGINE__MAX_RETRIES="0")
    out = engine.generate([_req(0), _req(1)])
    assert [r.error_code for r in out] == ["timeout", "timeout"]


def test_malformed_and_truncated_replies_are_labels_for_the_gate(make_settings, fake_openai):
    plans = {"p0": "malformed", "p1": "truncated", "p2": "good"}
    srv = fake_openai(plan=lambda body: plans["p" + body["messages"][0]["content"].split()[3]])  # "flat {i}"
    engine, _ = _engine(make_settings, srv)
    out = {r.prompt_id: r for r in engine.generate([_req(i) for i in range(3)])}
    assert out["p0"].error_code is None and out["p0"].output_text.startswith('{"summary": "unterminated')
    assert out["p1"].finish_reason == "length"
    assert out["p2"].finish_reason == "stop"


def test_label_stage_conserves_records(make_settings, fake_openai):
    srv = fake_openai(plan=lambda body: "error500" if "Hello" in body["messages"][1]["content"][:60] else "good")
    s = make_settings(DIALINSIGHT__ENGINE__KIND="openai", DIALINSIGHT__ENGINE__BASE_URL=srv.base_url,
                      DIALINSIGHT__ENGINE__MAX_RETRIES="0")
    ing = ingest(s, max_dialogues=10)
    prompts = build_prompts(ing.dialogues, ing.turns, load_library(s), load_output_schemas(s), s, "2026-11-25").prompts
    res = label_prompts(prompts, OpenAIEngine(s.engine), load_output_schemas(s), s)
    assert res.stats["prompts_in"] == prompts.num_rows == res.labels.num_rows + res.quarantined.num_rows
    assert res.quarantined.num_rows > 0 and set(res.quarantined.column("reason_code").to_pylist()) == {"http_500"}
    assert set(res.labels.column("engine").to_pylist()) == {"openai"}
    assert all(json.loads(r["record"])["prompt_id"] == r["record_id"] for r in res.quarantined.to_pylist())


# --- async engine: retries with backoff, bounded concurrency, streaming ----------------------

FAST = {"DIALINSIGHT__ENGINE__BACKOFF_S": "0.01", "DIALINSIGHT__ENGINE__BACKOFF_MAX_S": "0.05"}


def _by_id(plans: dict[int, str], default: str = "good"):
    return lambda body: plans.get(int(body["messages"][0]["content"].split()[3]), default)  # "flat {i}"


def test_transient_faults_are_retried_until_a_good_reply(make_settings, fake_openai):
    plans = {0: "flaky500", 1: "flaky_body", 2: "flaky_slow", 3: "good"}
    srv = fake_openai(plan=_by_id(plans), slow_s=2.0)
    engine, _ = _engine(make_settings, srv, DIALINSIGHT__ENGINE__TIMEOUT_S="0.5", **FAST)
    out = engine.generate([_req(i) for i in range(4)])
    assert [r.error_code for r in out] == [None] * 4
    assert all("reply" in json.loads(r.output_text) for r in out)
    assert [r.attempts for r in out] == [2, 2, 2, 1]
    assert srv.total == 7  # three faults seen once each, then answered


def test_each_fault_that_persists_becomes_a_record_with_its_reason(make_settings, fake_openai):
    plans = {0: "error500", 1: "bad_body", 2: "slow", 3: "error429", 4: "context_too_long", 5: "good"}
    srv = fake_openai(plan=_by_id(plans), slow_s=1.5)
    engine, _ = _engine(make_settings, srv, DIALINSIGHT__ENGINE__TIMEOUT_S="0.3", DIALINSIGHT__ENGINE__MAX_RETRIES="2",
                        **FAST)
    out = engine.generate([_req(i) for i in range(6)])
    assert [r.error_code for r in out] == ["http_500", "bad_response", "timeout", "http_429", "context_too_long", None]
    assert [r.attempts for r in out] == [3, 3, 3, 3, 1, 1]  # a 400 is not worth resending
    assert all(r.output_text is None and "attempt" in r.error_detail for r in out[:5])
    assert srv.attempts and max(srv.attempts.values()) == 3


def test_concurrency_is_bounded_and_results_stream_as_they_finish(make_settings, fake_openai):
    srv = fake_openai(plan=_by_id({0: "slow"}), slow_s=1.0)
    engine, _ = _engine(make_settings, srv, DIALINSIGHT__ENGINE__MAX_CONCURRENCY="3")
    order = [i for i, _ in engine.stream([_req(i) for i in range(12)])]
    assert sorted(order) == list(range(12))
    assert order[-1] == 0  # the slow first request did not hold back the eleven behind it
    assert 2 <= srv.max_in_flight <= 3
