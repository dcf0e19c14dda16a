"""Ingest: source adapters -> canonical ``turns`` and ``dialogues`` tables + quarantine.

``ingest()`` composes the steps of ``steps`` (read -> validate -> redact -> dedup -> classify).
Every record read leaves this stage as exactly one kept dialogue or one quarantined record with
a reason (``files_read == kept + quarantined``, and per step ``in == out + quarantined``); a
malformed file never crashes the run. PII is redacted before any later stage (or LLM) sees the
text: typed placeholders, consistent within a dialogue, with per-dialogue and per-run counts.
The optional LLM scene classifier is its own module (``scene_classifier``). docs/ingest.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings
from dialinsight_core.contracts import IngestStats
from dialinsight_core.dedup_index import PublishedDialogues
from dialinsight_core.ingest.adapters import (
    InvalidDialogue,
    RawDialogue,
    SourceError,
    parse_jsonl_line,
    parse_star,
    read_source,
)
from dialinsight_core.ingest.steps import (
    STAGE,
    Classify,
    Dedup,
    Quarantine,
    Read,
    Record,
    Redact,
    Step,
    Validate,
    classify_behaviour,
    dialogue_row,
    prepared,
    turn_rows,
    validate,
)
from dialinsight_core.parallel import available_cores

__all__ = ["STAGE", "IngestResult", "InvalidDialogue", "RawDialogue", "SourceError", "classify_behaviour", "ingest",
           "parse_jsonl_line", "parse_star", "read_source", "validate"]


@dataclass
class IngestResult:
    turns: pa.Table
    dialogues: pa.Table
    quarantined: pa.Table
    stats: IngestStats
    index: pa.Table  # DIALOGUE_INDEX rows of the kept dialogues (snapshot_id empty until published)


Sink = Callable[[str, pa.Table], None]  # (table name, a batch of its rows): "turns", "dialogues", "index"


def ingest(settings: Settings, max_dialogues: int = 0, sources: list[str] | None = None,
           published: PublishedDialogues | None = None, sink: Sink | None = None) -> IngestResult:
    """Read every configured source (or the named ones) into canonical tables.

    ``published`` (the persistent index of committed snapshots' dialogues) makes exact and near
    duplicates of already published dialogues quarantine records too (``duplicate_of_published``).
    With a ``sink``, kept rows leave in batches of ``ingest.batch_dialogues`` dialogues as they are
    decided (the result's ``turns``, ``dialogues`` and ``index`` are then empty), so memory holds a
    batch, not the corpus; without one they are collected and returned.
    """
    wanted = settings.sources if not sources else [s for s in settings.sources if s.name in sources]
    if sources and len(wanted) != len(set(sources)):
        known = [s.name for s in settings.sources]
        raise ValueError(f"unknown source(s) {sorted(set(sources) - set(known))}; configured: {known}")
    quarantine = Quarantine()
    read = Read(quarantine, settings, wanted, max_dialogues or settings.ingest.max_dialogues)
    dedup = Dedup(quarantine, settings, published)
    steps = [read, Validate(quarantine, settings), Redact(quarantine, settings), dedup, Classify(quarantine, settings)]
    stream: Iterator[Record] = prepared(read, settings, ingest_workers(settings), settings.ingest.parallel_after)
    for step in steps[1:]:
        stream = step.run(stream)
    collected: dict[str, list[pa.Table]] = {"turns": [], "dialogues": [], "index": []}
    emit: Sink = sink or (lambda name, tbl: collected[name].append(tbl))
    turns: list[dict[str, Any]] = []
    dialogues: list[dict[str, Any]] = []
    n_dialogues = n_turns = with_pii = 0
    redactions: Counter[str] = Counter()
    scenes: Counter[str] = Counter()
    scene_sources: Counter[str] = Counter()
    langs: Counter[str] = Counter()
    behaviours: dict[str, Counter[str]] = {role: Counter() for role in settings.taxonomy.roles}

    def flush() -> None:
        if dialogues:
            emit("turns", schemas.table(schemas.TURNS, turns))
            emit("dialogues", schemas.table(schemas.DIALOGUES, dialogues))
            emit("index", schemas.table(schemas.DIALOGUE_INDEX, dedup.index_rows))
            turns.clear()
            dialogues.clear()
            dedup.index_rows.clear()

    for rec in stream:
        rows = turn_rows(rec)
        turns += rows
        dialogues.append(dialogue_row(rec))
        n_dialogues += 1
        n_turns += len(rows)
        redactions.update(rec.pii_counts)
        with_pii += bool(rec.pii_counts)
        scenes[rec.scene] += 1
        scene_sources[rec.scene_source] += 1
        langs[rec.lang] += 1
        for t in rows:
            if t["role"] in behaviours:
                behaviours[t["role"]][t["behaviour"]] += 1
        if len(dialogues) >= settings.ingest.batch_dialogues:
            flush()
    flush()
    stats: IngestStats = {
        "files_read": read.records_in,  # dialogue records read (a JSONL line, a group of CSV rows, a STAR file)
        "dialogues_kept": n_dialogues,
        "turns_kept": n_turns,
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(quarantine.by_reason),
        "duplicates": {k: quarantine.by_reason[k] for k in ("duplicate", "near_duplicate", "duplicate_of_published")},
        "published_snapshots_compared": len(published.allowed) if published is not None else 0,
        "scenes": dict(scenes),
        "scene_sources": dict(scene_sources),
        "langs": dict(langs),
        "behaviours": {role: dict(c.most_common()) for role, c in behaviours.items()},
        "pii_redactions": dict(sorted(redactions.items())),
        "dialogues_with_pii": with_pii,
        "steps": {step.name: step.stats() for step in steps},
    }
    _check_conservation(stats, steps)

    def table(name: str, schema: pa.Schema) -> pa.Table:
        return pa.concat_tables(collected[name]) if collected[name] else schemas.table(schema, [])

    return IngestResult(
        turns=table("turns", schemas.TURNS),
        dialogues=table("dialogues", schemas.DIALOGUES),
        quarantined=quarantine.table(),
        stats=stats,
        index=table("index", schemas.DIALOGUE_INDEX),
    )


def ingest_workers(settings: Settings) -> int:
    """Processes that validate, redact and classify ahead of the steps (``ingest.workers``)."""
    return settings.ingest.workers or available_cores()


def _check_conservation(stats: IngestStats, steps: list[Step]) -> None:
    """Records in = kept + quarantined, for the stage and for every step; each step gets what the
    one before it kept (raises on any loss)."""
    ok = stats["files_read"] == stats["dialogues_kept"] + stats["quarantined"]
    for before, step in pairwise(steps):
        ok &= before.records_out == step.records_in
    for step in steps:
        st = step.stats()
        ok &= st["records_in"] == st["records_out"] + st["quarantined"]
    if not ok:
        raise AssertionError(f"ingest lost records: {stats}")
