"""Stage runners of the nightly DAG (``dialinsight_nightly``) and the CLI.

Each runner reads its inputs from the object store, runs one core stage, writes its outputs (and
quarantine) back and returns a small typed summary (``contracts``): the Airflow tasks' XComs are
these summaries, never data. ``run_all`` runs the same steps in one process (CLI, tests,
benchmarks). Every runner is idempotent for a given (ds, run_id): it rewrites the same keys with
the same content. This is the only layer that knows more than one stage: it decides which engine
each stage gets and what each stage reads (docs/architecture.md).
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dialinsight_core import publishing, schemas
from dialinsight_core.config import RULE_DIMENSIONS, Settings
from dialinsight_core.contracts import (
    Baseline,
    GateKeys,
    GateOut,
    GateStats,
    GateSummary,
    IngestKeys,
    IngestOut,
    LabelKeys,
    LabelOut,
    PromptKeys,
    PromptsOut,
    PublishOut,
    ScoreOut,
    ShardRef,
    promoted,
    run_overrides,
)
from dialinsight_core.errors import BatchGateFailed, TooManyFailures
from dialinsight_core.inference import CachedEngine, LazyEngine, label_prompts, make_engine
from dialinsight_core.inference.fingerprint import model_fingerprint
from dialinsight_core.ingest import SourceError, ingest
from dialinsight_core.ingest.scene_classifier import classify_scenes_llm
from dialinsight_core.instructions import load_library, load_output_schemas
from dialinsight_core.instructions.store import load_approved
from dialinsight_core.llm import Engine, model_name, sampling_dict
from dialinsight_core.memory import arrow_pool
from dialinsight_core.notify import strip_url_credentials
from dialinsight_core.parallel import available_cores, ordered_map
from dialinsight_core.prompts import PromptBuilder, shard_of
from dialinsight_core.prompts.sampler import Multipliers, mix_audit, outcome_counts, solve_multipliers
from dialinsight_core.publishing import examples
from dialinsight_core.publishing.exports import read_mixin
from dialinsight_core.quality.gates import gate_parts, remove_docs
from dialinsight_core.quality.scoring import score_parts, score_workers
from dialinsight_core.runs.context import RunContext, code_version
from dialinsight_core.storage import ObjectExistsError, parquet_batches

__all__ = [
    "BatchGateFailed",
    "RunContext",
    "SourceError",
    "TooManyFailures",
    "check_conservation",
    "previous_baseline",
    "run_all",
    "run_build_prompts",
    "run_gate",
    "run_ingest",
    "run_label_shard",
    "run_publish",
    "run_score",
    "verdict_line",
]

# dialogue rows build_prompts reads ahead at a time (``dialogue_parts``): a part's dialogues, not the run's
DIALOGUE_BATCH_ROWS = 8192
SHARD_ROW_GROUP_ROWS = 4096  # rows per row group of a stored prompt or turns shard

# what a person should check first, per failure reason of a label request
_FAILURE_HINTS = {
    "connection_error": "the server did not answer: is it running and reachable from the worker?",
    "timeout": "the server answered too slowly: is it overloaded? engine.timeout_s is {timeout_s:g} s",
    "context_too_long": "prompts exceed the model's context: lower prompts.max_dialogue_chars or engine.max_tokens",
    "bad_request": "the server rejected the request: does it support structured output (response_format json_schema)?",
    "bad_body": "the server's replies are not OpenAI chat completions: is base_url the /v1 endpoint?",
}


def engine_hint(settings: Settings, by_reason: dict[str, int]) -> str:
    """Which engine the requests went to and what to check, for a person reading a failed task's
    log: the URL and a command that tests it, never the API key itself."""
    e = settings.engine
    if e.kind == "openai":
        url = strip_url_credentials(str(e.base_url)).rstrip("/")  # credentials in the URL stay out of logs
        where = (f"Engine: OpenAI-compatible server at {url}, model {e.served_model_name or e.model} "
                 f"(API key from ${e.api_key_env}). Test it from the worker: curl -s {url}/models")
    else:
        where = f"Engine: in-process vLLM, model {e.model}. Check the model folder exists on the worker and fits its memory"
    hints = [h.format(timeout_s=e.timeout_s) for r, h in _FAILURE_HINTS.items() if r in by_reason]
    hints += [f"{r}: the server returned HTTP {r[5:]}; see its log" for r in by_reason if r.startswith("http_")]
    return where + (". " + "; ".join(hints) if hints else "") + "."


def run_ingest(ctx: RunContext) -> IngestOut:
    """Ingest (deduplicated against published snapshots), then the optional LLM scene classifier."""
    cfg = ctx.settings.ingest
    published = publishing.published_dialogues(ctx.store, ctx.ds, cfg.near_dup_threshold, cfg.dedup_index_buckets) \
        if cfg.dedup_against_published else None
    max_dialogues, sources = int(ctx.params.get("max_dialogues") or 0), ctx.params.get("sources") or None
    if cfg.llm_scene_classifier:  # the classifier revisits the whole tables: collected in memory
        res = ingest(ctx.settings, max_dialogues=max_dialogues, sources=sources, published=published)
        if "default" in res.stats.get("scene_sources", {}):
            engine = make_engine(ctx.settings.with_engine(ctx.settings.ingest.llm_classifier_engine))
            try:
                res = classify_scenes_llm(res, engine, ctx.settings)
            finally:
                engine.close()
        keys = ctx.write_stage("ingest", {"turns": res.turns, "dialogues": res.dialogues,
                                          "quarantined": res.quarantined, "index": res.index}, res.stats)
        return {"keys": cast(IngestKeys, keys), "stats": res.stats}
    names = {"turns": schemas.TURNS, "dialogues": schemas.DIALOGUES, "index": schemas.DIALOGUE_INDEX}
    keys = {name: ctx.key(f"ingest/{name}.parquet") for name in names}
    with ExitStack() as stack:  # each kept batch is written as a row group as soon as it is decided
        writers = {name: stack.enter_context(ctx.store.table_writer(keys[name], schema)) for name, schema in names.items()}
        res = ingest(ctx.settings, max_dialogues=max_dialogues, sources=sources, published=published,
                     sink=lambda name, tbl: writers[name].write_table(tbl))
    keys.update(ctx.write_stage("ingest", {"quarantined": res.quarantined}, res.stats))
    return {"keys": cast(IngestKeys, keys), "stats": res.stats}


def run_build_prompts(ctx: RunContext, ingest_out: IngestOut) -> PromptsOut:
    """Prompts from the latest human-approved library (``prompts.library_source: auto``) or the
    bundled one, cut into at most ``labeling.shards`` shards by dialogue."""
    k = ingest_out["keys"]
    store, settings = ctx.store, ctx.settings
    library = load_approved(store, settings) if settings.prompts.library_source == "auto" else None
    if library is None:
        library = load_library(settings)
    n_dialogues = store.open_parquet(k["dialogues"]).metadata.num_rows
    builder = PromptBuilder(library, load_output_schemas(settings), settings, ctx.ds, multipliers=sampler_multipliers(ctx))
    # the shard count is fixed before the prompts exist: at most one shard per possible prompt
    n_buckets = max(1, min(settings.labeling.shards, n_dialogues * settings.prompts.instructions_per_dialogue))
    prompts_key = ctx.key("prompts/prompts.parquet")
    # each part's rows go to one local Arrow IPC file per kind, sorted by shard, one record batch
    # per shard; at the end each shard's batches are read back from every part, in order. A Parquet
    # writer kept open per shard held every row group's metadata until it closed (16 KiB a row
    # group, shards x parts of them: most of a 1M-dialogue build's memory), and a Parquet file per
    # part and shard cost more to write and close than the rows themselves
    spooled: defaultdict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    rows: Counter[int] = Counter()
    with tempfile.TemporaryDirectory(prefix="dialinsight-shards-") as tmp:
        with store.table_writer(prompts_key, schemas.PROMPTS) as run_writer:
            turn_batches = store.iter_batches(k["turns"], settings.prompts.batch_turns, schemas.TURNS)
            dialogue_batches = store.iter_batches(k["dialogues"], DIALOGUE_BATCH_ROWS, schemas.DIALOGUES)
            for part, (part_dialogues, part_turns) in enumerate(dialogue_parts(dialogue_batches, turn_batches)):
                by_dialogue: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for t in part_turns.to_pylist():
                    by_dialogue[t["dialogue_id"]].append(t)
                prompts = builder.add(part_dialogues.to_pylist(), by_dialogue)
                run_writer.write_table(prompts)
                bucket_of = {did: shard_of(did, n_buckets) for did in prompts.column("dialogue_id").unique().to_pylist()}
                for kind, tbl in (("prompts", prompts), ("turns", part_turns)):
                    which = np.array([bucket_of.get(did, -1) for did in tbl.column("dialogue_id").to_pylist()], dtype=np.int64)
                    path = f"{tmp}/{kind}-{part:06d}.arrow"
                    for b, n, i in _spool_by_bucket(tbl, which, path):
                        spooled[kind, b].append((path, i))
                        if kind == "prompts":
                            rows[b] += n
        # shards are numbered in bucket order, empty buckets dropped (as ``shard_prompts`` cuts a table)
        shards: list[ShardRef] = []
        for i, b in enumerate(sorted(rows)):
            key, turns_key = ctx.key(f"prompts/shards/shard-{i:05d}.parquet"), ctx.key(f"prompts/shards/turns-{i:05d}.parquet")
            for kind, schema, to in (("prompts", schemas.PROMPTS, key), ("turns", schemas.TURNS, turns_key)):
                with store.table_writer(to, schema) as writer:
                    _join_spooled(spooled.pop((kind, b)), writer)
            shards.append({"shard": i, "key": key, "n": rows[b], "turns_key": turns_key})
    if not shards:  # nothing to label: one empty shard, as before
        key, turns_key = ctx.key("prompts/shards/shard-00000.parquet"), ctx.key("prompts/shards/turns-00000.parquet")
        store.write_table(key, schemas.table(schemas.PROMPTS, []))
        store.write_table(turns_key, schemas.table(schemas.TURNS, []))
        shards.append({"shard": 0, "key": key, "n": 0, "turns_key": turns_key})
    stats = builder.stats()
    keys = {"prompts": prompts_key, **ctx.write_stage("prompts", {"quarantined": builder.quarantined(),
                                                                  "instructions": library}, stats)}
    return {"keys": cast(PromptKeys, keys), "stats": stats, "shards": shards}


def _spool_by_bucket(tbl: pa.Table, which: np.ndarray, path: str) -> list[tuple[int, int, int]]:
    """``tbl``'s rows with a bucket (``which`` >= 0) into one Arrow IPC file at ``path``, grouped
    by bucket in bucket order, rows in their order within a bucket; returns (bucket, rows, batch
    index) for each record batch written."""
    order = np.argsort(which, kind="stable")
    order = order[which[order] >= 0]
    if not len(order):
        return []
    buckets, starts, counts = np.unique(which[order], return_index=True, return_counts=True)
    ordered = tbl.take(pa.array(order)).combine_chunks()
    out: list[tuple[int, int, int]] = []
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, tbl.schema, options=options) as w:
        for b, s, n in zip(buckets.tolist(), starts.tolist(), counts.tolist(), strict=True):
            for batch in ordered.slice(s, n).to_batches():  # one, the table being one chunk
                w.write_batch(batch)
                out.append((b, batch.num_rows, len(out)))
    return out


def _join_spooled(batches: list[tuple[str, int]], writer: pq.ParquetWriter, rows: int = SHARD_ROW_GROUP_ROWS) -> None:
    """A shard's spooled record batches (file, batch index), in order, into one table of row groups
    of about ``rows`` rows."""
    held: list[pa.RecordBatch] = []
    n = 0
    for path, i in batches:
        with pa.OSFile(path) as f:
            held.append(pa.ipc.open_file(f).get_batch(i))
        n += held[-1].num_rows
        if n >= rows:
            writer.write_table(pa.Table.from_batches(held))
            held, n = [], 0
    if held:
        writer.write_table(pa.Table.from_batches(held))


def outcomes_key(ctx: RunContext) -> str:
    """Where the gate keeps this run's per-stratum outcomes (``prompts.adaptive.prefix``)."""
    return f"{ctx.settings.prompts.adaptive.prefix}/{ctx.paths.work.split('/', 1)[1]}.json"


def sampler_multipliers(ctx: RunContext) -> Multipliers:
    """The adaptive sampler's multipliers for this logical date. The first prompt build of a date
    solves them from the gate outcomes of runs with an earlier date (newest first) and pins them
    (``sampler/pinned/ds=<ds>.json``, create-only); every later run of the date (a retry, a rerun,
    an override run, a replay) uses the pinned ones, so it builds the same prompts and finds their
    answers in the cache, whatever ran since. Delete the pin to re-solve."""
    cfg = ctx.settings.prompts.adaptive
    if not cfg.enabled:
        return Multipliers()
    pin = f"{posixpath.dirname(cfg.prefix) or 'sampler'}/pinned/ds={ctx.ds}.json"
    if ctx.store.exists(pin):
        return Multipliers.from_record(ctx.store.read_json(pin))
    dated = []
    for key in ctx.store.list(cfg.prefix + "/"):
        m = re.search(r"/ds=(\d{4}-\d{2}-\d{2})/", key)
        if m and key.endswith(".json") and m.group(1) < ctx.ds:
            dated.append((m.group(1), key))
    latest = sorted(dated, reverse=True)[: cfg.history_runs]
    mult = solve_multipliers([{"key": key, **ctx.store.read_json(key)} for _, key in latest], cfg)
    try:
        ctx.store.write_bytes(pin, json.dumps(mult.record(full=True), sort_keys=True).encode(), overwrite=False)
    except ObjectExistsError:  # another run of this date pinned first: use its multipliers
        return Multipliers.from_record(ctx.store.read_json(pin))
    return mult


def record_outcomes(ctx: RunContext, accepted_key: str, rejected_key: str) -> tuple[str, dict[str, Any] | None]:
    """Count this run's gate outcomes per stratum for later runs' sampler, and audit the accepted mix
    against the targets (the prompt stage's design, the configured family shares)."""
    cols = ["task_family", "scene", "role_focus", "lang"]

    def rows() -> Iterator[tuple[str, str, str, str, bool]]:  # a batch of rows in memory, not the run's
        for key, accepted in ((accepted_key, True), (rejected_key, False)):
            for batch in parquet_batches(ctx.store.open_parquet(key), 65_536, cols):
                yield from ((*r, accepted) for r in zip(*(batch.column(c).to_pylist() for c in cols), strict=True))

    strata = outcome_counts(rows())
    key = outcomes_key(ctx)
    ctx.store.write_json(key, {"ds": ctx.ds, "run_id": ctx.run_id, "config_hash": ctx.settings.config_hash(),
                               "strata": strata})
    stats_key = ctx.key("prompts/stats.json")
    if not ctx.store.exists(stats_key):
        return key, None
    design = ctx.store.read_json(stats_key).get("design") or {}
    targets = {"task_family": {f: v.target_share for f, v in ctx.settings.task_families.items()}}
    return key, mix_audit({k: v[1] for k, v in strata.items() if v[1]}, design, targets)


def dialogue_parts(dialogues: pa.Table | Iterable[pa.RecordBatch],
                   turn_batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(dialogues, their turns) a part at a time, both streamed in batches. Ingest writes a
    dialogue's turns together, and dialogues in the order of their turns, so a part ends where a
    dialogue does (the last dialogue of a batch waits for the next batch) and the dialogues are
    read ahead only as far as a part needs. Turns of a dialogue that came back later (or that
    have no dialogue row) are a broken input and raise. Dialogues without turns come last, in
    their stored order, with no turns (the builder quarantines them)."""
    stream = iter(dialogues.to_batches() if isinstance(dialogues, pa.Table) else dialogues)
    ahead: pa.Table | None = None  # dialogue rows read and not yet given to a part, in stored order
    pending: pa.Table | None = None

    def read_ahead() -> bool:
        nonlocal ahead
        batch = next(stream, None)
        if batch is None:
            return False
        more = pa.Table.from_batches([batch])
        ahead = more if ahead is None else pa.concat_tables([ahead, more])
        return True

    def part(turns: pa.Table) -> tuple[pa.Table, pa.Table]:
        nonlocal ahead
        part_ids = turns.column("dialogue_id").unique()
        while True:
            have = pc.is_in(ahead.column("dialogue_id"), value_set=part_ids) if ahead is not None else None
            found = pc.unique(ahead.column("dialogue_id").filter(have)) if ahead is not None else pa.array([], pa.string())
            if len(found) == len(part_ids) or not read_ahead():
                break
        if len(found) < len(part_ids):
            missing = sorted(set(part_ids.to_pylist()) - set(found.to_pylist()))
            raise ValueError(f"the turns of dialogue {missing[0]} are not stored together (ingest writes them so), "
                             "or it has no dialogue row")
        assert ahead is not None and have is not None
        mine, ahead = ahead.filter(have), ahead.filter(pc.invert(have))
        return mine, turns

    for batch in turn_batches:
        turns = pa.Table.from_batches([batch])
        if pending is not None:
            turns = pa.concat_tables([pending, turns])
        if not turns.num_rows:
            continue
        tid = turns.column("dialogue_id").to_numpy(zero_copy_only=False)
        start = len(tid) - 1
        while start > 0 and tid[start - 1] == tid[-1]:
            start -= 1
        pending = turns.slice(start)
        if start:
            yield part(turns.slice(0, start))
    if pending is not None and pending.num_rows:
        yield part(pending)
    while read_ahead():
        pass
    if ahead is not None and ahead.num_rows:
        yield ahead, schemas.table(schemas.TURNS, [])


def run_label_shard(ctx: RunContext, shard: ShardRef, engine: Engine | LazyEngine | None = None) -> LabelOut:
    """Label one shard through the request cache; builds (and closes) its own engine, lazily,
    unless one is passed in."""
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
    keys = ctx.write_stage(f"label/shard-{shard['shard']:05d}", {"labels": res.labels, "quarantined": res.quarantined},
                           res.stats)
    if rate > ctx.settings.labeling.max_failure_rate:
        raise TooManyFailures(
            f"shard {shard['shard']}: {res.stats['quarantined']}/{n} requests failed "
            f"({res.stats['quarantined_by_reason']}) > labeling.max_failure_rate={ctx.settings.labeling.max_failure_rate}.",
            engine_hint(ctx.settings, res.stats["quarantined_by_reason"]))
    return {"keys": cast(LabelKeys, keys), "stats": res.stats}


def run_score(ctx: RunContext, ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut]) -> ScoreOut:
    """The quality cascade; the judge's engine is built only if some record needs the judge."""
    factory = None
    if ctx.settings.quality.judge.enabled:
        judge = ctx.settings.judge_settings()
        lab = ctx.settings.labeling
        # the judge's requests go through the same request cache: a rerun pays for no verdict twice
        def factory() -> CachedEngine:
            return CachedEngine(LazyEngine(judge), judge.engine, ctx.store if lab.cache else None,
                                f"{lab.cache_prefix.rstrip('/')}/judge", lab.checkpoint_every, lab.order, owns_inner=True,
                                model_id=model_fingerprint(judge), buckets=lab.cache_buckets,
                                compact_chunks=lab.cache_compact_chunks)
    instructions = ctx.store.read_table(prompts_out["keys"]["instructions"], schemas.INSTRUCTIONS)
    key = ctx.key("score/scored.parquet")
    with ctx.store.table_writer(key, schemas.SCORED) as writer:  # one shard's rows in memory at a time
        workers = score_workers(ctx.settings, sum(o["stats"]["labeled"] for o in label_outs), len(label_outs))
        stats = score_parts(_score_inputs(ctx, ingest_out, prompts_out, label_outs), instructions,
                            load_output_schemas(ctx.settings), ctx.settings, factory, ctx.ds, writer.write_table, workers)
    ctx.store.write_json(ctx.key("score/stats.json"), stats)
    return {"keys": {"scored": key}, "stats": stats}


def _score_inputs(ctx: RunContext, ingest_out: IngestOut, prompts_out: PromptsOut,
                  label_outs: list[LabelOut]) -> Iterator[tuple[pa.Table, pa.Table, pa.Table]]:
    """(labels, prompts, turns) per label shard; a shard written before shards carried their turns
    (or labels without a shard) falls back to the run's whole tables."""
    by_number = {s["shard"]: s for s in prompts_out["shards"]}
    whole: dict[str, pa.Table] = {}

    def run_table(name: str, key: str, schema: pa.Schema) -> pa.Table:
        if name not in whole:
            whole[name] = ctx.store.read_table(key, schema)
        return whole[name]

    for out in label_outs:
        labels = ctx.store.read_table(out["keys"]["labels"], schemas.LABELS)
        m = re.search(r"/label/shard-(\d+)/", out["keys"]["labels"])
        shard = by_number.get(int(m.group(1))) if m else None
        if shard is not None and shard.get("turns_key"):
            yield labels, ctx.store.read_table(shard["key"], schemas.PROMPTS), \
                ctx.store.read_table(shard["turns_key"], schemas.TURNS)
        else:
            yield labels, run_table("prompts", prompts_out["keys"]["prompts"], schemas.PROMPTS), \
                run_table("turns", ingest_out["keys"]["turns"], schemas.TURNS)



def previous_baseline(ctx: RunContext) -> Baseline | None:
    """The previous published snapshot's row count, from ``latest.json`` and its manifest."""
    return publishing.read_latest(ctx.store)


def run_gate(ctx: RunContext, score_out: ScoreOut, ingest_out: IngestOut | None = None) -> GateOut:
    """GX row + batch suites; evidence (JSON and Data Docs HTML) is written even when the batch fails."""
    dialogues_read = ingest_out["stats"]["files_read"] if ingest_out else None
    # one folder per attempt: a retried gate never mixes its evidence with an earlier attempt's
    gx_prefix = ctx.key(f"gate/gx/{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}")
    store, rows = ctx.store, ctx.settings.gates.batch_rows

    def evidence(name: str, result: Any) -> None:
        store.write_json(f"{gx_prefix}/{name}.json", result)

    with store.table_writer(ctx.key("gate/accepted.parquet"), schemas.SCORED) as acc, \
            store.table_writer(ctx.key("gate/rejected.parquet"), schemas.REJECTED) as rej:
        res = gate_parts(store.iter_batches(score_out["keys"]["scored"], rows, schemas.SCORED), schemas.SCORED,
                         ctx.settings, acc.write_table, rej.write_table,
                         write_evidence=evidence,
                         baseline=previous_baseline(ctx), dialogues_read=dialogues_read, params=ctx.params,
                         run_name=ctx.paths.snapshot_id)
    try:
        for name, result in res.results.items():
            evidence(name, result)
        docs_index = None
        if res.data_docs_dir is not None:
            for path in sorted(res.data_docs_dir.rglob("*")):
                rel = path.relative_to(res.data_docs_dir).as_posix()
                if path.is_file() and not rel.startswith("static/fonts/"):  # fonts: 3/4 of the size, CSS falls back
                    store.write_bytes(f"{gx_prefix}/data_docs/{rel}", path.read_bytes())
            docs_index = f"{gx_prefix}/data_docs/index.html"
    finally:
        remove_docs(res)
    summary: GateSummary = {"suites": res.suites, "batch_gate_success": res.batch_success,
                            "failed_batch_expectations": res.failed_batch_expectations,
                            "data_docs": "gx/data_docs/index.html" if docs_index else None}
    ctx.store.write_json(f"{gx_prefix}/summary.json", summary)
    stats: GateStats = {**res.stats, "failed_batch_expectations": res.failed_batch_expectations}
    stats["outcomes_key"], mix = record_outcomes(ctx, ctx.key("gate/accepted.parquet"), ctx.key("gate/rejected.parquet"))
    if mix is not None:
        stats["mix"] = mix
    store.write_json(ctx.key("gate/stats.json"), stats)
    keys: GateKeys = {"accepted": ctx.key("gate/accepted.parquet"), "rejected": ctx.key("gate/rejected.parquet"),
                      "gx": gx_prefix}
    out: GateOut = {"keys": keys, "stats": stats, "gx": summary}
    if not res.batch_success:
        raise BatchGateFailed(res.failed_batch_expectations, ctx.store.url(docs_index or f"{gx_prefix}/batch_gate.json"),
                              written=dict(out))
    return out


def _collect_quarantine(ctx: RunContext, keys: list[str]) -> pa.Table:
    tables = [ctx.store.read_table(k, schemas.QUARANTINED) for k in keys]
    return pa.concat_tables(tables) if tables else schemas.table(schemas.QUARANTINED, [])


def run_publish(ctx: RunContext, ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut],
                score_out: ScoreOut, gate_out: GateOut) -> PublishOut:
    """The snapshot of this run: complete training examples with lineage, rejected and quarantined
    beside them, exports, the dataset card. Arrow allocates from ``publishing.memory_pool``."""
    with arrow_pool(ctx.settings.publishing.memory_pool):
        return _run_publish(ctx, ingest_out, prompts_out, label_outs, score_out, gate_out)


def _run_publish(ctx: RunContext, ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut],
                 score_out: ScoreOut, gate_out: GateOut) -> PublishOut:
    store, settings = ctx.store, ctx.settings
    instructions = store.read_table(prompts_out["keys"]["instructions"], schemas.INSTRUCTIONS)
    # what completing a part reads, a few dozen bytes a record (docs/benchmarks.md); publish releases it
    # after both passes, before the snapshot's last steps (the dedup index is the largest)
    held: dict[str, Any] = {
        "dialogues": store.open_parquet(ingest_out["keys"]["dialogues"]).read(columns=["dialogue_id", "source", "source_file"]),
        "lookup": examples.PromptLookup(store, [s["key"] for s in prompts_out["shards"]]),  # build_prompts writes >= 1 shard
    }
    # quarantined/ is read when it is written, after the passes (31.5 MiB at 1M dialogues); counted from the footers
    q_keys = [ingest_out["keys"]["quarantined"], prompts_out["keys"]["quarantined"],
              *(o["keys"]["quarantined"] for o in label_outs)]
    n_quarantined = sum(store.open_parquet(k).metadata.num_rows for k in q_keys)
    lineage = {
        "snapshot_id": ctx.paths.snapshot_id,
        "gate_suite_version": settings.gates.suite_version,
        "config_hash": settings.config_hash(),
        "code_version": code_version(),
    }
    sampling = sampling_dict(settings.engine)
    cfg = settings.publishing
    gated = {"accepted": gate_out["keys"]["accepted"], "rejected": gate_out["keys"]["rejected"]}
    files = {name: store.open_parquet(key) for name, key in gated.items()}
    n_rows = {name: pf.metadata.num_rows for name, pf in files.items()}

    def complete(name: str) -> Iterator[pa.Table]:
        """The gate's records of ``name`` as complete rows, a part of ``publishing.batch_rows`` at a time."""
        schema, src = (schemas.PUBLISHED, schemas.SCORED) if name == "accepted" else \
            (schemas.PUBLISHED_REJECTED, schemas.REJECTED)
        parts: Iterable[pa.Table] = (pa.Table.from_batches([b]) for b in store.iter_batches(gated[name], cfg.batch_rows, src))
        if name == "rejected":
            # a pii_leak answer and its evidence never reach the snapshot. Re-tagging answers for names is
            # publish's largest cost, so large runs spread it over worker processes; they get the records
            # before completion (the answer fields, not the prompts), and the assistant message is made
            # from the redacted answer
            workers = (cfg.workers or available_cores()) if n_rows["rejected"] >= cfg.parallel_min_rows else 1
            parts = ordered_map(examples.redact_answers, parts, workers)
        lookup, dialogues = held["lookup"], held["dialogues"]
        lookup.rewind()  # each pass is in the gate's order, shard by shard from the first
        for part in parts:
            ids = part.column("dialogue_id")
            yield examples.complete(part, lookup.take(part.column("prompt_id")), instructions,
                                    dialogues.filter(pc.is_in(dialogues.column("dialogue_id"), value_set=ids)),
                                    sampling, lineage, schema)

    ids_sha256 = publishing.ids_digest(files["accepted"].read(columns=["prompt_id"]))
    fingerprints = sorted({f for pf in files.values()
                           for b in parquet_batches(pf, 65_536, ["model_fingerprint"])
                           for f in b.column(0).unique().to_pylist() if f}) \
        or [model_fingerprint(settings)]  # nothing labeled: the configured model
    counts = {
        "dialogues_read": ingest_out["stats"]["files_read"],
        # prompts made: labeled ones, and those that did not fit the token budget (accepted + rejected + quarantined)
        "prompts": prompts_out["stats"]["prompts"] + prompts_out["stats"].get("quarantined_prompts", 0),
        "accepted": n_rows["accepted"],
        "rejected": n_rows["rejected"],
        "quarantined": n_quarantined,  # rows of quarantined/: dialogues and prompts, split below
        "quarantined_dialogues": ingest_out["stats"]["quarantined"] + prompts_out["stats"]["quarantined"],
        "quarantined_prompts": prompts_out["stats"].get("quarantined_prompts", 0)
        + sum(o["stats"]["quarantined"] for o in label_outs),
        "quarantined_by_stage": {
            "ingest": ingest_out["stats"]["quarantined"],
            "prompts": prompts_out["stats"]["quarantined"] + prompts_out["stats"].get("quarantined_prompts", 0),
            "label": sum(o["stats"]["quarantined"] for o in label_outs),
        },
    }
    if counts["quarantined"] != counts["quarantined_dialogues"] + counts["quarantined_prompts"]:
        raise AssertionError(f"quarantined/ holds {counts['quarantined']} rows, the stages quarantined "
                             f"{counts['quarantined_by_stage']}")
    gx = gate_out["gx"]
    judge = score_out["stats"]["judge"]
    audit = score_out["stats"]["audit"]
    limitations = []
    if audit.get("agreement") is not None and audit["agreement"] < 0.7:
        limitations.append(f"On the audit sample the LLM judge agreed with the cheap quality layers only "
                           f"{audit['agreement']:.0%} of the time ({audit['judged_ok']} records): treat its scores with care.")
    event = snapshot_event(ctx, store.url(ctx.paths.snapshot), counts, gate_out)
    summary = summary_markdown(event)
    p_stats = prompts_out["stats"]
    mix = {"prompts": (p_stats.get("mix") or {}).get("target"), "accepted": gate_out["stats"].get("mix"),
           "sampler": p_stats.get("sampler"), "diversity": p_stats.get("diversity")}
    out = publishing.publish(store, publishing.Snapshot(
        prefix=ctx.paths.snapshot, snapshot_id=ctx.paths.snapshot_id, ds=ctx.ds, run_id=ctx.run_id, params=ctx.params,
        lineage=lineage, accepted=lambda: complete("accepted"), rejected=lambda: complete("rejected"),
        record_ids_sha256=ids_sha256, quarantined=lambda: _collect_quarantine(ctx, q_keys), release=held.clear,
        index=lambda: (pa.Table.from_batches([b]) for b in store.iter_batches(ingest_out["keys"]["index"], cfg.batch_rows,
                                                                            schemas.DIALOGUE_INDEX)),
        ingest_stats=dict(ingest_out["stats"]), gx_prefix=gate_out["keys"]["gx"], counts=counts,
        exports=settings.publishing.exports, mixin=read_mixin(settings.publishing.exports, settings), seed=settings.seed,
        card_settings=settings.publishing.card,
        report={"families": {f: v.target_share for f, v in settings.task_families.items()},
                "prompt_mix": dict(prompts_out["stats"]["family_share"]), "score_stats": dict(score_out["stats"]),
                "label_stats": [dict(o["stats"]) for o in label_outs], "strata": mix},
        card={"sources": list(ctx.params.get("sources") or [s.name for s in settings.sources]),
              "model": model_name(settings.engine), "engine": settings.engine.kind,
              "model_fingerprint": ", ".join(fingerprints),
              "sampling_params": json.dumps(sampling, sort_keys=True), "judge_model": judge.get("model"),
              "judge": judge, "rule_dims": list(RULE_DIMENSIONS), "thresholds": dict(settings.quality.thresholds),
              "suite_version": settings.gates.suite_version, "limitations": limitations},
        overrides=run_overrides(ctx.params), promote=promoted(ctx.params), retention=settings.publishing.retention,
        dedup_buckets=settings.ingest.dedup_index_buckets,
        manifest={
            "stages": {"ingest": ingest_out["stats"], "prompts": prompts_out["stats"],
                       "label": [o["stats"] for o in label_outs], "score": score_out["stats"], "gate": gate_out["stats"]},
            "engine": {"kind": settings.engine.kind, "model": settings.engine.model,
                       "model_fingerprint": fingerprints, "sampling": sampling},
            "judge": {"model": judge.get("model"), "engine": judge.get("engine")},
            "gx": {**gx, "suite_version": settings.gates.suite_version,
                   "results": {name: f"gx/{name}.json" for name in gx["suites"]}},
            "quality_cost": {k: score_out["stats"][k] for k in ("layers", "seconds", "judge", "audit")},
            "mix_audit": {"prompts": _mix_summary(mix["prompts"]), "accepted": _mix_summary(mix["accepted"]),
                          "sampler_digest": (mix["sampler"] or {}).get("digest"),
                          "sampler_runs": (mix["sampler"] or {}).get("runs", [])},
            "summary_md": summary,
        }))
    latest = out.get("latest")
    return {**out, "asset_extra": {**event, "already_published": bool(out.get("already_published")),
                                   "latest": dict(latest) if latest else None},
            "summary_md": summary + (f"\n- latest.json: {'moved here' if latest['moved'] else 'not moved'} "
                                     f"({latest['why']})" if latest else "")}


def _mix_summary(mix: dict[str, Any] | None) -> dict[str, Any] | None:
    """A mix audit's figures for the manifest: each margin's and the joint strata's deviation and
    chi-squared (the rows per stratum stay in the stage stats)."""
    if not mix:
        return None
    return {dim: {k: v for k, v in audit.items() if k != "strata"} for dim, audit in mix.items()}


def snapshot_event(ctx: RunContext, uri: str, counts: dict[str, Any], gate_out: GateOut) -> dict[str, Any]:
    """The extra of the snapshot's Airflow asset event: where it is and what it holds, so a user (or a
    downstream DAG) goes from the run to its snapshot in one step."""
    judged = counts["accepted"] + counts["rejected"]
    return {
        "snapshot_id": ctx.paths.snapshot_id, "uri": uri, "ds": ctx.ds, "run_id": ctx.run_id,
        "manifest": f"{uri}/manifest.json", "card": f"{uri}/README.md", "report": f"{uri}/report.html",
        "counts": {k: counts[k] for k in ("dialogues_read", "prompts", "accepted", "rejected", "quarantined",
                                          "quarantined_dialogues", "quarantined_prompts")},
        "accept_rate": round(counts["accepted"] / judged, 4) if judged else 0.0,
        "top_reject_reasons": dict(_ranked(gate_out["stats"]["rejected_by_reason"], 5)),
        "suites": {name: {"version": v.get("version"), "hash": v.get("hash")} for name, v in gate_out["gx"]["suites"].items()},
    }


def summary_markdown(event: dict[str, Any]) -> str:
    """Headline figures of a published snapshot: the task log's and the manifest's short summary."""
    c = event["counts"]
    return "\n".join([
        f"### dialinsight snapshot `{event['snapshot_id']}` (run `{event['run_id']}`)",
        f"- **{c['accepted']} accepted**, {c['rejected']} rejected, {c['quarantined_prompts']} quarantined "
        f"of {c['prompts']} prompts from {c['dialogues_read']} dialogue records ({c['quarantined_dialogues']} "
        f"dialogues quarantined; accept rate {event['accept_rate']:.1%})",
        f"- snapshot: {event['uri']}",
        f"- run report: {event['report']}",
        f"- dataset card: {event['card']}",
        f"- manifest: {event['manifest']}",
    ])


def _ranked(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` largest counts, ties by name (the same order in logs, events and alerts)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _top(counts: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{k} {v}" for k, v in _ranked(counts, n)) or "none"


def verdict_line(ctx: RunContext, stage: str, out: Any) -> str:
    """The first thing a person reads in a task's log: what the stage did, its counts and where
    its output is (the same facts as the stage's stats, in one line)."""
    s, where = out["stats"], ctx.store.url(ctx.key(""))
    if stage == "ingest":
        return (f"ingest OK: {s['files_read']} dialogue records read -> {s['dialogues_kept']} kept "
                f"({s['turns_kept']} turns), {s['quarantined']} quarantined (top reasons: {_top(s['quarantined_by_reason'])}); "
                f"{sum(s['pii_redactions'].values())} PII values redacted in {s['dialogues_with_pii']} dialogues; "
                f"duplicates dropped: {_top(s['duplicates'])}; output: {where}ingest/")
    if stage == "build_prompts":
        runs = len((s.get("sampler") or {}).get("runs", []))
        return (f"build_prompts OK: {s['prompts']} prompts from {s['dialogues_prompted']} dialogues in "
                f"{len(out['shards'])} label shard(s), {s['quarantined']} dialogues and "
                f"{s.get('quarantined_prompts', 0)} prompts quarantined, {s.get('windowed', 0)} windowed; task mix "
                f"{ {k: round(v, 2) for k, v in s['family_share'].items()} } "
                f"({f'adaptive weights from {runs} earlier run(s)' if runs else 'targets alone: no earlier outcomes'}); "
                f"output: {where}prompts/")
    if stage == "label":
        return (f"label OK: {s['prompts_in']} prompts -> {s['labeled']} labeled, {s['quarantined']} quarantined "
                f"(top reasons: {_top(s['quarantined_by_reason'])}); {s['cache_hits']} from the request cache, "
                f"{s['requests_sent']} sent to {model_name(ctx.settings.engine)} in {s['engine_seconds']:.1f} s; "
                f"finish reasons: {_top(s['finish_reasons'])}")
    if stage == "score":
        j = s["judge"]
        return (f"score OK: {s['scored']} of {s['labels_in']} labels scored; rules + grounding on all, judge on "
                f"{j.get('judged', 0)} ({j.get('failed', 0)} judge failures); output: {where}score/")
    if stage == "gate":
        return (f"gate OK: {s['accepted']} accepted, {s['rejected']} rejected (accept rate {s['accept_rate']:.1%}; "
                f"top reject reasons: {_top(s['rejected_by_reason'])}); batch gate passed; accepted family mix at most "
                f"{(s.get('mix') or {}).get('task_family', {}).get('max_abs_deviation', float('nan')):.3f} from target; "
                f"GX evidence: {ctx.store.url(out['keys']['gx'])}/")
    raise ValueError(f"no verdict line for stage {stage!r}")


def check_conservation(ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut],
                       score_out: ScoreOut, gate_out: GateOut) -> None:
    """records in = accepted + rejected + quarantined inside every stage, and what one stage hands
    on is what the next one takes in (raises on any loss or duplication, naming the check)."""
    i, p, g, sc = ingest_out["stats"], prompts_out["stats"], gate_out["stats"], score_out["stats"]
    labeled = sum(o["stats"]["labeled"] for o in label_outs)
    label_q = sum(o["stats"]["quarantined"] for o in label_outs)
    checks = {
        "ingest": i["files_read"] == i["dialogues_kept"] + i["quarantined"],
        "ingest->prompts": p["dialogues_in"] == i["dialogues_kept"],
        "prompts": p["dialogues_in"] == p["dialogues_prompted"] + p["quarantined"],
        "prompts (sampled)": p.get("prompts_sampled", p["prompts"]) >= p["prompts"] + p.get("quarantined_prompts", 0),
        "prompts->shards": sum(s["n"] for s in prompts_out["shards"]) == p["prompts"],
        "shards->label": sum(o["stats"]["prompts_in"] for o in label_outs) == p["prompts"],
        "label": p["prompts"] == labeled + label_q,
        "label->score": sc["labels_in"] == labeled,
        "score": sc["labels_in"] == sc["scored"],
        "score->gate": g["scored_in"] == sc["scored"],
        "gate": g["scored_in"] == g["accepted"] + g["rejected"],
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise AssertionError(f"conservation broken at {bad}: " + json.dumps(
            {"ingest": i, "prompts": p, "score": sc, "gate": g, "labeled": labeled, "label_quarantined": label_q},
            default=str))


def run_all(ctx: RunContext) -> PublishOut:
    """Whole pipeline in one process (CLI, tests, benchmarks); Airflow runs the same steps as tasks."""
    ing = run_ingest(ctx)
    pr = run_build_prompts(ctx, ing)
    labels: list[LabelOut] = []
    if pr["stats"]["prompts"]:
        engine = LazyEngine(ctx.settings)  # one engine for all shards in this process, built if needed
        try:
            labels = [run_label_shard(ctx, s, engine) for s in pr["shards"]]
        finally:
            engine.close()
    sc = run_score(ctx, ing, pr, labels)
    gt = run_gate(ctx, sc, ing)
    check_conservation(ing, pr, labels, sc, gt)
    return run_publish(ctx, ing, pr, labels, sc, gt)
