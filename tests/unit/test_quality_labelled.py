"""The labelled clean / defective answer set (tests/fixtures/quality_labelled, built by
benchmarks/quality_set.py) through the real cheap cascade: the issue's bars per language and
family (clean) and per language and defect kind. The figures are in docs/benchmarks.md."""

from __future__ import annotations

import pytest

from benchmarks.quality_bench import load, score, summarise


@pytest.fixture(scope="module")
def summary():
    dialogues, labels = load()
    return summarise(score(dialogues, labels))


def test_clean_answers_are_falsely_rejected_at_most_2_percent_in_each_language_and_family(summary):
    assert len(summary["clean"]) == 8  # zh and en x four families
    for key, v in summary["clean"].items():
        assert v["n"] >= 60 and v["rate"] <= 0.02, (key, v)


def test_each_defect_kind_is_rejected_98_percent_for_its_own_reason(summary):
    assert len(summary["defects"]) == 20  # zh and en x ten defect kinds
    for key, v in summary["defects"].items():
        assert v["n"] >= 200 and v["rate"] >= 0.98, (key, v)
        assert v["own_reason"] / v["n"] >= 0.98, (key, v)
