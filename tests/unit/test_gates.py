"""GX row and batch gates on hand-made scored records."""

from __future__ import annotations

import json

import pytest

from dialinsight_core import schemas
from dialinsight_core.quality import REASON_CODES
from dialinsight_core.quality.gates import Baseline, apply_gates, expected_rows, remove_docs, row_expectations

FAMILIES = ["information_extraction"] * 3 + ["summarisation"] * 3 + ["dialogue_generation"] * 2 + ["data_analysis"] * 2


def _row(i: int, **over) -> dict:
    row = {f.name: None for f in schemas.SCORED}
    row.update(prompt_id=f"p{i:03d}", dialogue_id=f"d{i}", instruction_id="su-001", task_family=FAMILIES[i % 10],
               scene="rental_search", lang="en", output_schema_id="summarisation", template_id="chat-v1",
               variant="plain", sampling_weight=0.1, seed=1, library_version="v1", turn_span="0-9",
               output_text='{"summary": "ok"}', output_json='{"summary": "ok"}', model="m", engine="openai",
               sampling_params_hash="h", prompt_tokens=10, completion_tokens=5, finish_reason="stop", latency_s=0.1,
               cache_hit=False, q_schema_valid=1.0, q_non_empty=1.0, q_not_truncated=1.0, q_length_ok=1.0,
               q_lang_match=1.0, q_repetition=0.9, q_copy=1.0, q_echo=1.0, q_refusal=1.0, q_pii_leak=1.0,
               q_grounding=0.7 + (i % 5) / 20, q_coverage=1.0, cheap_score=0.95, overall_score=0.85 + (i % 7) / 50,
               layers_run="rules,grounding")
    row.update(over)
    return row


def _gate(rows, settings, **kw):
    res = apply_gates(schemas.table(schemas.SCORED, rows), settings, **kw)
    remove_docs(res)
    return res


@pytest.mark.parametrize(("dim", "bad"), [
    ("schema_valid", 0.0), ("non_empty", 0.0), ("not_truncated", 0.0), ("length_ok", 0.2), ("lang_match", 0.0),
    ("repetition", 0.1), ("copy", 0.0), ("echo", 0.1), ("refusal", 0.0), ("pii_leak", 0.0), ("grounding", 0.3),
    ("coverage", 0.0), ("judge_faithfulness", 0.25),
])
def test_row_gate_rejects_each_dimension_with_its_reason(settings, dim, bad):
    rows = [_row(i) for i in range(10)]
    findings = {dim: {"evidence": "here"}}
    rows[3] = _row(3, **{f"q_{dim}": bad, "quality_findings": json.dumps(findings)})
    res = _gate(rows, settings)
    rej = res.rejected.to_pylist()
    assert [r["prompt_id"] for r in rej] == ["p003"] and rej[0]["reason_code"] == REASON_CODES[dim]
    detail = json.loads(rej[0]["reason_detail"])[0]
    assert detail["column"] == f"q_{dim}" and detail["observed"] == bad
    assert detail["min_value"] == settings.quality.thresholds[dim] and detail["evidence"] == {"evidence": "here"}


def test_row_gate_combines_reasons_and_checks_required_columns(settings):
    rows = [_row(i) for i in range(10)]
    rows[1] = _row(1, q_schema_valid=0.0, overall_score=0.7)
    rows[6] = _row(6, output_text=None)
    res = _gate(rows, settings)
    got = {r["prompt_id"]: r["reason_code"] for r in res.rejected.to_pylist()}
    assert got == {"p001": "schema_invalid,low_overall_score", "p006": "missing_output_text"}
    assert res.accepted.num_rows == 8 and res.stats["accept_rate"] == 0.8
    assert res.row_results["success"] is False and res.batch_success


def test_unjudged_records_are_not_rejected_for_missing_judge_scores(settings):
    rows = [_row(i) for i in range(10)]  # q_judge_* are null
    rows[2] = _row(2, q_judge_faithfulness=1.0, q_judge_completeness=0.75, judge_status="ok")
    assert _gate(rows, settings).rejected.num_rows == 0


def test_batch_gate_fails_on_low_accept_rate(make_settings):
    s = make_settings(DIALINSIGHT__GATES__MIN_ACCEPT_RATE="0.5")
    rows = [_row(i, q_repetition=0.0) for i in range(6)] + [_row(10 + i) for i in range(4)]
    res = _gate(rows, s)
    assert not res.batch_success
    assert any(f.startswith("accept_rate_below_min") for f in res.failed_batch_expectations)
    assert res.stats["scored_in"] == res.stats["accepted"] + res.stats["rejected"] == 10


def test_batch_gate_checks_each_dimension_mean(make_settings):
    s = make_settings(DIALINSIGHT__GATES__MIN_MEAN__GROUNDING="0.8", DIALINSIGHT__QUALITY__THRESHOLDS__GROUNDING="0.5")
    res = _gate([_row(i, q_grounding=0.6 + i / 100) for i in range(10)], s)
    assert not res.batch_success and any(f.startswith("mean_grounding_below_min") for f in res.failed_batch_expectations)


def test_score_collapse_alarm(make_settings):
    s = make_settings(DIALINSIGHT__GATES__COLLAPSE__MIN_ROWS="5")
    judged = dict(q_judge_faithfulness=1.0, q_judge_completeness=1.0, judge_status="ok")
    collapsed = [_row(i, **judged) for i in range(10)]  # the judge gives everything the same score
    res = _gate(collapsed, s)
    assert not res.batch_success
    assert any(f.startswith("score_collapse_q_judge_faithfulness") for f in res.failed_batch_expectations)
    spread = [_row(i, **{**judged, "q_judge_faithfulness": [0.5, 0.75, 1.0][i % 3]}) for i in range(10)]
    spread = [dict(r, q_judge_completeness=r["q_judge_faithfulness"]) for r in spread]
    assert _gate(spread, s).batch_success


def test_collapse_check_skipped_and_reported_on_small_samples(settings):
    rows = [_row(i, q_judge_faithfulness=1.0, q_judge_completeness=1.0, judge_status="ok") for i in range(3)]
    res = _gate(rows + [_row(i) for i in range(3, 10)], settings)
    assert res.batch_success
    assert any(sk["check"] == "score_collapse_q_judge_faithfulness" for sk in res.stats["skipped_checks"])


def test_judge_failure_rate(make_settings):
    s = make_settings(DIALINSIGHT__GATES__MAX_JUDGE_FAILURE_RATE="0.2")
    rows = [_row(i, judge_status="failed:http_500" if i < 3 else "ok") for i in range(10)]
    res = _gate(rows, s)
    assert any(f.startswith("judge_failure_rate_above_max") for f in res.failed_batch_expectations)


def test_judge_failure_rate_over_a_handful_of_judged_records_is_skipped_and_reported(make_settings):
    """A tiny run judges one or two records: one truncated verdict is not a failure rate of 100 %."""
    s = make_settings(DIALINSIGHT__GATES__JUDGE_FAILURE_MIN_ROWS="5")
    rows = [_row(i, judge_status="failed:truncated" if i == 0 else ("ok" if i < 4 else None)) for i in range(10)]
    res = _gate(rows, s)  # 4 judged, 1 failed
    assert not any(f.startswith("judge_failure_rate_above_max") for f in res.failed_batch_expectations)
    assert any(sk["check"] == "judge_failure_rate" and "4 judged" in sk["why"] for sk in res.stats["skipped_checks"])
    failing = [_row(i, judge_status="failed:truncated" if i < 4 else ("ok" if i < 5 else None)) for i in range(10)]
    assert any(f.startswith("judge_failure_rate_above_max") for f in _gate(failing, s).failed_batch_expectations)


def test_task_mix_within_tolerance(make_settings):
    s = make_settings(DIALINSIGHT__GATES__TASK_MIX_MIN_ROWS="10", DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="0.1")
    assert _gate([_row(i) for i in range(40)], s).batch_success  # 30/30/20/20 vs targets 30/25/20/25
    skewed = [_row(i, task_family="summarisation") for i in range(40)]
    res = _gate(skewed, s)
    assert not res.batch_success
    failed = {f.split(":")[0] for f in res.failed_batch_expectations}
    assert failed == {"task_mix_information_extraction", "task_mix_summarisation", "task_mix_dialogue_generation",
                      "task_mix_data_analysis"}
    from dialinsight_core.errors import BatchGateFailed

    assert "re-weighted" in BatchGateFailed(res.failed_batch_expectations, "evidence").next_step  # what happens next

    # the band is the tolerance, or the sampling noise of a share of n rows where that is larger
    from dialinsight_core.quality.gates import accepted_expectations

    def band(n: int, **env: str) -> float:
        exps, _ = accepted_expectations(make_settings(DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="0.05", **env), n, None,
                                        None, None)
        kw = next(kw for name, _, kw in exps if name == "task_mix_data_analysis")
        return round(kw["max_value"] - 0.25, 4)

    assert band(100_000) == 0.05
    assert band(100) == round(3 * (0.25 * 0.75 / 100) ** 0.5, 4)  # 0.13: three standard errors
    assert band(100, DIALINSIGHT__GATES__TASK_MIX_Z="0") == 0.05


def test_row_count_against_previous_snapshot(settings):
    rows = [_row(i) for i in range(40)]
    prev = Baseline("2026-11-24/x", accepted=100, dialogues_read=50, params={"max_dialogues": 0})
    res = _gate(rows, settings, baseline=prev, dialogues_read=50, params={"max_dialogues": 0})
    assert not res.batch_success
    assert any(f.startswith("row_count_implausible_vs_previous") for f in res.failed_batch_expectations)
    ok = _gate(rows, settings, baseline=Baseline("x", 60, 50, {"max_dialogues": 0}), dialogues_read=50,
               params={"max_dialogues": 0})
    assert ok.batch_success
    # a smaller run (e.g. the demo) is compared per dialogue read, not to the full nightly count
    assert expected_rows(settings, Baseline("x", 600, 300, {"max_dialogues": 0}), 20, {"max_dialogues": 20}) == 40
    assert isinstance(expected_rows(settings, None, 20, {}), str)
    first = _gate(rows, settings)
    assert first.batch_success and any(sk["check"] == "row_count_vs_previous" for sk in first.stats["skipped_checks"])


def test_empty_batch_fails_min_rows(settings):
    res = _gate([], settings)
    assert not res.batch_success and res.accepted.num_rows == 0


def test_suite_is_built_from_config(make_settings):
    s = make_settings(DIALINSIGHT__QUALITY__OVERALL_MIN="0.8", DIALINSIGHT__QUALITY__THRESHOLDS__ECHO="0.7")
    exps = {code: kw for code, _, kw in row_expectations(s)}
    assert exps["low_overall_score"]["min_value"] == 0.8
    assert exps["echoes_instruction"]["min_value"] == 0.7
    assert exps["repetitive"]["min_value"] == s.quality.thresholds["repetition"]


def test_results_and_data_docs_are_produced(settings):
    res = apply_gates(schemas.table(schemas.SCORED, [_row(i) for i in range(10)]), settings)
    try:
        assert set(res.results) == {"row_gate", "batch_gate", "batch_accepted_gate"}  # parts: write_evidence
        assert (res.data_docs_dir / "index.html").exists()
        pages = list((res.data_docs_dir / "validations").rglob("*.html"))
        assert {p.parts[len(res.data_docs_dir.parts) + 1] for p in pages} >= {"row_gate", "batch_gate"}
        assert res.suites["row_gate"]["version"] == settings.gates.suite_version and res.suites["row_gate"]["hash"]
    finally:
        remove_docs(res)
    assert not res.data_docs_dir.exists()


def test_data_docs_read_offline_and_the_row_gate_says_what_it_rejected(settings):
    """Every page loads its CSS, scripts, fonts and images from the site itself; the row gate's
    pages read "N rows rejected by these expectations", not "Failed", on a passing run."""
    import re
    from urllib.parse import urlsplit

    rows = [_row(i) for i in range(10)]
    rows[2] = _row(2, q_schema_valid=0.0)
    rows[7] = _row(7, q_repetition=0.1)
    res = apply_gates(schemas.table(schemas.SCORED, rows), settings)
    try:
        assert res.batch_success and res.stats["rejected"] == 2
        site = res.data_docs_dir
        pages = list(site.rglob("*.html"))
        assert len(pages) >= 5  # index, expectation suites, validations
        for page in pages:
            text = page.read_text()
            for tag, url in re.findall(r"""<(script|link|img)\b[^>]*?(?:src|href)=["']([^"']+)["']""", text):
                assert not urlsplit(url).scheme and not url.startswith("//"), (page.name, tag, url)
                assert (page.parent / urlsplit(url).path).resolve().is_file(), (page.name, url)
        css = (site / "static/vendor/fontawesome/css/all.min.css").read_text()
        for font in set(re.findall(r"url\(\.\./webfonts/([^)]+\.woff2)\)", css)):
            assert (site / "static/vendor/fontawesome/webfonts" / font).is_file(), font
        row_page = next((site / "validations" / "row_gate").rglob("*.html")).read_text()
        assert "2 rows rejected by these expectations" in row_page and "</i> Failed" not in row_page
        index = (site / "index.html").read_text()
        assert "'_validation_success_text': '2 rows rejected by these expectations'" in index
        assert index.count("'_validation_success_text': 'Failed'") == 0  # both batch suites passed
    finally:
        remove_docs(res)


def test_gating_in_parts_decides_every_row_as_gating_at_once(make_settings):
    """The row gate in parts of 3 rows rejects the same rows for the same reasons, and the batch
    suites, run over every row in SQL, report the same figures."""
    rows = [_row(i, q_judge_faithfulness=[0.5, 0.75, 1.0][i % 3], judge_status="ok" if i % 4 else "failed:x")
            for i in range(20)]
    rows[4] = _row(4, q_schema_valid=0.0)
    rows[11] = _row(11, output_text=None, overall_score=0.1)
    whole = _gate(rows, make_settings(DIALINSIGHT__GATES__COLLAPSE__MIN_ROWS="5"))
    parts = _gate(rows, make_settings(DIALINSIGHT__GATES__COLLAPSE__MIN_ROWS="5", DIALINSIGHT__GATES__BATCH_ROWS="3"))
    assert parts.results["row_gate"]["parts"][-1]["part"] == 6 and whole.results["row_gate"]["parts"][0]["rows"] == 20
    assert parts.accepted.to_pylist() == whole.accepted.to_pylist()
    assert parts.rejected.to_pylist() == whole.rejected.to_pylist()
    assert parts.stats == whole.stats and parts.stats["rejected_by_reason"] == {
        "schema_invalid": 1, "missing_output_text": 1, "low_overall_score": 1}
    observed = {name: [(r["expectation_config"]["meta"]["reason_code"], r["result"].get("observed_value"))
                       for r in res.results[name]["results"]]
                for res in (whole,) for name in ("batch_gate", "batch_accepted_gate")}
    assert observed == {name: [(r["expectation_config"]["meta"]["reason_code"], r["result"].get("observed_value"))
                               for r in parts.results[name]["results"]] for name in observed}
    totals = [r["result"]["unexpected_count"] for r in parts.results["row_gate"]["results"]]
    assert totals == [r["result"]["unexpected_count"] for r in whole.results["row_gate"]["results"]] and sum(totals) == 3


def test_batch_means_are_over_the_run_not_a_mean_of_the_parts_means(make_settings):
    # a part of 7 rows at 0.9 and one of 3 rows at 0.5: the run's mean is 0.78, the parts' means average 0.70
    rows = [_row(i, q_grounding=0.9 if i < 7 else 0.5) for i in range(10)]
    env = dict(DIALINSIGHT__GATES__MIN_MEAN__GROUNDING="0.75", DIALINSIGHT__QUALITY__THRESHOLDS__GROUNDING="0.4",
               DIALINSIGHT__GATES__BATCH_ROWS="7")
    res = _gate(rows, make_settings(**env))
    mean = next(r for r in res.results["batch_gate"]["results"]
                if r["expectation_config"]["meta"]["reason_code"] == "mean_grounding_below_min")
    assert mean["result"]["observed_value"] == pytest.approx(0.78) and res.batch_success
    assert [p["rows"] for p in res.results["row_gate"]["parts"]] == [7, 3]


def test_each_row_gate_part_has_its_data_docs_page_saying_what_it_rejected(make_settings):
    rows = [_row(i) for i in range(10)]
    rows[2] = _row(2, q_schema_valid=0.0)
    rows[3] = _row(3, q_schema_valid=0.0)
    rows[8] = _row(8, q_repetition=0.1)
    res = apply_gates(schemas.table(schemas.SCORED, rows), make_settings(DIALINSIGHT__GATES__BATCH_ROWS="5"),
                      run_name="2026-11-25/manual__x")
    try:
        pages = {p.relative_to(res.data_docs_dir / "validations" / "row_gate").parts[0]: p.read_text()
                 for p in (res.data_docs_dir / "validations" / "row_gate").rglob("*.html")}
        assert set(pages) == {"2026-11-25_manual__x_part-00000", "2026-11-25_manual__x_part-00001"}
        assert "2 rows rejected by these expectations" in pages["2026-11-25_manual__x_part-00000"]
        assert "1 rows rejected by these expectations" in pages["2026-11-25_manual__x_part-00001"]
        index = (res.data_docs_dir / "index.html").read_text()
        assert index.count("rows rejected by these expectations'") == 2 and "'Failed'" not in index
    finally:
        remove_docs(res)


def test_the_cli_prints_a_failed_gates_next_step(monkeypatch, capsys, tmp_path):
    from dialinsight_core import __main__ as cli
    from dialinsight_core.errors import BatchGateFailed

    def fail(ctx):
        raise BatchGateFailed(["task_mix_data_analysis: observed 0.1"], "file:///evidence")

    monkeypatch.setenv("DIALINSIGHT__STORAGE__URI", f"file://{tmp_path}")
    monkeypatch.setattr(cli, "run_all", fail)
    assert cli.main(["run", "--ds", "2026-11-25"]) == 3
    err = capsys.readouterr().err
    assert "task_mix_data_analysis" in err and "next step:" in err and "re-weighted" in err
