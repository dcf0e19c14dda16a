"""Stage runners: each reads its inputs from the object store, runs one core stage, writes its
outputs (and quarantine) back, and returns a small JSON-able summary.

This is the seam the Airflow tasks call (their XComs are these summaries, never data) and the
CLI (`python -m dialinsight_core`) uses without Airflow. Every runner is idempotent for a given
(ds, run_id): it rewrites the same keys with the same content.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dialinsight_core import __version__, schemas
from dialinsight_core.config import PROJECT_ROOT, Settings
from dialinsight_core.storage import LATEST_KEY, ObjectStore, RunPaths, store_from_settings

if TYPE_CHECKING:
    from dialinsight_core.inference import Engine, LazyEngine


class BatchGateFailed(RuntimeError):
    """The batch gate rejected the run; nothing was published."""


class TooManyFailures(RuntimeError):
    """A label shard failed more requests than ``labeling.max_failure_rate`` allows."""


@dataclass
class RunContext:
    settings: Settings
    ds: str
    run_id: str
    params: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def store(self) -> ObjectStore:
        return store_from_settings(self.settings)

    @cached_property
    def paths(self) -> RunPaths:
        return RunPaths(self.ds, self.run_id)

    def key(self, name: str) -> str:
        return f"{self.paths.work}/{name}"


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip()
    except OSError:
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def _write_stage(ctx: RunContext, stage: str, tables: dict[str, pa.Table], stats: dict[str, Any]) -> dict[str, Any]:
    keys = {}
    for name, tbl in tables.items():
        key = ctx.key(f"{stage}/{name}.parquet")
        ctx.store.write_table(key, tbl)
        keys[name] = key
    ctx.store.write_json(ctx.key(f"{stage}/stats.json"), stats)
    return {"keys": keys, "stats": stats}


# --- stages ---------------------------------------------------------------------------------


def published_index(ctx: RunContext) -> pa.Table | None:
    """Dialogue index of every committed snapshot of an *earlier or later* logical date.

    Snapshots of this run's own date are left out, so a rerun of the same date rebuilds the same
    result (idempotency) instead of finding its own dialogues as duplicates.
    """
    if not ctx.settings.ingest.dedup_against_published:
        return None
    own = f"snapshots/ds={ctx.ds}/"
    tables = []
    for key in ctx.store.list("snapshots/"):
        if key.endswith("/dialogues/index.parquet") and not key.startswith(own):
            snap = key.removesuffix("/dialogues/index.parquet")
            if ctx.store.exists(f"{snap}/manifest.json"):  # committed snapshots only
                tables.append(ctx.store.read_table(key, schemas.DIALOGUE_INDEX))
    return pa.concat_tables(tables) if tables else schemas.table(schemas.DIALOGUE_INDEX, [])


def run_ingest(ctx: RunContext) -> dict[str, Any]:
    from dialinsight_core.ingest import ingest

    res = ingest(ctx.settings, max_dialogues=int(ctx.params.get("max_dialogues") or 0),
                 sources=ctx.params.get("sources") or None, published=published_index(ctx))
    if ctx.settings.ingest.llm_scene_classifier and "default" in res.stats.get("scene_sources", {}):
        from dialinsight_core.inference import make_engine
        from dialinsight_core.ingest import classify_scenes_llm

        engine = make_engine(ctx.settings.with_engine(ctx.settings.ingest.llm_classifier_engine))
        try:
            res = classify_scenes_llm(res, engine, ctx.settings)
        finally:
            engine.close()
    return _write_stage(ctx, "ingest", {"turns": res.turns, "dialogues": res.dialogues,
                                        "quarantined": res.quarantined, "index": res.index}, res.stats)


def run_build_prompts(ctx: RunContext, ingest_out: dict[str, Any]) -> dict[str, Any]:
    from dialinsight_core.instructions import load_library, load_output_schemas
    from dialinsight_core.prompts import build_prompts, shard_prompts

    k = ingest_out["keys"]
    library = None
    if ctx.settings.prompts.library_source == "auto":  # the latest human-approved version, if any
        from dialinsight_core.instructions.store import load_approved

        library = load_approved(ctx.store, ctx.settings)
    if library is None:
        library = load_library(ctx.settings)
    res = build_prompts(ctx.store.read_table(k["dialogues"], schemas.DIALOGUES),
                        ctx.store.read_table(k["turns"], schemas.TURNS), library,
                        load_output_schemas(ctx.settings), ctx.settings, ctx.ds)
    out = _write_stage(ctx, "prompts", {"prompts": res.prompts, "quarantined": res.quarantined,
                                        "instructions": library}, res.stats)
    shards = []
    for i, shard in enumerate(shard_prompts(res.prompts, ctx.settings.labeling.shards)):
        key = ctx.key(f"prompts/shards/shard-{i:05d}.parquet")
        ctx.store.write_table(key, shard)
        shards.append({"shard": i, "key": key, "n": shard.num_rows})
    out["shards"] = shards
    return out


def run_label_shard(ctx: RunContext, shard: dict[str, Any], engine: Engine | LazyEngine | None = None) -> dict[str, Any]:
    """Label one shard through the request cache; builds (and closes) its own engine, lazily,
    unless one is passed in."""
    from dialinsight_core.inference import LazyEngine, label_prompts
    from dialinsight_core.instructions import load_output_schemas

    prompts = ctx.store.read_table(shard["key"], schemas.PROMPTS)
    own = LazyEngine(ctx.settings) if engine is None else None
    try:
        res = label_prompts(prompts, engine or own, load_output_schemas(ctx.settings), ctx.settings,  # type: ignore[arg-type]
                            store=ctx.store)
    finally:
        if own is not None:
            own.close()
    n = res.stats["prompts_in"]
    rate = res.stats["quarantined"] / n if n else 0.0
    stage = f"label/shard-{shard['shard']:05d}"
    out = _write_stage(ctx, stage, {"labels": res.labels, "quarantined": res.quarantined}, res.stats)
    if rate > ctx.settings.labeling.max_failure_rate:
        raise TooManyFailures(
            f"shard {shard['shard']}: {res.stats['quarantined']}/{n} requests failed "
            f"({res.stats['quarantined_by_reason']}) > labeling.max_failure_rate={ctx.settings.labeling.max_failure_rate}"
        )
    return out


def run_score(ctx: RunContext, ingest_out: dict[str, Any], prompts_out: dict[str, Any],
              label_outs: list[dict[str, Any]]) -> dict[str, Any]:
    """The quality cascade; the judge's engine is built only if some record needs the judge."""
    from dialinsight_core.inference import CachedEngine, LazyEngine
    from dialinsight_core.instructions import load_output_schemas
    from dialinsight_core.quality.scoring import score_labels

    labels = pa.concat_tables([ctx.store.read_table(o["keys"]["labels"], schemas.LABELS) for o in label_outs]) \
        if label_outs else schemas.table(schemas.LABELS, [])
    factory = None
    if ctx.settings.quality.judge.enabled:
        judge = ctx.settings.judge_settings()
        lab = ctx.settings.labeling
        # the judge's requests go through the same request cache: a rerun pays for no verdict twice
        def factory() -> CachedEngine:
            return CachedEngine(LazyEngine(judge), judge.engine, ctx.store if lab.cache else None,
                                f"{lab.cache_prefix.rstrip('/')}/judge", lab.checkpoint_every, lab.order, owns_inner=True)
    res = score_labels(labels, ctx.store.read_table(prompts_out["keys"]["prompts"], schemas.PROMPTS),
                       ctx.store.read_table(ingest_out["keys"]["turns"], schemas.TURNS),
                       ctx.store.read_table(prompts_out["keys"]["instructions"], schemas.INSTRUCTIONS),
                       load_output_schemas(ctx.settings), ctx.settings, factory)
    return _write_stage(ctx, "score", {"scored": res.scored}, res.stats)


def previous_baseline(ctx: RunContext) -> Any:
    """The previous published snapshot's row count, from ``latest.json`` and its manifest."""
    from dialinsight_core.quality.gates import Baseline

    store = ctx.store
    if not store.exists(LATEST_KEY):
        return None
    latest = store.read_json(LATEST_KEY)
    manifest = store.read_json(latest["manifest"])
    return Baseline(latest["snapshot_id"], int(manifest["counts"]["accepted"]),
                    int(manifest["counts"].get("dialogues_read") or 0), manifest.get("params") or {})


def run_gate(ctx: RunContext, score_out: dict[str, Any], ingest_out: dict[str, Any] | None = None) -> dict[str, Any]:
    """GX row + batch suites; evidence (JSON and Data Docs HTML) is written even when the batch fails."""
    from dialinsight_core.quality.gates import apply_gates, remove_docs

    dialogues_read = ingest_out["stats"]["files_read"] if ingest_out else None
    res = apply_gates(ctx.store.read_table(score_out["keys"]["scored"], schemas.SCORED), ctx.settings,
                      previous_baseline(ctx), dialogues_read, ctx.params, run_name=ctx.paths.snapshot_id)
    # one folder per attempt: a retried gate never mixes its evidence with an earlier attempt's
    gx_prefix = ctx.key(f"gate/gx/{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}")
    try:
        for name, result in res.results.items():
            ctx.store.write_json(f"{gx_prefix}/{name}.json", result)
        docs_index = None
        if res.data_docs_dir is not None:
            for path in sorted(res.data_docs_dir.rglob("*")):
                rel = path.relative_to(res.data_docs_dir).as_posix()
                if path.is_file() and not rel.startswith("static/fonts/"):  # fonts: 3/4 of the size, CSS falls back
                    ctx.store.write_bytes(f"{gx_prefix}/data_docs/{rel}", path.read_bytes())
            docs_index = f"{gx_prefix}/data_docs/index.html"
    finally:
        remove_docs(res)
    summary = {"suites": res.suites, "batch_gate_success": res.batch_success,
               "failed_batch_expectations": res.failed_batch_expectations,
               "data_docs": "gx/data_docs/index.html" if docs_index else None}
    ctx.store.write_json(f"{gx_prefix}/summary.json", summary)
    stats = {**res.stats, "failed_batch_expectations": res.failed_batch_expectations}
    out = _write_stage(ctx, "gate", {"accepted": res.accepted, "rejected": res.rejected}, stats)
    out["keys"]["gx"] = gx_prefix
    out["gx"] = summary
    if not res.batch_success:
        evidence = ctx.store.url(docs_index or f"{gx_prefix}/batch_gate.json")
        raise BatchGateFailed(
            "batch gate failed, nothing published. Failed expectations:\n  - "
            + "\n  - ".join(res.failed_batch_expectations)
            + f"\nevidence: {evidence}"
        )
    return out


def _collect_quarantine(ctx: RunContext, outs: list[dict[str, Any]]) -> pa.Table:
    tables = [ctx.store.read_table(o["keys"]["quarantined"], schemas.QUARANTINED) for o in outs
              if "quarantined" in o["keys"]]
    return pa.concat_tables(tables) if tables else schemas.table(schemas.QUARANTINED, [])


def run_publish(ctx: RunContext, ingest_out: dict[str, Any], prompts_out: dict[str, Any],
                label_outs: list[dict[str, Any]], score_out: dict[str, Any], gate_out: dict[str, Any]) -> dict[str, Any]:
    """Write the immutable snapshot, then move ``latest.json`` (gates have passed to get here)."""
    store, snap = ctx.store, ctx.paths.snapshot
    accepted = store.read_table(gate_out["keys"]["accepted"], schemas.SCORED)
    rejected = store.read_table(gate_out["keys"]["rejected"], schemas.REJECTED)
    quarantined = _collect_quarantine(ctx, [ingest_out, prompts_out, *label_outs])
    lineage = {
        "snapshot_id": ctx.paths.snapshot_id,
        "gate_suite_version": ctx.settings.gates.suite_version,
        "config_hash": ctx.settings.config_hash(),
        "code_version": code_version(),
    }
    n = accepted.num_rows
    for name, value in lineage.items():
        accepted = accepted.append_column(name, pa.array([value] * n, type=pa.string()))
    accepted = accepted.sort_by("prompt_id")
    manifest_key = f"{snap}/manifest.json"
    if store.exists(manifest_key):  # the manifest is the commit marker of a snapshot
        existing = store.read_json(manifest_key)
        if existing.get("record_ids_sha256") == _ids_digest(accepted):
            return {"snapshot_uri": existing["uri"], "counts": existing["counts"], "already_published": True}
        raise FileExistsError(f"snapshot {store.url(snap)} is already published with other records (immutable)")
    # data files may exist from a publish that died before its manifest: rewrite them
    store.write_table(f"{snap}/data/part-00000.parquet", accepted.cast(schemas.PUBLISHED))
    store.write_table(f"{snap}/rejected/part-00000.parquet", rejected.sort_by("prompt_id"))
    store.write_table(f"{snap}/quarantined/part-00000.parquet", quarantined.sort_by("record_id"))
    if "index" in ingest_out["keys"]:  # what later runs dedup against
        index = store.read_table(ingest_out["keys"]["index"], schemas.DIALOGUE_INDEX)
        index = index.set_column(index.schema.get_field_index("snapshot_id"), "snapshot_id",
                                 pa.array([ctx.paths.snapshot_id] * index.num_rows, type=pa.string()))
        store.write_table(f"{snap}/dialogues/index.parquet", index)
    store.write_json(f"{snap}/ingest_stats.json", ingest_out["stats"])
    gx_prefix = gate_out["keys"]["gx"]
    for key in store.list(gx_prefix + "/"):
        store.write_bytes(f"{snap}/gx/{key[len(gx_prefix) + 1:]}", store.read_bytes(key))
    counts = {
        "dialogues_read": ingest_out["stats"]["files_read"],
        "prompts": prompts_out["stats"]["prompts"],
        "accepted": accepted.num_rows,
        "rejected": rejected.num_rows,
        "quarantined": quarantined.num_rows,
        "quarantined_by_stage": {
            "ingest": ingest_out["stats"]["quarantined"],
            "prompts": prompts_out["stats"]["quarantined"],
            "label": sum(o["stats"]["quarantined"] for o in label_outs),
        },
    }
    manifest = {
        **lineage,
        "record_ids_sha256": _ids_digest(accepted),
        "ds": ctx.ds,
        "run_id": ctx.run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "uri": store.url(snap),
        "params": ctx.params,
        "counts": counts,
        "stages": {"ingest": ingest_out["stats"], "prompts": prompts_out["stats"],
                   "label": [o["stats"] for o in label_outs], "score": score_out["stats"], "gate": gate_out["stats"]},
        "engine": {"kind": ctx.settings.engine.kind, "model": ctx.settings.engine.model},
        "library_version": sorted(set(accepted.column("library_version").to_pylist())) if n else [],
        "gx": {**gate_out["gx"], "suite_version": ctx.settings.gates.suite_version,
               "results": {name: f"gx/{name}.json" for name in gate_out["gx"]["suites"]}},
        "quality_cost": {k: score_out["stats"][k] for k in ("layers", "seconds", "judge", "audit")},
        "files": {"data": ["data/part-00000.parquet"], "rejected": ["rejected/part-00000.parquet"],
                  "quarantined": ["quarantined/part-00000.parquet"], "dialogue_index": "dialogues/index.parquet",
                  "ingest_stats": "ingest_stats.json"},
    }
    store.write_json(manifest_key, manifest, overwrite=False)
    previous = store.read_json(LATEST_KEY) if store.exists(LATEST_KEY) else None
    store.write_json(LATEST_KEY, {"snapshot_id": ctx.paths.snapshot_id, "uri": store.url(snap),
                                  "manifest": f"{snap}/manifest.json", "ds": ctx.ds,
                                  "previous": previous.get("snapshot_id") if previous else None})
    return {"snapshot_uri": store.url(snap), "counts": counts}


def _ids_digest(accepted: pa.Table) -> str:
    ids = sorted(accepted.column("prompt_id").to_pylist())
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def check_conservation(ingest_out: dict[str, Any], prompts_out: dict[str, Any], label_outs: list[dict[str, Any]],
                       score_out: dict[str, Any], gate_out: dict[str, Any]) -> None:
    """records in = accepted + rejected + quarantined, per stage (raises on any loss)."""
    i, p, g = ingest_out["stats"], prompts_out["stats"], gate_out["stats"]
    labeled = sum(o["stats"]["labeled"] for o in label_outs)
    label_q = sum(o["stats"]["quarantined"] for o in label_outs)
    checks = {
        "ingest": i["files_read"] == i["dialogues_kept"] + i["quarantined"],
        "prompts": p["dialogues_in"] == p["dialogues_prompted"] + p["quarantined"],
        "label": p["prompts"] == labeled + label_q,
        "score": score_out["stats"]["labels_in"] == score_out["stats"]["scored"] == labeled,
        "gate": g["scored_in"] == g["accepted"] + g["rejected"],
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise AssertionError(f"conservation broken at {bad}: " + json.dumps(
            {"ingest": i, "prompts": p, "gate": g, "labeled": labeled, "label_quarantined": label_q}))


def run_all(ctx: RunContext) -> dict[str, Any]:
    """Whole pipeline in one process (CLI, tests, benchmarks); Airflow runs the same steps as tasks."""
    ing = run_ingest(ctx)
    pr = run_build_prompts(ctx, ing)
    labels: list[dict[str, Any]] = []
    if pr["stats"]["prompts"]:
        from dialinsight_core.inference import LazyEngine

        engine = LazyEngine(ctx.settings)  # one engine for all shards in this process, built if needed
        try:
            labels = [run_label_shard(ctx, s, engine) for s in pr["shards"]]
        finally:
            engine.close()
    sc = run_score(ctx, ing, pr, labels)
    gt = run_gate(ctx, sc, ing)
    check_conservation(ing, pr, labels, sc, gt)
    return run_publish(ctx, ing, pr, labels, sc, gt)
