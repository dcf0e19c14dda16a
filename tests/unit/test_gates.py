"""GX row and batch gates on hand-made scored records."""

from __future__ import annotations

import json

from dialinsight_core import schemas
from dialinsight_core.quality.gates import apply_gates, row_expectations


def _row(i: int, **over) -> dict:
    row = {f.name: None for f in schemas.SCORED}
    row.update(prompt_id=f"p{i:03d}", dialogue_id=f"d{i}", instruction_id="su-001", task_family="summarisation",
               scene="rental_search", lang="en", output_schema_id="summarisation", template_id="chat-v1",
               variant="plain", sampling_weight=0.1, seed=1, library_version="v1", turn_span="0-9",
               output_text='{"summary": "ok"}', output_json='{"summary": "ok"}', model="m", engine="openai",
               sampling_params_hash="h", prompt_tokens=10, completion_tokens=5, finish_reason="stop", latency_s=0.1,
               cache_hit=False, q_schema_valid=1.0, q_non_empty=1.0, q_not_truncated=1.0, q_length_ok=1.0,
               q_lang_match=1.0, q_repetition=0.9, q_copy=1.0, q_grounding=0.9, overall_score=0.95,
               judge_rationale=None, layers_run="rules")
    row.update(over)
    return row


def test_row_gate_rejects_with_actionable_reasons(settings):
    rows = [_row(i) for i in range(10)]
    rows[1] = _row(1, q_schema_valid=0.0, overall_score=0.7)
    rows[2] = _row(2, q_repetition=0.1)
    rows[3] = _row(3, q_not_truncated=0.0)
    rows[4] = _row(4, q_grounding=0.2)
    rows[5] = _row(5, q_copy=0.0)
    rows[6] = _row(6, output_text=None)
    res = apply_gates(schemas.table(schemas.SCORED, rows), settings)
    got = {r["prompt_id"]: r["reason_code"] for r in res.rejected.to_pylist()}
    assert got == {"p001": "schema_invalid,low_overall_score", "p002": "repetitive", "p003": "truncated",
                   "p004": "ungrounded", "p005": "copies_dialogue", "p006": "missing_output_text"}
    detail = json.loads(res.rejected.to_pylist()[1]["reason_detail"])[0]
    assert detail["column"] == "q_repetition" and detail["observed"] == 0.1 and detail["min_value"] == 0.5
    assert res.accepted.num_rows == 4 and res.stats["accept_rate"] == 0.4
    assert res.batch_success
    assert res.row_results["success"] is False and res.batch_results["success"] is True


def test_batch_gate_fails_on_low_accept_rate(make_settings):
    s = make_settings(DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.5")
    rows = [_row(i, q_repetition=0.0) for i in range(6)] + [_row(10 + i) for i in range(4)]
    res = apply_gates(schemas.table(schemas.SCORED, rows), s)
    assert not res.batch_success
    assert any(f.startswith("accept_rate_below_min") for f in res.failed_batch_expectations)
    assert res.stats["scored_in"] == res.stats["accepted"] + res.stats["rejected"] == 10


def test_empty_batch_fails_min_rows(settings):
    res = apply_gates(schemas.table(schemas.SCORED, []), settings)
    assert not res.batch_success and res.accepted.num_rows == 0


def test_suite_is_built_from_config(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__OVERALL_MIN="0.8")
    exps = {code: kw for code, _, kw in row_expectations(s)}
    assert exps["low_overall_score"]["min_value"] == 0.8
    assert exps["repetitive"]["min_value"] == s.quality.repetition_min
