"""Runner of ``dialinsight_evaluate``: what one snapshot's data does to a model fine-tuned on it.

``plan`` picks the training sets and the held-out prompts (``evaluate.data``) and the general
items; ``model`` runs once per variant (``base``: the model as it is; ``accepted``: fine-tuned on
the export; ``ablation``: fine-tuned on an equal-size sample that includes rejected rows) and
scores its general accuracy and domain answers; ``report`` puts before -> after side by side,
applies the regression rule and writes ``eval/`` beside the snapshot (docs/evaluation.md).

Everything goes under ``<snapshot>/eval/<key>-<inputs>/``, where ``key`` hashes the evaluation
config and the base model and ``inputs`` what the plan selected: a retried task resumes from its
stored checkpoint or reuses a finished variant, and another config or selection never resumes
this one's checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

from dialinsight_core import publishing
from dialinsight_core.config import Settings
from dialinsight_core.errors import DataVerdict
from dialinsight_core.evaluate import data as eval_data
from dialinsight_core.evaluate import domain, general
from dialinsight_core.instructions import load_output_schemas
from dialinsight_core.publishing.exports import split_of
from dialinsight_core.quality import scoring
from dialinsight_core.runs.context import RunContext
from dialinsight_core.storage import ObjectStore
from dialinsight_core.text import stable_id

log = logging.getLogger(__name__)


class EvaluationRegression(DataVerdict, RuntimeError):
    """General accuracy dropped by more than ``evaluate.regression.max_general_drop_points``."""

    next_step = "open eval/report.html beside the snapshot: the general items that flipped are in models/*/general.jsonl"


def base_model(settings: Settings) -> str:
    name = settings.evaluate.base_model or settings.engine.model
    path = settings.resolve_path(name)
    return str(path) if path.exists() else name  # a folder in the project, or a hub id


def eval_key(settings: Settings) -> str:
    return stable_id(json.dumps(settings.evaluate.model_dump(mode="json"), sort_keys=True), base_model(settings), n=10)


def resolve_snapshot(store: ObjectStore, uri: str | None) -> str:
    """The snapshot's key prefix: from a URI (an asset event, a Param) or ``latest.json``."""
    if uri:
        root = store.uri.rstrip("/") + "/"
        if not uri.startswith(root):
            raise ValueError(f"snapshot {uri} is not in this deployment's object store {store.uri}")
        return uri.removeprefix(root).rstrip("/")
    latest, _ = store.read_pointer(publishing.LATEST_KEY)
    if latest is None:
        raise ValueError("no snapshot to evaluate: latest.json does not exist yet (run dialinsight_nightly first)")
    return str(latest["manifest"]).removesuffix("/manifest.json")


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def run_plan(ctx: RunContext, uri: str | None) -> dict[str, Any]:
    """Training sets, held-out prompts and general items, stored under the evaluation's prefix."""
    s, store = ctx.settings, ctx.store
    snapshot = resolve_snapshot(store, uri)
    inputs = eval_data.build(store, snapshot, s, split_of)
    heldout = inputs.heldout
    if s.evaluate.domain_prompts and len(heldout) > s.evaluate.domain_prompts:
        heldout = sorted(heldout, key=lambda r: stable_id(s.evaluate.finetune.seed, r["prompt_id"]))[:s.evaluate.domain_prompts]
    g = s.evaluate.general
    root = s.resolve_path(g.root)
    items = [it for name in g.sets for it in general.stratified(general.load_set(root, name), g.items_per_set, g.seed)]
    files = {"accepted": _jsonl([r.as_dict() for r in inputs.accepted]),
             "ablation": _jsonl([r.as_dict() for r in inputs.ablation]), "heldout": _jsonl(heldout),
             "general": _jsonl([it.__dict__ | {"choices": list(it.choices)} for it in items])}
    # the config and what it selected name the folder: other inputs never reuse this one's checkpoints or metrics
    digest = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in files.values())).hexdigest()[:8]
    prefix = f"{snapshot}/{s.evaluate.prefix}/{eval_key(s)}-{digest}"
    for name, body in files.items():
        store.write_bytes(f"{prefix}/inputs/{name}.jsonl", body)
    plan = {"snapshot": snapshot, "snapshot_uri": store.url(snapshot), "prefix": prefix, "variants": s.evaluate.variants(),
            "base_model": base_model(s), "stats": inputs.stats | {"domain_prompts": len(heldout)},
            "general_items": {name: sum(it.set == name for it in items) for name in g.sets}}
    if not heldout:
        plan["warnings"] = [f"snapshot {snapshot} holds out no dialogues (publishing.exports.validation_fraction "
                            f"{inputs.stats['split']['validation_fraction']}): no domain score"]
    store.write_json(f"{prefix}/plan.json", plan)
    return plan


def run_model(ctx: RunContext, plan: dict[str, Any], variant: str) -> dict[str, Any]:
    """One variant: fine-tune (resumable) unless ``base``, then general accuracy and domain answers."""
    from dialinsight_core.evaluate import finetune as ft  # lazy: imports torch, transformers, peft

    s, store, prefix = ctx.settings, ctx.store, plan["prefix"]
    out_key = f"{prefix}/models/{variant}/metrics.json"
    if store.exists(out_key):
        log.info("evaluate %s: already measured (%s)", variant, store.url(out_key))
        return store.read_json(out_key)
    t0 = time.monotonic()
    fcfg = s.evaluate.finetune
    training: dict[str, Any] | None = None
    if variant == "base":
        model, tok = ft.load_base(plan["base_model"], fcfg.dtype, fcfg.threads)
        model.eval()
    elif store.exists(f"{prefix}/models/{variant}/training.json"):  # written after the final adapter was stored
        model, tok = ft.load_finetuned(store, f"{prefix}/models/{variant}", plan["base_model"], fcfg.dtype, fcfg.threads)
        training = store.read_json(f"{prefix}/models/{variant}/training.json")
    else:
        rows = [r["messages"] for r in store.read_jsonl(f"{prefix}/inputs/{variant}.jsonl")]
        model, tok, result = ft.finetune(rows, plan["base_model"], fcfg, store, f"{prefix}/models/{variant}", variant)
        training = result.as_dict()
        store.write_json(f"{prefix}/models/{variant}/training.json", training)
    t_train = time.monotonic() - t0

    items = [general.Item(**(r | {"choices": tuple(r["choices"])})) for r in store.read_jsonl(f"{prefix}/inputs/general.jsonl")]
    g_rows = general.score_items(items, general.HFScorer(model, tok, s.evaluate.general.max_length))
    store.write_bytes(f"{prefix}/models/{variant}/general.jsonl", _jsonl(g_rows))
    t_general = time.monotonic() - t0 - t_train

    heldout = store.read_jsonl(f"{prefix}/inputs/heldout.jsonl")
    answers = domain.generate(model, tok, [r["messages"][:-1] for r in heldout], s.evaluate.max_new_tokens,
                              repetition_penalty=s.engine.repetition_penalty)
    d_rows = score_domain(heldout, answers, s, load_output_schemas(s))
    store.write_bytes(f"{prefix}/models/{variant}/answers.jsonl", _jsonl(d_rows))
    metrics = {"variant": variant, "training": training, "general": general.accuracy(g_rows),
               "general_acc_raw": general.accuracy(g_rows, "correct"), "domain": domain.summary(d_rows),
               "seconds": {"train": round(t_train, 1), "general": round(t_general, 1),
                           "domain": round(time.monotonic() - t0 - t_train - t_general, 1)}}
    store.write_json(out_key, metrics)
    log.info("evaluate %s: general acc_norm %s (n=%d), domain score %s, in %.0f s", variant, metrics["general"]["acc"],
             metrics["general"]["n"], metrics["domain"]["domain_score"], time.monotonic() - t0)
    return metrics


def score_domain(heldout: list[dict[str, Any]], answers: list[tuple[str, str]], settings: Settings,
                 output_schemas: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per held-out record: the cascade's cheap score (rules, grounding, coverage), whether it would
    pass the row gate's thresholds, and the reference score against the labeling model's answer.
    The rules compare against the user message (the redacted dialogue with the instruction): a
    snapshot does not carry its run's turn table."""
    q = settings.quality
    rows = []
    for rec, (text, finish) in zip(heldout, answers, strict=True):
        msgs = rec["messages"]
        system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
        user = "\n".join(m["content"] for m in msgs if m["role"] == "user")
        label = {"output_text": text, "output_json": domain.parse_json(text), "finish_reason": finish}
        dims, findings = scoring.cheap_dimensions(label, rec["task_family"], rec["lang"], user,
                                                  f"{system}\n{rec['instruction_text']}", user, [],
                                                  output_schemas[rec["output_schema_id"]], settings)
        cheap = scoring.overall(dims, q.weights)
        rows.append({"prompt_id": rec["prompt_id"], "task_family": rec["task_family"], "lang": rec["lang"],
                     "answer": text, "finish_reason": finish, "json_valid": label["output_json"] is not None,
                     "cheap_score": cheap,
                     "passes": not scoring.failed_thresholds(dims, settings) and cheap >= q.overall_min,
                     "reference_score": domain.reference_score(label["output_json"], rec["output_json"]),
                     "failed": sorted(findings)})
    return rows


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy), 4)


def quality_vs_domain(store: ObjectStore, current: dict[str, Any], current_key: str) -> dict[str, Any]:
    """(mean quality score of a training set, domain score after fine-tuning on it) over every
    evaluation kept in the store, this one (``current``, to be stored at ``current_key``) in place
    of what that key holds, and their correlation (None below 3 points)."""
    points = []
    kept = [store.read_json(k) for k in store.list("snapshots/") if k.endswith("/eval-summary.json") and k != current_key]
    for summ in [*kept, current]:
        for v in ("accepted", "ablation"):
            q = (summ.get("training_sets") or {}).get(v, {}).get("mean_overall_score")
            d = (summ.get("after") or {}).get(v, {}).get("domain_score")
            if q is not None and d is not None:
                points.append({"snapshot": summ["snapshot"], "variant": v, "mean_quality": q, "domain_score": d})
    r = pearson([p["mean_quality"] for p in points], [p["domain_score"] for p in points])
    return {"points": points, "pearson_r": r, "n": len(points)}


def run_report(ctx: RunContext, plan: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Before -> after, the ablation, the regression rule; ``eval-summary.json`` + ``report.html``."""
    from dialinsight_core.evaluate import report  # lazy: imports matplotlib

    s, store, prefix = ctx.settings, ctx.store, plan["prefix"]
    by = {m["variant"]: m for m in results}
    base_rows = store.read_jsonl(f"{prefix}/models/base/general.jsonl")
    after: dict[str, Any] = {}
    for v in plan["variants"]:
        if v == "base":
            continue
        rows = store.read_jsonl(f"{prefix}/models/{v}/general.jsonl")
        after[v] = {"general_acc": by[v]["general"]["acc"], "general_ci95": by[v]["general"]["ci95"],
                    "general_change": general.paired_change(base_rows, rows),
                    "domain_score": by[v]["domain"]["domain_score"], "domain_pass_rate": by[v]["domain"]["pass_rate"],
                    "reference_score": by[v]["domain"]["reference_score"],
                    "final_loss": (by[v]["training"] or {}).get("last_loss"),
                    "first_loss": (by[v]["training"] or {}).get("first_loss")}
    before = {"general_acc": by["base"]["general"]["acc"], "general_ci95": by["base"]["general"]["ci95"],
              "domain_score": by["base"]["domain"]["domain_score"], "domain_pass_rate": by["base"]["domain"]["pass_rate"],
              "reference_score": by["base"]["domain"]["reference_score"]}
    rule = s.evaluate.regression
    drop = after["accepted"]["general_change"]["delta_points"]
    regressed = drop is not None and -drop > rule.max_general_drop_points
    summ = {"snapshot": plan["snapshot"], "snapshot_uri": plan["snapshot_uri"], "eval_prefix": store.url(prefix),
            "base_model": plan["base_model"], "before": before, "after": after, "variants": by,
            "training_sets": {v: plan["stats"].get(v, {}) for v in ("accepted", "ablation")},
            "heldout": plan["stats"]["heldout"] | {"answered": plan["stats"]["domain_prompts"]},
            "general_items": plan["general_items"], "warnings": list(plan.get("warnings", [])),
            "regression": {"max_general_drop_points": rule.max_general_drop_points, "action": rule.action,
                           "general_delta_points": drop, "regressed": regressed},
            "adapters": {v: store.url(f"{prefix}/models/{v}/final") for v in after}}
    msg = (f"general accuracy fell {-drop:.1f} points after fine-tuning on {plan['snapshot']} "
           f"(rule: at most {rule.max_general_drop_points})") if regressed else None
    if msg:
        summ["warnings"].append(msg)
    summ["quality_vs_domain"] = quality_vs_domain(store, summ, f"{plan['snapshot']}/{s.evaluate.prefix}/eval-summary.json")
    summ["headline_md"] = report.headline(summ)
    acc = after["accepted"]
    summ["asset_extra"] = {
        "snapshot_id": plan["stats"].get("snapshot_id"), "snapshot_uri": plan["snapshot_uri"], "base_model": plan["base_model"],
        "report": store.url(f"{plan['snapshot']}/{s.evaluate.prefix}/report.html"),
        "metrics": store.url(f"{prefix}/metrics.json"),
        "domain_before": before["domain_score"], "domain_after": acc["domain_score"],
        "domain_after_ablation": after.get("ablation", {}).get("domain_score"),
        "general_before": before["general_acc"], "general_after": acc["general_acc"], "general_delta_points": drop,
        "general_delta_ci95": acc["general_change"]["ci95_points"], "regressed": regressed,
        "quality_domain_pearson_r": summ["quality_vs_domain"]["pearson_r"]}
    html = report.render(summ).encode("utf-8")
    for folder in (prefix, f"{plan['snapshot']}/{s.evaluate.prefix}"):  # this config's folder, and the latest at eval/
        store.write_json(f"{folder}/{'metrics' if folder == prefix else 'eval-summary'}.json", summ)
        store.write_bytes(f"{folder}/report.html", html)
    if msg and rule.action == "fail":
        raise EvaluationRegression(msg)
    if msg:
        log.warning(msg)
    return summ
