"""The run report's tallies: gathered a part at a time, they say what the whole rows say."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.figure import Figure

from dialinsight_core.publishing.report import (
    HIST_BINS,
    SCORE_COLUMNS,
    SHIFT_BINS,
    STRATA,
    Previous,
    ReportTally,
    _hist,
    diff,
    rate_by,
    reject_reasons,
    shares,
)


def _rows(n: int, seed: int, ids: list[str] | None = None) -> pa.Table:
    rnd = random.Random(seed)
    pick = {"task_family": ["summarisation", "information_extraction", None], "scene": ["看房", "签约", "viewing"],
            "role_focus": ["agent", "customer"], "lang": ["zh", "en", "und"], "template_id": ["t1", "t2", "t3"],
            "variant": ["a", "b"]}
    cols: dict[str, list] = {c: [rnd.choice(v) for _ in range(n)] for c, v in pick.items()}
    cols["prompt_id"] = ids or [f"p{rnd.randrange(10**9):09d}" for _ in range(n)]
    # scores on the bin edges too, and nulls: the bins must be the values' own
    edges = [0.0, 0.1, 0.3, 0.7, 0.9, 1.0]
    for c in SCORE_COLUMNS:
        cols[c] = [None if rnd.random() < 0.1 else rnd.choice([rnd.random(), rnd.choice(edges)]) for _ in range(n)]
    cols["output_text"] = [rnd.choice(["好的，已确认。", "Two bedrooms.", ""]) + str(rnd.randrange(5)) if i % 9
                           else None for i in range(n)]
    cols["reason_code"] = [rnd.choice(["", "low_overall", "low_overall,pii_leak", "repetition,low_overall", None])
                           for _ in range(n)]
    return pa.table(cols)


def _tally(rows: pa.Table, part: int, keep_ids: bool = False) -> ReportTally:
    t = ReportTally(keep_ids)
    for start in range(0, rows.num_rows, part):
        t.add(rows.slice(start, part))
    return t


@pytest.mark.parametrize("part", [1, 7, 1000])
def test_a_tally_in_parts_counts_what_the_whole_rows_hold(part):
    rows = _rows(300, seed=part)
    t = _tally(rows, part, keep_ids=True)
    assert t.rows == 300
    for c in STRATA:  # the same counts, keys in the order they first appear (the report's dict order)
        whole = Counter(rows.column(c).to_pylist())
        assert t.counts[c] == whole and list(t.counts[c]) == list(whole)
    assert reject_reasons(t) == Counter(code for j in rows.column("reason_code").to_pylist()
                                        for code in (j or "").split(",") if code)
    for c in SCORE_COLUMNS:
        vals = [v for v in rows.column(c).to_pylist() if v is not None]
        assert t.hist[c].tolist() == np.histogram(vals, bins=HIST_BINS, range=(0, 1))[0].tolist()
    overall = [v for v in rows.column("overall_score").to_pylist() if v is not None]
    assert t.shift.tolist() == np.histogram(overall, bins=SHIFT_BINS, range=(0, 1))[0].tolist()
    assert t.mean_overall() == round(sum(overall) / len(overall), 4)
    digests = [int.from_bytes(hashlib.blake2b((x or "").encode(), digest_size=8).digest(), "little")
               for x in rows.column("output_text").to_pylist()]
    assert t.ids.column("prompt_id").to_pylist() == rows.column("prompt_id").to_pylist()
    assert t.ids.column("output_digest").to_pylist() == digests
    assert shares(t, "lang") == {k: round(v / 300, 4) for k, v in Counter(rows.column("lang").to_pylist()).items()}


def test_dropped_ids_are_freed_and_not_read_again():
    t = _tally(_rows(40, 5), 16, keep_ids=True)
    counts, hist = dict(t.counts["lang"]), {c: h.copy() for c, h in t.hist.items()}
    assert t.ids.num_rows == 40
    t.drop_ids()
    assert t._ids is None and t.counts["lang"] == counts and all((t.hist[c] == h).all() for c, h in hist.items())
    with pytest.raises(ValueError, match="dropped"):
        _ = t.ids


def test_rates_join_accepted_and_rejected_counts():
    acc, rej = _tally(_rows(50, 1), 8), _tally(_rows(30, 2), 8)
    rates = rate_by(acc, rej, "scene")
    for k, (a, total, rate) in rates.items():
        assert (a, total) == (acc.counts["scene"][k], acc.counts["scene"][k] + rej.counts["scene"][k])
        assert rate == round(a / total, 4)
    assert list(rates) == sorted(rates)


def test_the_diff_in_arrow_says_what_python_dicts_say():
    """New, removed, changed (other answer, or a score that differs in its first 6 decimals, a null
    counting as 0), and the 20 smallest changed ids."""
    ids = [f"p{i:05d}" for i in range(400)]
    before_rows = _rows(300, 3, ids[:300])
    before = before_rows.to_pylist()
    now = [dict(r) for r in before[100:]] + _rows(100, 4, ids[300:]).to_pylist()  # 200 kept, 100 new, 100 removed
    for i in range(0, 200, 9):
        now[i]["output_text"] = (now[i]["output_text"] or "") + " changed"
    for i in range(4, 200, 13):
        now[i]["overall_score"] = None if i % 2 else (now[i]["overall_score"] or 0.0) + 1e-9  # not a change at 6 places
    for i in range(5, 200, 17):
        now[i]["overall_score"] = (now[i]["overall_score"] or 0.0) + 0.01
    now_t = pa.Table.from_pylist(now, schema=before_rows.schema)
    got = diff(_tally(now_t, 64, keep_ids=True), Previous("prev", _tally(before_rows, 50, keep_ids=True)))

    def digest(t):
        return hashlib.blake2b((t or "").encode(), digest_size=8).hexdigest()
    n = {r["prompt_id"]: r for r in now}
    b = {r["prompt_id"]: r for r in before_rows.to_pylist()}
    common = set(n) & set(b)
    changed = sorted(i for i in common if digest(n[i]["output_text"]) != digest(b[i]["output_text"])
                     or round(n[i]["overall_score"] or 0, 6) != round(b[i]["overall_score"] or 0, 6))
    assert changed  # the fixture changes rows
    assert got["new"] == len(set(n) - set(b)) == 100 and got["removed"] == len(set(b) - set(n)) == 100
    assert got["changed"] == len(changed) and got["unchanged"] == len(common) - len(changed)
    assert got["changed_ids"] == changed[:20]
    assert got["mix_previous"] == shares(_tally(before_rows, 300), "task_family")


def test_bars_drawn_from_counts_are_the_bars_of_the_values():
    vals = [0.0, 0.1, 0.1, 0.25, 0.3, 0.7, 0.9999, 1.0, 1.0, 0.55]
    a, b = Figure().add_subplot(1, 1, 1), Figure().add_subplot(1, 1, 1)
    a.hist(vals, bins=HIST_BINS, range=(0, 1), alpha=0.6, color="#2e7d32", label="accepted")
    _hist(b, np.histogram(vals, bins=HIST_BINS, range=(0, 1))[0], alpha=0.6, color="#2e7d32", label="accepted")
    bars = [[(p.get_x(), p.get_width(), p.get_height()) for p in ax.patches] for ax in (a, b)]
    assert bars[0] == bars[1] and len(bars[0]) == HIST_BINS
    c = Figure().add_subplot(1, 1, 1)
    _hist(c, np.zeros(HIST_BINS, np.int64), label="none")
    assert not c.patches  # no values, no bars (as the report drew before)
