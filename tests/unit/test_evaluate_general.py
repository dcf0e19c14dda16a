"""General-ability scoring: the bundled sets, the stratified subset, accuracy by log-likelihood and its intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_core.evaluate import general as g

ROOT = Path(__file__).resolve().parents[2] / "data" / "general_eval"


def test_bundled_sets_load_with_their_licenses():
    sizes = {name: len(g.load_set(ROOT, name)) for name in ("mmlu_redux_en", "gaokao_bench_zh", "agieval_gaokao_zh")}
    assert sizes == {"mmlu_redux_en": 513, "gaokao_bench_zh": 506, "agieval_gaokao_zh": 504}
    for name in sizes:
        assert (ROOT / name / "LICENSE").is_file() and (ROOT / name / "README.md").is_file()
    assert {it.lang for it in g.load_set(ROOT, "gaokao_bench_zh")} == {"zh"}


def test_a_malformed_item_names_its_line(tmp_path):
    (tmp_path / "bad_en").mkdir()
    rows = [{"id": "1", "subject": "s", "question": "q", "choices": ["a", "b", "c", "d"], "answer": "A"},
            {"id": "2", "subject": "s", "question": "q", "choices": ["a", "b"], "answer": "E"}]
    (tmp_path / "bad_en" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"test.jsonl:2: expected 4 choices"):
        g.load_set(tmp_path, "bad_en")


def test_stratified_subset_covers_every_subject_evenly_and_is_seeded():
    items = g.load_set(ROOT, "mmlu_redux_en")  # 57 subjects x 9
    sub = g.stratified(items, 114, seed=0)
    counts = {}
    for it in sub:
        counts[it.subject] = counts.get(it.subject, 0) + 1
    assert len(sub) == 114 and len(counts) == 57 and set(counts.values()) == {2}
    assert [it.id for it in g.stratified(items, 114, seed=0)] == [it.id for it in sub]
    assert [it.id for it in g.stratified(items, 114, seed=1)] != [it.id for it in sub]
    assert len(g.stratified(items, 0, seed=0)) == 513


class KnowsTheAnswer:
    """A scorer whose log-likelihoods are known: the continuation containing 'right' is likeliest;
    'long right answer' is likelier in total but not per character than 'ok'."""

    def loglikelihoods(self, prefix, continuations):
        return [-1.0 if "right" in c else -5.0 for c in continuations]


def _item(i, answer, choices=("wrong", "right", "bad", "nope")):
    return g.Item("toy_en", "en", str(i), f"s{i % 2}", f"question {i}", tuple(choices), answer)


def test_scoring_picks_the_likeliest_choice_and_counts_correctness():
    items = [_item(i, 1) for i in range(6)] + [_item(i, 0) for i in range(6, 10)]
    rows = g.score_items(items, KnowsTheAnswer())
    assert [r["pick"] for r in rows] == [1] * 10
    acc = g.accuracy(rows, "correct")
    assert acc["n"] == 10 and acc["correct"] == 6 and acc["acc"] == 0.6
    lo, hi = acc["ci95"]
    assert lo < 0.6 < hi and (round(lo, 3), round(hi, 3)) == (0.313, 0.832)  # Wilson, 95 %
    assert acc["by_set"]["toy_en"]["n"] == 10


def test_acc_norm_divides_by_the_choice_length():
    class Totals:
        def loglikelihoods(self, prefix, continuations):
            return [-2.0, -6.0, -9.0, -9.0]  # "ok" wins in total, the 20-character choice per character

    (row,) = g.score_items([_item(0, 1, ("ok", "a much longer answer", "x", "y"))], Totals())
    assert row["pick"] == 0 and row["pick_norm"] == 1 and row["correct_norm"] and not row["correct"]


def test_paired_change_uses_the_same_items_and_counts_flips():
    before = [{"set": "s", "id": str(i), "correct_norm": i < 5} for i in range(10)]
    after = [{"set": "s", "id": str(i), "correct_norm": i < 3 or i in (8, 9)} for i in range(10)]
    ch = g.paired_change(before, after)
    assert ch["n"] == 10 and ch["delta_points"] == 0.0
    assert ch["right_to_wrong"] == 2 and ch["wrong_to_right"] == 2
    lo, hi = ch["ci95_points"]
    assert lo < 0 < hi
    worse = g.paired_change(before, [dict(r, correct_norm=False) for r in before])
    assert worse["delta_points"] == -50.0 and worse["ci95_points"][1] < 0
