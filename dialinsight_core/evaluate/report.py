"""The evaluation's report: a Markdown headline (task log, asset event, notification) and one
offline HTML page (``eval/report.html`` beside the snapshot) with its plots inlined as SVG."""

from __future__ import annotations

import html
from typing import Any

from matplotlib.figure import Figure

from dialinsight_core.templating import get_template
from dialinsight_core.templating import svg as _svg

NAMES = {"base": "base model", "accepted": "fine-tuned on accepted rows", "ablation": "fine-tuned on accepted + rejected"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def headline(summ: dict[str, Any]) -> str:
    """Before -> after in a few Markdown lines."""
    b, a = summ["before"], summ["after"]
    lines = [f"**Evaluation of {summ['snapshot']}** (base model `{summ['base_model'].rsplit('/', 1)[-1]}`)", "",
             "| model | domain score | domain pass rate | reference score | general acc (95 % CI) | general Δ points (95 % CI) |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| {NAMES['base']} | {_pct(b['domain_score'])} | {_pct(b['domain_pass_rate'])} | {_pct(b['reference_score'])} "
             f"| {_pct(b['general_acc'])} ({_pct(b['general_ci95'][0])}–{_pct(b['general_ci95'][1])}) | — |"]
    for v, m in a.items():
        ch = m["general_change"]
        ci = ch["ci95_points"]
        lines.append(f"| {NAMES.get(v, v)} | {_pct(m['domain_score'])} | {_pct(m['domain_pass_rate'])} "
                     f"| {_pct(m['reference_score'])} | {_pct(m['general_acc'])} ({_pct(m['general_ci95'][0])}–"
                     f"{_pct(m['general_ci95'][1])}) | {ch['delta_points']:+.1f} ({ci[0]:+.1f} to {ci[1]:+.1f}) |")
    reg = summ["regression"]
    lines += ["", f"Regression rule: general Δ ≥ −{reg['max_general_drop_points']} points "
                  f"({'**BROKEN**, ' + reg['action'] if reg['regressed'] else 'kept'})."]
    lines += [f"Warning: {w}" for w in summ.get("warnings", [])]
    return "\n".join(lines)


def figure(summ: dict[str, Any]) -> str:
    """Domain score and general accuracy per model, general with its 95 % interval."""
    models = ["base", *summ["after"]]
    rows = [summ["before"], *summ["after"].values()]
    fig = Figure(figsize=(8, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    colors = ["#999999", "#2a7ab9", "#d98b2b"][:len(models)]
    dom = [r["domain_score"] or 0 for r in rows]
    ax1.bar(range(len(models)), dom, color=colors)
    ax1.set_xticks(range(len(models)), models)
    ax1.set_ylim(0, 1)
    ax1.set_title("domain score (held-out prompts)", fontsize=9)
    acc = [r["general_acc"] or 0 for r in rows]
    err = [[a - r["general_ci95"][0] for a, r in zip(acc, rows, strict=True)],
           [r["general_ci95"][1] - a for a, r in zip(acc, rows, strict=True)]]
    ax2.bar(range(len(models)), acc, yerr=err, capsize=4, color=colors)
    ax2.axhline(0.25, color="black", lw=0.8, ls="--")
    ax2.text(len(models) - 0.5, 0.26, "chance", fontsize=7, ha="right")
    ax2.set_xticks(range(len(models)), models)
    ax2.set_ylim(0, 1)
    ax2.set_title("general accuracy, 95 % CI (paired items)", fontsize=9)
    fig.tight_layout()
    return _svg(fig)


def loss_figure(summ: dict[str, Any]) -> str | None:
    curves = {v: (m.get("training") or {}).get("losses") or [] for v, m in summ["variants"].items() if v != "base"}
    if not any(curves.values()):
        return None
    fig = Figure(figsize=(5, 2.6))
    ax = fig.subplots()
    for v, pts in curves.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=v)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def render(summ: dict[str, Any]) -> str:
    return get_template("eval_report.html.j2").render(s=summ, esc=html.escape, names=NAMES, pct=_pct, figure=figure(summ),
                                                      loss_figure=loss_figure(summ))
