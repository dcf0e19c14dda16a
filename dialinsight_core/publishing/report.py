"""The run report: ``report.html`` in every snapshot, one self-contained offline file.

It shows what a data engineer asks of a night's data: the score distribution per dimension, the
accept rate by task family, scene and language, the reject reasons, the task mix (target, prompts,
accepted), what the judge cost and how often it agreed with the cheap layers, tokens per 1k
accepted records, and a diff against the previous snapshot (new, removed and changed records,
score and mix shifts). The plots are matplotlib SVG inlined in the page; the page has no script
and fetches nothing (docs/dataset.md).
"""

from __future__ import annotations

import hashlib
import html
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from dialinsight_core.config import DIMENSIONS
from dialinsight_core.templating import get_template
from dialinsight_core.templating import svg as _svg

ACCEPT, REJECT, PREVIOUS, TARGET = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0"


SCORE_COLUMNS = ("overall_score", *(f"q_{d}" for d in DIMENSIONS))
STRATA = ("task_family", "scene", "role_focus", "lang", "template_id", "variant")
ASK_COLUMNS = ("template_id", "variant")  # in the report's tables, not its figure (too many bars)
HIST_BINS, SHIFT_BINS = 10, 20  # the score figure's bins per dimension; the overall shift figure's


class ReportTally:
    """What the report reads of a snapshot's rows (published, rejected or an earlier snapshot's),
    added a part at a time: rows per value of each stratum column, reject reasons, score histograms,
    the overall score's sum; with ``keep_ids`` (the accepted rows) each row's id, an 8-byte digest of
    its answer and its overall score, for the diff against the next snapshot. So a 1M-row snapshot
    holds its ids and a few dozen bytes a row, not its rows (docs/benchmarks.md)."""

    def __init__(self, keep_ids: bool = False) -> None:
        self.rows = 0
        self.columns: set[str] = set()
        self.counts: dict[str, Counter[Any]] = {c: Counter() for c in STRATA}
        self.reasons: Counter[str] = Counter()
        self.hist = {c: np.zeros(HIST_BINS, np.int64) for c in SCORE_COLUMNS}
        self.shift = np.zeros(SHIFT_BINS, np.int64)  # overall_score, for the shift figure
        self.overall_sum, self.overall_n = 0.0, 0
        self._ids: list[pa.Table] | None = [] if keep_ids else None
        self._dropped = False

    def add(self, rows: pa.Table) -> None:
        self.rows += rows.num_rows
        self.columns.update(rows.column_names)
        for col in STRATA:
            if col in rows.column_names:
                self.counts[col].update(rows.column(col).to_pylist())
        if "reason_code" in rows.column_names:
            self.reasons.update(code for joined in rows.column("reason_code").to_pylist()
                                for code in (joined or "").split(",") if code)
        for col in SCORE_COLUMNS:
            if col in rows.column_names:
                vals = [v for v in rows.column(col).to_pylist() if v is not None]
                self.hist[col] += np.histogram(vals, bins=HIST_BINS, range=(0, 1))[0]
                if col == "overall_score":
                    self.shift += np.histogram(vals, bins=SHIFT_BINS, range=(0, 1))[0]
                    self.overall_sum += sum(vals)
                    self.overall_n += len(vals)
        if self._ids is not None:
            digests = np.frombuffer(b"".join(hashlib.blake2b((t or "").encode(), digest_size=8).digest()
                                             for t in rows.column("output_text").to_pylist()), dtype="<u8")
            self._ids.append(pa.table({"prompt_id": rows.column("prompt_id").cast(pa.string()),
                                       "output_digest": pa.array(digests, pa.uint64()),
                                       "overall_score": rows.column("overall_score").cast(pa.float64())}))

    @property
    def ids(self) -> pa.Table:
        """(prompt_id, output_digest, overall_score) of every row added (``keep_ids`` only)."""
        if self._dropped:
            raise ValueError("this tally's ids were dropped (drop_ids)")
        if self._ids is None:
            raise ValueError("this tally does not keep ids")
        if not self._ids:
            return pa.table({"prompt_id": pa.array([], pa.string()), "output_digest": pa.array([], pa.uint64()),
                             "overall_score": pa.array([], pa.float64())})
        self._ids = [pa.concat_tables(self._ids).combine_chunks()]
        return self._ids[0]

    def drop_ids(self) -> None:
        """Free the kept ids (about 35 bytes a row) once the report is built; counts stay."""
        if self._ids is not None:
            self._ids, self._dropped = None, True

    def mean_overall(self) -> float | None:
        return round(self.overall_sum / self.overall_n, 4) if self.overall_n else None


@dataclass
class Previous:
    """The snapshot before this one (the diff's baseline)."""

    snapshot_id: str
    data: ReportTally  # its accepted rows, with ids


def _bars(ax: Any, labels: list[str], series: list[tuple[str, list[float], str]], horizontal: bool = False) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values, color) in enumerate(series):
        pos = [x + (i - (n - 1) / 2) * width for x in range(len(labels))]
        (ax.barh if horizontal else ax.bar)(pos, values, width, label=name, color=color)
    (ax.set_yticks if horizontal else ax.set_xticks)(range(len(labels)), labels, **({} if horizontal else {"rotation": 20}))
    if len(series) > 1:
        ax.legend(fontsize=8)


def score_figure(accepted: ReportTally, rejected: ReportTally) -> str:
    """Histogram per dimension (and overall), accepted vs rejected."""
    cols = list(SCORE_COLUMNS)
    ncol = 4
    nrow = -(-len(cols) // ncol)
    fig = Figure(figsize=(12, 2.2 * nrow))
    for i, col in enumerate(cols):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for tally, color, name in ((accepted, ACCEPT, "accepted"), (rejected, REJECT, "rejected")):
            _hist(ax, tally.hist[col], alpha=0.6, color=color, label=name)
        ax.set_title(col.removeprefix("q_"), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def _hist(ax: Any, counts: np.ndarray, **style: Any) -> None:
    """``ax.hist`` of values already counted into ``len(counts)`` bins over [0, 1] (each bin's centre
    weighted by its count: the same bars as the values would draw). Nothing for no values."""
    if counts.sum():
        edges = np.linspace(0, 1, len(counts) + 1)
        ax.hist((edges[:-1] + edges[1:]) / 2, bins=edges, weights=counts, **style)


def rate_by(accepted: ReportTally, rejected: ReportTally, column: str) -> dict[str, tuple[int, int, float]]:
    """key -> (accepted, total, accept rate) over ``column``."""
    acc, rej = accepted.counts[column], rejected.counts[column]
    return {k: (acc[k], acc[k] + rej[k], round(acc[k] / (acc[k] + rej[k]), 4)) for k in sorted(set(acc) | set(rej))}


def rates_figure(rates: dict[str, dict[str, tuple[int, int, float]]]) -> str:
    fig = Figure(figsize=(12, 3))
    for i, (name, by) in enumerate(rates.items()):
        ax = fig.add_subplot(1, len(rates), i + 1)
        _bars(ax, list(by), [("accept rate", [v[2] for v in by.values()], ACCEPT)])
        ax.set_ylim(0, 1)
        ax.set_title(f"accept rate by {name}", fontsize=10)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _svg(fig)


def reasons_figure(reasons: list[tuple[str, int]]) -> str:
    fig = Figure(figsize=(8, 0.35 * max(len(reasons), 2) + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    labels = [r for r, _ in reversed(reasons)]
    _bars(ax, labels, [("rejected rows", [n for _, n in reversed(reasons)], REJECT)], horizontal=True)
    ax.set_title("reject reasons (a row can have several)", fontsize=10)
    fig.tight_layout()
    return _svg(fig)


def mix_figure(families: list[str], target: dict[str, float], prompts: dict[str, float], accepted: dict[str, float],
               previous: dict[str, float] | None) -> str:
    fig = Figure(figsize=(9, 3))
    ax = fig.add_subplot(1, 1, 1)
    series = [("target", [target.get(f, 0.0) for f in families], TARGET),
              ("prompts", [prompts.get(f, 0.0) for f in families], "#90caf9"),
              ("accepted", [accepted.get(f, 0.0) for f in families], ACCEPT)]
    if previous is not None:
        series.append(("accepted, previous snapshot", [previous.get(f, 0.0) for f in families], PREVIOUS))
    _bars(ax, families, series)
    ax.set_title("task mix: target vs realised", fontsize=10)
    fig.tight_layout()
    return _svg(fig)


def shift_figure(now: np.ndarray, before: np.ndarray) -> str:
    """The overall score of accepted rows, this snapshot against the previous (``SHIFT_BINS`` counts each)."""
    fig = Figure(figsize=(6, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    _hist(ax, before, alpha=0.5, color=PREVIOUS, label="previous snapshot")
    _hist(ax, now, alpha=0.6, color=ACCEPT, label="this snapshot")
    ax.set_title("overall score of accepted rows", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def shares(tally: ReportTally, column: str) -> dict[str, float]:
    n = tally.rows
    return {k: round(v / n, 4) for k, v in tally.counts[column].items()} if n else {}


def diff(accepted: ReportTally, previous: Previous) -> dict[str, Any]:
    """New / removed / changed records (by id; changed = other answer or score) and the shifts.
    Joined in Arrow: the ids of two snapshots never become Python objects."""
    now, before = accepted.ids, previous.data.ids
    common = now.join(before, "prompt_id", join_type="inner", right_suffix="_before")

    def score(col: str) -> pa.ChunkedArray:
        return pc.round(pc.fill_null(common.column(col), 0.0), 6)

    differs = pc.or_(pc.not_equal(common.column("output_digest"), common.column("output_digest_before")),
                     pc.not_equal(score("overall_score"), score("overall_score_before")))
    changed = pc.filter(common.column("prompt_id"), differs)
    first = changed.take(pc.sort_indices(changed)[:20])  # UTF-8 byte order: Python's order of str
    return {
        "previous": previous.snapshot_id,
        "new": int(pc.sum(pc.invert(pc.is_in(now.column("prompt_id"), value_set=before.column("prompt_id")))).as_py() or 0),
        "removed": int(pc.sum(pc.invert(pc.is_in(before.column("prompt_id"),
                                                  value_set=now.column("prompt_id")))).as_py() or 0),
        "changed": len(changed), "unchanged": common.num_rows - len(changed),
        "changed_ids": first.to_pylist(),
        "mean_overall": {"now": accepted.mean_overall(), "previous": previous.data.mean_overall()},
        "mix_now": shares(accepted, "task_family"), "mix_previous": shares(previous.data, "task_family"),
        "scores_now": accepted.shift, "scores_previous": previous.data.shift,
    }


def strata_view(strata: dict[str, Any], top: int = 24) -> dict[str, Any]:
    """The mix audits as the report shows them: per stage, each margin's summary and the joint strata
    furthest from their targets."""
    stages = {}
    for stage in ("prompts", "accepted"):
        mix = strata.get(stage)
        if not mix:
            continue
        joint = mix["strata"]
        stages[stage] = {
            "margins": {dim: {k: mix[dim][k] for k in ("n", "max_abs_deviation", "chi2", "df", "p_value")}
                        for dim in ("task_family", "role_focus", "scene", "lang") if dim in mix},
            "joint": {k: joint[k] for k in ("n", "max_abs_deviation", "chi2", "df", "p_value")},
            "worst": sorted(joint["strata"], key=lambda r: -abs(r["deviation"]))[:top],
        }
    return {"stages": stages, "sampler": strata.get("sampler"), "diversity": strata.get("diversity")}


def reject_reasons(rejected: ReportTally) -> Counter[str]:
    """Rejected rows per reason code (a row rejected by several expectations counts for each)."""
    return Counter(rejected.reasons)


def build_report(*, snapshot_id: str, uri: str, accepted: ReportTally, rejected: ReportTally, counts: dict[str, Any],
                 families: dict[str, float], prompt_mix: dict[str, float], score_stats: dict[str, Any],
                 label_stats: list[dict[str, Any]], previous: Previous | None, summary_md: str,
                 strata: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(the HTML page, its figures as data for the manifest). ``strata``: the mix audits of the prompt
    stage and the gate, the sampler's multipliers and the asks' diversity (docs/architecture.md, "Sampling")."""
    rates = {col: rate_by(accepted, rejected, col)
             for col in STRATA if col in accepted.columns}
    reasons = reject_reasons(rejected).most_common()
    judge, audit = score_stats.get("judge", {}), score_stats.get("audit", {})
    label_tokens = sum(s.get("prompt_tokens", 0) + s.get("completion_tokens", 0) for s in label_stats)
    fresh_tokens = sum(s.get("fresh_prompt_tokens", 0) + s.get("fresh_completion_tokens", 0) for s in label_stats)
    n_acc = counts["accepted"]
    per_1k = (lambda t: round(t * 1000 / n_acc) if n_acc else None)  # noqa: E731 - a local formula
    cost = {"label_tokens": label_tokens, "fresh_label_tokens": fresh_tokens, "judge_tokens": judge.get("tokens", 0),
            "label_tokens_per_1k_accepted": per_1k(label_tokens), "judge_tokens_per_1k_accepted": per_1k(judge.get("tokens", 0)),
            "all_tokens_per_1k_accepted": per_1k(label_tokens + judge.get("tokens", 0))}
    mix_acc = shares(accepted, "task_family")
    d = diff(accepted, previous) if previous is not None else None
    data = {"rates": rates, "reject_reasons": dict(reasons), "mix": {"target": families, "prompts": prompt_mix,
                                                                      "accepted": mix_acc},
            "judge": {k: judge.get(k) for k in ("judged", "share", "ok", "failed", "model")},
            "audit": audit, "tokens": cost,
            "diff": {k: v for k, v in d.items() if not k.startswith("scores_")} if d else None,
            "strata": strata_view(strata) if strata else None}
    page = get_template("report.html.j2").render(
        snapshot_id=snapshot_id, uri=uri, counts=counts, data=data, summary_md=summary_md,
        fig_scores=score_figure(accepted, rejected),
        fig_rates=rates_figure({k: v for k, v in rates.items() if k not in ASK_COLUMNS}),
        fig_reasons=reasons_figure(reasons) if reasons else None,
        fig_mix=mix_figure(list(families), families, prompt_mix, mix_acc, d["mix_previous"] if d else None),
        fig_shift=shift_figure(d["scores_now"], d["scores_previous"]) if d else None, esc=html.escape)
    return page, data
