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

import pyarrow as pa
from matplotlib.figure import Figure

from dialinsight_core.config import DIMENSIONS
from dialinsight_core.templating import get_template
from dialinsight_core.templating import svg as _svg

ACCEPT, REJECT, PREVIOUS, TARGET = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0"


@dataclass
class Previous:
    """The snapshot before this one (the diff's baseline)."""

    snapshot_id: str
    data: pa.Table  # its accepted rows' ``report_columns``


ASK_COLUMNS = ("template_id", "variant")  # in the report's tables, not its figure (too many bars)


def report_columns(rows: pa.Table) -> pa.Table:
    """What the report reads of published (or rejected) rows: ids, strata, scores, reasons, and a
    digest of the answer instead of its text, so a snapshot's report holds a few dozen bytes a row."""
    keep = [c for c in ("prompt_id", "task_family", "scene", "role_focus", "lang", "template_id", "variant", "overall_score",
                        *(f"q_{d}" for d in DIMENSIONS), "reason_code") if c in rows.column_names]
    digests = [hashlib.blake2b((t or "").encode(), digest_size=8).hexdigest() for t in rows.column("output_text").to_pylist()]
    return rows.select(keep).append_column("output_digest", pa.array(digests, type=pa.string()))


def _bars(ax: Any, labels: list[str], series: list[tuple[str, list[float], str]], horizontal: bool = False) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values, color) in enumerate(series):
        pos = [x + (i - (n - 1) / 2) * width for x in range(len(labels))]
        (ax.barh if horizontal else ax.bar)(pos, values, width, label=name, color=color)
    (ax.set_yticks if horizontal else ax.set_xticks)(range(len(labels)), labels, **({} if horizontal else {"rotation": 20}))
    if len(series) > 1:
        ax.legend(fontsize=8)


def score_figure(accepted: pa.Table, rejected: pa.Table) -> str:
    """Histogram per dimension (and overall), accepted vs rejected."""
    cols = ["overall_score", *(f"q_{d}" for d in DIMENSIONS)]
    ncol = 4
    nrow = -(-len(cols) // ncol)
    fig = Figure(figsize=(12, 2.2 * nrow))
    for i, col in enumerate(cols):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for tbl, color, name in ((accepted, ACCEPT, "accepted"), (rejected, REJECT, "rejected")):
            vals = [v for v in tbl.column(col).to_pylist() if v is not None] if tbl.num_rows else []
            if vals:
                ax.hist(vals, bins=10, range=(0, 1), alpha=0.6, color=color, label=name)
        ax.set_title(col.removeprefix("q_"), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def rate_by(accepted: pa.Table, rejected: pa.Table, column: str) -> dict[str, tuple[int, int, float]]:
    """key -> (accepted, total, accept rate) over ``column``."""
    acc = Counter(accepted.column(column).to_pylist()) if accepted.num_rows else Counter()
    rej = Counter(rejected.column(column).to_pylist()) if rejected.num_rows else Counter()
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


def shift_figure(now: list[float], before: list[float]) -> str:
    fig = Figure(figsize=(6, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(before, bins=20, range=(0, 1), alpha=0.5, color=PREVIOUS, label="previous snapshot")
    ax.hist(now, bins=20, range=(0, 1), alpha=0.6, color=ACCEPT, label="this snapshot")
    ax.set_title("overall score of accepted rows", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def shares(tbl: pa.Table, column: str) -> dict[str, float]:
    n = tbl.num_rows
    return {k: round(v / n, 4) for k, v in Counter(tbl.column(column).to_pylist()).items()} if n else {}


def diff(accepted: pa.Table, previous: Previous) -> dict[str, Any]:
    """New / removed / changed records (by id; changed = other answer or score) and the shifts."""
    cols = ["prompt_id", "task_family", "output_digest", "overall_score"]
    now = {r["prompt_id"]: r for r in accepted.select(cols).to_pylist()}
    before = {r["prompt_id"]: r for r in previous.data.select(cols).to_pylist()}
    common = set(now) & set(before)
    changed = sorted(i for i in common if now[i]["output_digest"] != before[i]["output_digest"]
                     or round(now[i]["overall_score"] or 0, 6) != round(before[i]["overall_score"] or 0, 6))

    def mean(rows: Any) -> float | None:
        vals = [r["overall_score"] for r in rows if r["overall_score"] is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    return {
        "previous": previous.snapshot_id,
        "new": len(set(now) - set(before)), "removed": len(set(before) - set(now)), "changed": len(changed),
        "unchanged": len(common) - len(changed), "changed_ids": changed[:20],
        "mean_overall": {"now": mean(now.values()), "previous": mean(before.values())},
        "mix_now": shares(accepted, "task_family"), "mix_previous": shares(previous.data, "task_family"),
        "scores_now": [r["overall_score"] for r in now.values() if r["overall_score"] is not None],
        "scores_previous": [r["overall_score"] for r in before.values() if r["overall_score"] is not None],
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


def reject_reasons(rejected: pa.Table) -> Counter[str]:
    """Rejected rows per reason code (a row rejected by several expectations counts for each)."""
    codes = rejected.column("reason_code").to_pylist() if rejected.num_rows else []
    return Counter(code for joined in codes for code in (joined or "").split(",") if code)


def build_report(*, snapshot_id: str, uri: str, accepted: pa.Table, rejected: pa.Table, counts: dict[str, Any],
                 families: dict[str, float], prompt_mix: dict[str, float], score_stats: dict[str, Any],
                 label_stats: list[dict[str, Any]], previous: Previous | None, summary_md: str,
                 strata: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(the HTML page, its figures as data for the manifest). ``strata``: the mix audits of the prompt
    stage and the gate, the sampler's multipliers and the asks' diversity (docs/architecture.md, "Sampling")."""
    rates = {col: rate_by(accepted, rejected, col)
             for col in ("task_family", "scene", "role_focus", "lang", "template_id", "variant") if col in accepted.column_names}
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
