"""The composed steps of ingest: read -> validate -> redact -> dedup -> classify.

Like DataTrove's pipeline blocks, each step takes a stream of records and yields the ones it
keeps; what it drops goes to the shared ``Quarantine`` with the step's name and a reason, never
silently. Each step counts its own ``records_in / records_out / quarantined`` so a reader sees
where a record left the stage, and ``records_in == records_out + quarantined`` holds per step.
Records flow one at a time through all steps, so memory does not hold the corpus twice and the
quarantine keeps source order.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings, SourceSettings
from dialinsight_core.contracts import StepStats
from dialinsight_core.dedup import LSHIndex, MinHasher
from dialinsight_core.dedup_index import DedupIndex, Match, PublishedDialogues
from dialinsight_core.ingest.adapters import InvalidDialogue, RawDialogue, read_source
from dialinsight_core.parallel import ordered_map
from dialinsight_core.pii import Redactor, compile_patterns
from dialinsight_core.storage import FileObjectStore
from dialinsight_core.text import clean_text, detect_lang, fold, folded_count, normalise_text

STAGE = "ingest"
RUN_SNAPSHOT = "run"  # the snapshot id of this run's own earlier batches in its run index (Dedup)
Turn = tuple[str, str, dict[str, Any]]  # (role, text, meta)
EVENT_KEYS = ("events_before", "events_after")  # where a turn's meta keeps system events (``event`` speakers)


class Drop(Exception):
    """Raised by a step's ``process``: the record goes to quarantine with this reason."""

    def __init__(self, code: str, detail: str, record: dict[str, Any]):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail, self.record = code, detail, record


@dataclass
class Record:
    """One dialogue record on its way through the steps; each step fills in what it decides."""

    record_id: str  # "<source>:<record id in the source>" (a file, a JSONL line, a CSV group)
    source: SourceSettings
    key: str  # the record id within its source
    raw: RawDialogue | InvalidDialogue
    data: bytes | None  # the record's bytes where the adapter had them (quarantine evidence)
    turns: list[Turn] = field(default_factory=list)
    dialogue_id: str = ""
    pii_counts: dict[str, int] = field(default_factory=dict)
    content_hash: str = ""
    minhash: np.ndarray | None = None
    lang: str = ""
    scene: str = ""
    scene_source: str = ""
    behaviours: list[str] = field(default_factory=list)
    prepared: bool = False  # validate, redact and classify already ran (in a worker process, ``prepare``)
    invalid: tuple[str, str] | None = None  # what validation found, when prepared

    def head(self) -> dict[str, Any]:
        """What a quarantine row of a record that never became a dialogue shows: a pointer to the
        bytes (source, file or line, size, sha256) and a *redacted* excerpt. Quarantine is published
        beside the snapshot, so it must never hold personal data in clear."""
        if not self.data:
            return {"source": self.source.name, "file": self.key, "head": None, "bytes": 0, "sha256": None}
        excerpt = self.data[:2000].decode(self.source.encoding, "replace")
        redact = Redactor(compile_patterns(self.source.pii_patterns))
        redact.learn_names([excerpt])
        return {"source": self.source.name, "file": self.key, "head": redact(excerpt), "bytes": len(self.data),
                "sha256": hashlib.sha256(self.data).hexdigest(), "head_redactions": redact.counts}


class Quarantine:
    """Rows of ``schemas.QUARANTINED`` from every step, in the order records were dropped. Rows are
    kept as Arrow tables of ``CHUNK`` rows (a tenth of a large corpus may be quarantined: a
    Python dict per row would be the stage's largest object), with the count per reason."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._chunks: list[pa.Table] = []
        self.by_reason: Counter[str] = Counter()

    def add(self, record_id: str, record: dict[str, Any], code: str, detail: str) -> None:
        self._rows.append(schemas.quarantine_row(record_id, record, STAGE, code, detail))
        self.by_reason[code] += 1
        if len(self._rows) >= self.CHUNK:
            self._chunks.append(schemas.table(schemas.QUARANTINED, self._rows))
            self._rows = []

    def __len__(self) -> int:
        return sum(self.by_reason.values())

    def table(self) -> pa.Table:
        return pa.concat_tables([*self._chunks, schemas.table(schemas.QUARANTINED, self._rows)])


class Step(ABC):
    """A pipeline block: ``run`` streams records through ``process``; a ``Drop`` quarantines one."""

    name: str

    def __init__(self, quarantine: Quarantine, settings: Settings):
        self.quarantine = quarantine
        self.settings = settings
        self.records_in = 0
        self.records_out = 0
        self.dropped: Counter[str] = Counter()

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for rec in records:
            self.records_in += 1
            try:
                self.process(rec)
            except Drop as drop:
                self.dropped[drop.code] += 1
                self.quarantine.add(rec.record_id, drop.record, drop.code, drop.detail)
                continue
            self.records_out += 1
            yield rec

    @abstractmethod
    def process(self, rec: Record) -> None:
        """Decide about one record in place; raise ``Drop`` to quarantine it."""

    def stats(self) -> StepStats:
        return {"records_in": self.records_in, "records_out": self.records_out,
                "quarantined": sum(self.dropped.values()), "quarantined_by_reason": dict(self.dropped)}


class Read(Step):
    """Every record of the chosen sources (at most ``limit`` per source); a record an adapter could
    not parse (bad encoding, unreadable JSON, missing columns) is quarantined here."""

    name = "read"

    def __init__(self, quarantine: Quarantine, settings: Settings, sources: list[SourceSettings], limit: int):
        super().__init__(quarantine, settings)
        self.sources, self.limit = sources, limit

    def records(self) -> Iterator[Record]:
        for source in self.sources:
            read_here = 0
            for key, raw, data in read_source(source, self.settings):
                if self.limit and read_here >= self.limit:  # max_dialogues is per source
                    break
                read_here += 1
                yield Record(f"{source.name}:{key}", source, key, raw, data)

    def process(self, rec: Record) -> None:
        if isinstance(rec.raw, InvalidDialogue):
            raise Drop(rec.raw.code, rec.raw.detail, rec.head())

    def __iter__(self) -> Iterator[Record]:
        return self.run(self.records())


class Validate(Step):
    """Turns (kept as spoken, see ``text.clean_text``) within the configured bounds, two known roles speaking."""

    name = "validate"

    def process(self, rec: Record) -> None:
        assert isinstance(rec.raw, RawDialogue)
        if rec.prepared and rec.invalid:
            raise Drop(*rec.invalid, rec.head())
        if not rec.prepared:
            try:
                rec.turns = validate(rec.raw, self.settings)
            except InvalidDialogue as exc:
                raise Drop(exc.code, exc.detail, rec.head()) from None
        rec.dialogue_id = f"{rec.source.name}:{rec.raw.dialogue_id}"


def validate(raw: RawDialogue, settings: Settings) -> list[Turn]:
    cfg = settings.ingest
    turns: list[Turn] = []
    events: list[str] = []
    for role, text, meta in raw.turns:  # stored as spoken
        if role == "drop":  # a speaker kind the source config maps away (e.g. a bot's menu prompts)
            continue
        if role == "event":  # a system event (call transferred, file sent): kept with the next turn, not a turn
            events.append(clean_text(text))
            continue
        if events:
            meta, events = {**meta, "events_before": events}, []
        turns.append((role, clean_text(text), meta))
    if events and turns:
        turns[-1] = (turns[-1][0], turns[-1][1], {**turns[-1][2], "events_after": events})
    empty = [i for i, (_, t, _) in enumerate(turns) if not t]
    turns = [t for t in turns if t[1]]
    if len(turns) < cfg.min_turns:
        raise InvalidDialogue("too_few_turns", f"{len(turns)} non-empty turns (< {cfg.min_turns}); empty: {empty}")
    if len(turns) > cfg.max_turns:
        raise InvalidDialogue("too_many_turns", f"{len(turns)} turns (> {cfg.max_turns})")
    roles = {r for r, _, _ in turns}
    if len(roles) < 2:
        raise InvalidDialogue("single_role", f"only role(s) {sorted(roles)} speak")
    unknown = roles - set(settings.taxonomy.roles)
    if unknown:
        raise InvalidDialogue("unknown_role", f"roles {sorted(unknown)} not in {settings.taxonomy.roles}: map each in the "
                              f"source's `roles:` to one of {settings.taxonomy.roles}, or to `drop` (left out) or "
                              f"`event` (kept with the next turn's meta)")
    for i, (_, text, _) in enumerate(turns):
        if len(text) > cfg.max_turn_chars:
            raise InvalidDialogue("turn_too_long", f"turn {i} has {len(text)} chars (> {cfg.max_turn_chars})")
    return turns


class Redact(Step):
    """PII -> typed placeholders, consistent within a dialogue, before any later stage (or LLM)
    sees the text; per-dialogue counts by type."""

    name = "redact"

    def process(self, rec: Record) -> None:
        if not rec.prepared:
            redact_record(rec)


def redact_record(rec: Record) -> None:
    """The record's turns (and the system events kept with them) with PII replaced; counts by type."""
    redact = Redactor(compile_patterns(rec.source.pii_patterns))
    redact.learn_names([t for _, t, _ in rec.turns] + [e for _, _, m in rec.turns for k in EVENT_KEYS for e in m.get(k, [])])
    rec.turns = [(role, redact(text), _redact_events(meta, redact)) for role, text, meta in rec.turns]
    rec.pii_counts = redact.counts


def _redact_events(meta: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """System events kept in a turn's meta are text too: redacted like the turns."""
    return {k: [redact(e) for e in v] if k in EVENT_KEYS else v for k, v in meta.items()}


class Dedup(Step):
    """Exact and near duplicates (MinHash/LSH over the redacted text) of a dialogue kept earlier
    in this run or of one already published (``published``: the persistent index of committed
    snapshots, asked once per batch of ``ingest.dedup_batch`` dialogues).

    Memory holds one batch, not the run: the dialogues kept in earlier batches of this run go to a
    run index on local disk (the persistent index's format, ``dedup_index.DedupIndex``) and are
    asked once per batch, like the published ones; each record is then checked in order against
    that answer and against the records kept earlier in its own batch (the order decides which
    copy stays). A run of one batch never writes the run index."""

    name = "dedup"

    def __init__(self, quarantine: Quarantine, settings: Settings, published: PublishedDialogues | None):
        super().__init__(quarantine, settings)
        cfg = settings.ingest
        self.threshold = cfg.near_dup_threshold
        self.hasher = MinHasher(k=cfg.near_dup_shingle)
        self.published = published
        self.batch = cfg.dedup_batch
        self.index_rows: list[dict[str, Any]] = []
        self._published_match: dict[int, Match | None] = {}
        self._run_match: dict[int, Match | None] = {}
        # the current batch's kept dialogues (checked in memory), and those of earlier batches (on disk)
        self.lsh = LSHIndex(threshold=cfg.near_dup_threshold)
        self.seen: dict[str, str] = {}
        self._kept: list[tuple[str, str, np.ndarray]] = []
        self._run_index: DedupIndex | None = None
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._batches_indexed = 0

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        """Records in batches: hashes and signatures, one lookup of the published index and of this
        run's earlier batches per batch, then each record in order against its batch's earlier ones."""
        try:
            batch: list[Record] = []
            for rec in records:
                batch.append(rec)
                if len(batch) >= self.batch:
                    yield from self._run_batch(batch)
                    batch = []
            if batch:
                yield from self._run_batch(batch)
        finally:
            if self._spool is not None:
                self._spool.cleanup()
                self._spool = self._run_index = None

    def _index_kept(self) -> None:
        """The previous batch's kept dialogues into the run index (then out of memory)."""
        if not self._kept:
            return
        if self._run_index is None:
            self._spool = tempfile.TemporaryDirectory(prefix="dialinsight-dedup-")
            self._run_index = DedupIndex(FileObjectStore(Path(self._spool.name)), self.threshold, buckets=1, tiered=False)
        ids, hashes, sigs = zip(*self._kept, strict=True)
        self._run_index.add(RUN_SNAPSHOT, list(ids), list(hashes), np.stack(sigs), part=self._batches_indexed)
        self._batches_indexed += 1
        self._kept, self.seen, self.lsh = [], {}, LSHIndex(threshold=self.threshold)

    def _run_batch(self, batch: list[Record]) -> Iterator[Record]:
        self._index_kept()
        for rec in batch:
            if rec.minhash is None:  # not prepared in a worker
                dedup_keys(rec, self.hasher)
        hashes, sigs = [r.content_hash for r in batch], np.stack([r.minhash for r in batch])
        self._published_match = self._run_match = {}
        if self.published is not None:
            found = self.published.lookup(hashes, sigs)
            self._published_match = {id(r): m for r, m in zip(batch, found, strict=True)}
        if self._run_index is not None:
            found = self._run_index.lookup(hashes, sigs, {RUN_SNAPSHOT})
            self._run_match = {id(r): m for r, m in zip(batch, found, strict=True)}
        yield from super().run(batch)

    def duplicate_of(self, rec: Record) -> tuple[str, str] | None:
        """(reason_code, detail) when this dialogue repeats one kept in this run or already published."""
        earlier = self._run_match.get(id(rec))
        if rec.content_hash in self.seen:
            return "duplicate", f"same content as {self.seen[rec.content_hash]}"
        if earlier is not None and earlier.exact:
            return "duplicate", f"same content as {earlier.dialogue_id}"
        old = self._published_match.get(id(rec))
        if old is not None:
            how = "same content" if old.exact else f"similarity {old.similarity:.2f}"
            return "duplicate_of_published", f"{how} as published {old.dialogue_id} (snapshot {old.snapshot_id})"
        assert rec.minhash is not None
        near = self.lsh.query(rec.minhash)  # most similar first, ties by id: as the run index answers
        if earlier is not None:
            near = sorted([*near[:1], (earlier.dialogue_id, earlier.similarity)], key=lambda t: (-t[1], t[0]))
        if near:
            return "near_duplicate", f"estimated similarity {near[0][1]:.2f} >= {self.threshold} with {near[0][0]}"
        return None

    def process(self, rec: Record) -> None:
        dup = self.duplicate_of(rec)
        if dup:
            raise Drop(*dup, {"source": rec.source.name, "file": rec.key, "dialogue_id": rec.dialogue_id})
        assert rec.minhash is not None
        self.lsh.add(rec.dialogue_id, rec.minhash)
        self.seen[rec.content_hash] = rec.dialogue_id
        self._kept.append((rec.dialogue_id, rec.content_hash, rec.minhash))
        self.index_rows.append({"dialogue_id": rec.dialogue_id, "content_hash": rec.content_hash,
                                "minhash": rec.minhash.tolist(), "snapshot_id": ""})


def dedup_keys(rec: Record, hasher: MinHasher) -> None:
    """What dedup compares of a validated, redacted dialogue: the hash of its normalised turns and
    the MinHash signature of its text (computed here or, ahead, in a worker: ``prepare``)."""
    key = "\n".join(f"{r}\t{normalise_text(t)}" for r, t, _ in rec.turns)
    rec.content_hash = hashlib.sha256(key.encode()).hexdigest()
    rec.minhash = hasher.signature("\n".join(f"{r}: {t}" for r, t, _ in rec.turns))


class Classify(Step):
    """Language, scene (the source's own label, taxonomy keywords, or the default) and each turn's
    role behaviour. Never drops a record: a dialogue nothing matched gets the default scene, which
    the optional LLM classifier (``scene_classifier``) revisits."""

    name = "classify"

    def process(self, rec: Record) -> None:
        if not rec.prepared:
            classify_record(rec, self.settings)


def classify_record(rec: Record, settings: Settings) -> None:
    assert isinstance(rec.raw, RawDialogue)
    full_text = "\n".join(t for _, t, _ in rec.turns)
    rec.lang = detect_lang(full_text)
    rec.scene, rec.scene_source = classify_scene_with_source(full_text, rec.raw.scene_hints, rec.source, settings)
    rec.behaviours = [classify_behaviour(role, text, settings) for role, text, _ in rec.turns]


def prepare(rec: Record, settings: Settings, hasher: MinHasher) -> Record:
    """What validate, redact and classify decide about one record, and the keys dedup compares,
    computed ahead (in a worker process): the steps then only replay it, in order, with their own
    counts and quarantine rows. Classifying a dialogue that dedup then drops is wasted work, never
    a different result."""
    if isinstance(rec.raw, RawDialogue):
        try:
            rec.turns = validate(rec.raw, settings)
        except InvalidDialogue as exc:
            rec.invalid = (exc.code, exc.detail)
        else:
            redact_record(rec)
            classify_record(rec, settings)
            # the signature is the main process's largest cost per dialogue: here it runs in a worker
            dedup_keys(rec, hasher)
    rec.prepared = True
    return rec


_WORKER: list[tuple[Settings, MinHasher]] = []


def _init_worker(settings: Settings) -> None:
    _WORKER[:] = [(settings, MinHasher(k=settings.ingest.near_dup_shingle))]


def _prepare_in_worker(rec: Record) -> Record:
    return prepare(rec, *_WORKER[0])


def prepared(records: Iterable[Record], settings: Settings, workers: int, after: int) -> Iterator[Record]:
    """The records, in order; past the first ``after`` (a small run stays in this process) the rest
    are ``prepare``d by ``workers`` spawned processes (chunks of 16, up to a dedup batch in flight)."""
    it = iter(records)
    for i, rec in enumerate(it):
        yield rec
        if workers > 1 and i + 1 >= after:
            break
    else:
        return
    # a dedup batch ahead: while this process looks a batch up in the dedup indexes (seconds, late
    # in a large run), the workers prepare the next one instead of waiting
    yield from ordered_map(_prepare_in_worker, it, workers, chunk=16, initializer=_init_worker, initargs=(settings,),
                           ahead=settings.ingest.dedup_batch)


def classify_scene_with_source(text: str, hints: list[str], source: SourceSettings,
                               settings: Settings) -> tuple[str, str]:
    """(scene, how it was decided): the source's own label (``scene_map``), taxonomy keywords, or
    the default scene when nothing matched (those are what the optional LLM classifier revisits)."""
    for hint in hints:
        if hint in source.scene_map:
            return source.scene_map[hint], "source"
    scenes, best = settings.scenes_of(source.domain)
    best_hits, low = 0, fold(text)
    for name, scene in scenes.items():
        hits = sum(folded_count(k, low) for k in folded_keywords(tuple(scene.keywords)) if k in low)
        if hits > best_hits:
            best, best_hits = name, hits
    return best, ("keywords" if best_hits else "default")


@lru_cache(maxsize=1024)
def folded_keywords(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """A taxonomy entry's keywords as ``keyword_count`` compares them ("？" and "?" are one
    keyword), folded once per process instead of once per turn."""
    return tuple(fold(k) for k in dict.fromkeys(map(fold, keywords)))


def classify_behaviour(role: str, text: str, settings: Settings) -> str:
    """Keyword classifier of what a turn does (greet, state_need, quote_price, ...); 'other' if nothing matches.
    A keyword's substring test comes first: most keywords are not in most turns."""
    best, best_hits, low = "other", 0, fold(text)
    for name, keywords in settings.taxonomy.behaviours.get(role, {}).items():
        hits = sum(1 for k in folded_keywords(tuple(keywords)) if k in low and folded_count(k, low, first=True))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def turn_rows(rec: Record) -> list[dict[str, Any]]:
    """The record's rows of the ``turns`` table."""
    return [{"dialogue_id": rec.dialogue_id, "source": rec.source.name, "turn_idx": idx, "role": role, "text": text,
             "lang": rec.lang, "scene": rec.scene, "behaviour": behaviour, "meta": json.dumps(meta, ensure_ascii=False)}
            for idx, ((role, text, meta), behaviour) in enumerate(zip(rec.turns, rec.behaviours, strict=True))]


def dialogue_row(rec: Record) -> dict[str, Any]:
    """The record's row of the ``dialogues`` table."""
    return {"dialogue_id": rec.dialogue_id, "source": rec.source.name, "scene": rec.scene, "n_turns": len(rec.turns),
            "lang": rec.lang, "pii_counts": json.dumps(rec.pii_counts, sort_keys=True), "content_hash": rec.content_hash,
            "source_file": rec.key, "scene_source": rec.scene_source}
