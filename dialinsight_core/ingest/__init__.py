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
    Redact,
    Step,
    Validate,
    classify_behaviour,
    dialogue_row,
    turn_rows,
    validate,
)

__all__ = ["STAGE", "IngestResult", "InvalidDialogue", "RawDialogue", "SourceError", "classify_behaviour", "ingest",
           "parse_jsonl_line", "parse_star", "read_source", "validate"]


@dataclass
class IngestResult:
    turns: pa.Table
    dialogues: pa.Table
    quarantined: pa.Table
    stats: IngestStats
    index: pa.Table  # DIALOGUE_INDEX rows of the kept dialogues (snapshot_id empty until published)


def ingest(settings: Settings, max_dialogues: int = 0, sources: list[str] | None = None,
           published: PublishedDialogues | None = None) -> IngestResult:
    """Read every configured source (or the named ones) into canonical tables.

    ``published`` (the persistent index of committed snapshots' dialogues) makes exact and near
    duplicates of already published dialogues quarantine records too (``duplicate_of_published``).
    """
    wanted = settings.sources if not sources else [s for s in settings.sources if s.name in sources]
    if sources and len(wanted) != len(set(sources)):
        known = [s.name for s in settings.sources]
        raise ValueError(f"unknown source(s) {sorted(set(sources) - set(known))}; configured: {known}")
    quarantine = Quarantine()
    read = Read(quarantine, settings, wanted, max_dialogues or settings.ingest.max_dialogues)
    dedup = Dedup(quarantine, settings, published)
    steps = [read, Validate(quarantine, settings), Redact(quarantine, settings), dedup, Classify(quarantine, settings)]
    stream = iter(read)
    for step in steps[1:]:
        stream = step.run(stream)
    turns: list[dict[str, Any]] = []
    dialogues: list[dict[str, Any]] = []
    redactions: Counter[str] = Counter()
    with_pii = 0
    for rec in stream:
        turns += turn_rows(rec)
        dialogues.append(dialogue_row(rec))
        redactions.update(rec.pii_counts)
        with_pii += bool(rec.pii_counts)
    q = quarantine.rows
    stats: IngestStats = {
        "files_read": read.records_in,  # dialogue records read (a JSONL line, a group of CSV rows, a STAR file)
        "dialogues_kept": len(dialogues),
        "turns_kept": len(turns),
        "quarantined": len(q),
        "quarantined_by_reason": dict(Counter(r["reason_code"] for r in q)),
        "duplicates": {k: sum(1 for r in q if r["reason_code"] == k)
                       for k in ("duplicate", "near_duplicate", "duplicate_of_published")},
        "published_snapshots_compared": len(published.allowed) if published is not None else 0,
        "scenes": dict(Counter(d["scene"] for d in dialogues)),
        "scene_sources": dict(Counter(d["scene_source"] for d in dialogues)),
        "langs": dict(Counter(d["lang"] for d in dialogues)),
        "behaviours": {role: dict(Counter(t["behaviour"] for t in turns if t["role"] == role).most_common())
                       for role in settings.taxonomy.roles},
        "pii_redactions": dict(sorted(redactions.items())),
        "dialogues_with_pii": with_pii,
        "steps": {step.name: step.stats() for step in steps},
    }
    _check_conservation(stats, steps)
    return IngestResult(
        turns=schemas.table(schemas.TURNS, turns),
        dialogues=schemas.table(schemas.DIALOGUES, dialogues),
        quarantined=quarantine.table(),
        stats=stats,
        index=schemas.table(schemas.DIALOGUE_INDEX, dedup.index_rows),
    )


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
