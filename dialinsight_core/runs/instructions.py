"""Stage runners of the instructions DAG (``dialinsight_instructions``); no Airflow import.

generate: stage-1 seeds per (scene, role focus, task family) cell from sample dialogues, then
``instructions.rounds`` rounds of evolution by every operator, each round screened by
``eliminate`` -> export: a pending library version for human review -> finalise: the reviewer's
decision (approve with edits and notes, or reject).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from dialinsight_core.config import Settings
from dialinsight_core.contracts import GenerateOut, ReviewExport
from dialinsight_core.inference import make_engine
from dialinsight_core.ingest import ingest
from dialinsight_core.instructions import load_library
from dialinsight_core.instructions.evolution import (
    diversity,
    eliminate,
    evolve_request,
    load_operators,
    parse_evolved,
    parse_seeds,
    seed_request,
    yield_report,
)
from dialinsight_core.instructions.store import (
    LIBRARY_ROWS,
    approved_pointer,
    last_review_pointer,
    load_approved,
    review,
    write_pending,
)
from dialinsight_core.llm import Engine
from dialinsight_core.runs.context import RunContext
from dialinsight_core.storage import ObjectStore
from dialinsight_core.text import prompt_lang, stable_id, turn_lines

STAGE = "instructions"


def _id(*parts: Any) -> str:
    return stable_id(*parts, n=10)


def current_library(store: ObjectStore, settings: Settings) -> tuple[list[dict[str, Any]], str]:
    approved = load_approved(store, settings)
    if approved is not None:
        rows = approved.to_pylist()
        return rows, rows[0]["library_version"] if rows else "v0"
    rows = load_library(settings).to_pylist()
    return rows, rows[0]["library_version"] if rows else "v0"


def reviewer_guidance(store: ObjectStore, settings: Settings, library: list[dict[str, Any]] | None = None) -> str:
    """Notes of the last review, approved or rejected (a rejection's note matters most), plus the
    per-instruction notes of the approved library; fed to the next evolution round."""
    notes: list[str] = []
    if store.exists(last_review_pointer(settings)):
        notes.append(store.read_json(store.read_json(last_review_pointer(settings))["manifest"]).get("review_note") or "")
    if store.exists(approved_pointer(settings)):
        rows = library if library is not None else current_library(store, settings)[0]
        notes += [r["reviewer_note"] for r in rows if r.get("reviewer_note")]
    return "; ".join(dict.fromkeys(n for n in notes if n))[:600]


def _row(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    row = {c: None for c in LIBRARY_ROWS.names}
    row.update(base)
    row.update(over)
    return row


def generate(ctx: RunContext, engine: Engine) -> GenerateOut:
    """Seeds + evolution rounds with elimination; writes every candidate (kept or eliminated)."""
    s: Settings = ctx.settings
    cfg = s.instructions
    store = ctx.store
    library, parent_version = current_library(store, s)
    guidance = reviewer_guidance(store, s, library)
    sample = ingest(s, max_dialogues=int(ctx.params.get("max_dialogues") or 20))
    text_by = turn_lines(sample.turns.select(["dialogue_id", "role", "text"]).to_pylist())
    by_scene: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in sample.dialogues.to_pylist():
        by_scene[d["scene"]].append(d)
    families = cfg.seed_families or list(s.task_families)
    n = int(ctx.params.get("seeds_per_cell") or cfg.seeds_per_cell)

    # stage 1: seeds
    cells, requests = [], []
    for scene, dlgs in sorted(by_scene.items()):
        dlgs = dlgs[: cfg.sample_dialogues]
        lang = prompt_lang(dlgs[0]["lang"])
        for family in families:
            for role in cfg.seed_role_foci:
                rid = f"seed-{_id(ctx.run_id, scene, family, role)}"
                cells.append((rid, scene, family, role, lang, dlgs))
                requests.append(seed_request(rid, scene=scene, role_focus=role, family=family,
                                             objective=f"{family.replace('_', ' ')} of the {scene.replace('_', ' ')} dialogue",
                                             dialogues=["\n".join(text_by[d["dialogue_id"]]) for d in dlgs], n=n, lang=lang,
                                             settings=s))
    results = engine.generate(requests) if requests else []
    candidates: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for (rid, scene, family, role, lang, _), res in zip(cells, results, strict=True):
        items, err = parse_seeds(res.output_text) if not res.error_code else ([], res.error_code)
        if err and res.finish_reason == "length":
            err = f"{err} (truncated at engine.max_tokens)"
        base = {"task_family": family, "scene": scene, "role_focus": role, "lang": lang, "origin": "seed",
                "operator": None, "round": 0, "output_schema_id": s.task_families[family].output_schema_id}
        if err:
            failed.append(_row(base, instruction_id=rid, text=None, status="rejected", reason_code="malformed",
                               reason_detail=f"seed request failed: {err}", expected_fields="[]"))
        for i, it in enumerate(items):
            candidates.append(_row(base, instruction_id=f"{rid}-{i}", text=it["text"], status="proposed",
                                   expected_fields=json.dumps(it["expected_fields"], ensure_ascii=False)))
    kept, dropped = eliminate(candidates, library, s)
    all_rows = kept + dropped + failed

    # stage 2: controlled evolution, round by round, from the library and the new seeds
    ops = load_operators(s)
    # new seeds first, then the approved library fills the rest of the round's parents
    parents = (kept + [r for r in library if r["status"] == "approved"])[: cfg.max_parents]
    excerpt = next(iter(text_by.values()), [""])
    for rnd in range(1, cfg.rounds + 1):
        jobs, reqs = [], []
        for p in parents:
            for op in ops.values():
                rid = f"ev{rnd}-{_id(ctx.run_id, p['instruction_id'], op.name, rnd)}"
                jobs.append((rid, p, op))
                reqs.append(evolve_request(rid, p, op, dialogue_excerpt="\n".join(excerpt[:6]), guidance=guidance,
                                           settings=s))
        results = engine.generate(reqs) if reqs else []
        cands = []
        for (rid, p, op), res in zip(jobs, results, strict=True):
            out, err = parse_evolved(res.output_text) if not res.error_code else (None, res.error_code)
            if err and res.finish_reason == "length":
                err = f"{err} (truncated at engine.max_tokens)"
            base = {"task_family": p["task_family"], "scene": p["scene"], "role_focus": p["role_focus"],
                    "lang": p.get("lang") or "*", "origin": "evolved", "parent_id": p["instruction_id"],
                    "operator": op.name, "round": rnd, "output_schema_id": p["output_schema_id"]}
            if err:
                all_rows.append(_row(base, instruction_id=rid, text=None, status="rejected", reason_code="malformed",
                                     reason_detail=f"evolution request failed: {err}", expected_fields="[]"))
                continue
            cands.append(_row(base, instruction_id=rid, text=out["text"], status="proposed", parent_text=p["text"],
                              expected_fields=json.dumps(out["expected_fields"], ensure_ascii=False)))
        existing = library + [r for r in all_rows if r["status"] == "proposed"]
        kept_r, dropped_r = eliminate(cands, existing, s)
        all_rows += kept_r + dropped_r
        parents = kept_r[: cfg.max_parents]
    rows = [{k: v for k, v in r.items() if k in LIBRARY_ROWS.names} for r in all_rows]
    for r in rows:
        r["status"] = "rejected" if r.get("reason_code") else "proposed"
        r["text"] = r["text"] if isinstance(r["text"], str) else None
    report = {"yield": yield_report(rows), "diversity": diversity([r for r in rows if r["status"] == "proposed"] + library, s),
              "parent_version": parent_version, "guidance": guidance}
    key = ctx.key("instructions/candidates.json")
    store.write_json(key, {"rows": rows, "report": report})
    stats = {"candidates": len(rows), "proposed": sum(r["status"] == "proposed" for r in rows),
             "eliminated": sum(r["status"] == "rejected" for r in rows), "parent_version": parent_version}
    return {"key": key, "stats": stats}


def run_generate(ctx: RunContext) -> GenerateOut:
    """``generate`` with the configured engine, built here and closed after (the DAG's task)."""
    engine = make_engine(ctx.settings)
    try:
        return generate(ctx, engine)
    finally:
        engine.close()


def export_for_review(ctx: RunContext, gen_out: GenerateOut) -> ReviewExport:
    """A pending version = the current approved library + this run's candidates."""
    s: Settings = ctx.settings
    doc = ctx.store.read_json(gen_out["key"])
    library, parent_version = current_library(ctx.store, s)
    version = f"{ctx.ds}.{_id(ctx.run_id)[:6]}"
    keep = [dict(r, status="approved") for r in library]
    manifest = write_pending(ctx.store, s, keep + doc["rows"], version, parent_version, doc["report"],
                             candidate_ids=[r["instruction_id"] for r in doc["rows"]])
    review_md = ctx.store.read_bytes(f"{s.instructions.library_prefix}/v={version}/review.md").decode()
    return {"version": version, "counts": manifest["counts"], "review_uri": ctx.store.url(
        f"{s.instructions.library_prefix}/v={version}/review.md"), "review_md": review_md[:20000]}


def finalise(ctx: RunContext, export_out: ReviewExport, response: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the reviewer's HITL response: Approve (with optional edits / note) or Reject."""
    response = response or {}
    chosen = (response.get("chosen_options") or ["Reject"])[0]
    params = response.get("params_input") or {}
    edits = params.get("edits") or {}
    if isinstance(edits, str):
        edits = json.loads(edits) if edits.strip() else {}
    who = response.get("responded_by_user") or response.get("responded_by") or {}
    reviewer = who.get("name") if isinstance(who, dict) else str(who or "reviewer")
    decision = "approved" if chosen == "Approve" else "rejected"
    return review(ctx.store, ctx.settings, export_out["version"], decision, reviewer=reviewer or "reviewer",
                  edits=edits, note=str(params.get("note") or ""))
