"""Ingest: source adapters -> canonical ``turns`` and ``dialogues`` tables + quarantine.

Every file read leaves this stage as exactly one kept dialogue or one quarantined record with a
reason (``files_read == kept + quarantined``); a malformed file never crashes the run. PII is
redacted here, before any later stage (or LLM) sees the text: typed placeholders, consistent
within a dialogue, with per-dialogue and per-run counts.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings, SourceSettings
from dialinsight_core.dedup import LSHIndex, MinHasher
from dialinsight_core.pii import Redactor
from dialinsight_core.storage import ObjectStore, open_store

STAGE = "ingest"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class InvalidDialogue(ValueError):
    """A source record that cannot become a dialogue; ``code`` is the reason_code."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class RawDialogue:
    """What an adapter yields: turns as (role, text, meta) plus source hints."""

    dialogue_id: str
    source_file: str
    turns: list[tuple[str, str, dict[str, Any]]]
    scene_hints: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    turns: pa.Table
    dialogues: pa.Table
    quarantined: pa.Table
    stats: dict[str, Any]
    index: pa.Table | None = None  # DIALOGUE_INDEX rows of the kept dialogues (snapshot_id empty)


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up >= 30% of the letters, else 'en' (first depth)."""
    letters = _LETTER.findall(text)
    if not letters:
        return "und"
    return "zh" if len(_CJK.findall(text)) / len(letters) >= 0.3 else "en"


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


def classify_scene_with_source(text: str, hints: list[str], source: SourceSettings,
                               settings: Settings) -> tuple[str, str]:
    """(scene, how it was decided): the source's own label (``scene_map``), taxonomy keywords, or
    the default scene when nothing matched (those are what the optional LLM classifier revisits)."""
    for hint in hints:
        if hint in source.scene_map:
            return source.scene_map[hint], "source"
    lowered = text.lower()
    best, best_hits = settings.taxonomy.default_scene, 0
    for name, scene in settings.taxonomy.scenes.items():
        hits = sum(lowered.count(k.lower()) for k in scene.keywords)
        if hits > best_hits:
            best, best_hits = name, hits
    return best, ("keywords" if best_hits else "default")


def _keyword_in(keyword: str, low: str) -> bool:
    """Chinese keywords match as substrings; English ones on word boundaries ("hi" not in "this")."""
    if not keyword.isascii() or not keyword[0].isalnum():  # Chinese, or punctuation such as "?" / "[name_"
        return keyword in low
    return re.search(rf"(?<![a-z]){re.escape(keyword)}(?![a-z])", low) is not None


def classify_behaviour(role: str, text: str, settings: Settings) -> str:
    """Keyword classifier of what a turn does (greet, state_need, quote_price, ...); 'other' if nothing matches."""
    low = text.lower()
    best, best_hits = "other", 0
    for name, keywords in settings.taxonomy.behaviours.get(role, {}).items():
        hits = sum(1 for k in keywords if _keyword_in(k.lower(), low))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


# --- adapters -------------------------------------------------------------------------------

STAR_ROLES = {"User": "customer", "Wizard": "agent"}
STAR_TURN_ACTIONS = {"utter", "pick_suggestion"}


def parse_star(data: bytes, source_file: str) -> RawDialogue:
    """STAR WOz format: only User/Wizard ``utter``/``pick_suggestion`` events are real turns.

    ``request_suggestions`` is the wizard's unsent draft and ``UserGuide`` events are crowd-worker
    instructions; both are dropped (see data/star_apartment_en/README.md).
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidDialogue("bad_encoding", f"not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidDialogue("unreadable_json", f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Events"), list):
        raise InvalidDialogue("malformed_structure", "expected an object with an 'Events' list")
    did = doc.get("DialogueID")
    if did is None:
        raise InvalidDialogue("malformed_structure", "missing DialogueID")
    turns: list[tuple[str, str, dict[str, Any]]] = []
    for i, ev in enumerate(doc["Events"]):
        if not isinstance(ev, dict):
            raise InvalidDialogue("malformed_structure", f"event {i} is not an object")
        if ev.get("Agent") not in STAR_ROLES or ev.get("Action") not in STAR_TURN_ACTIONS:
            continue
        text = ev.get("Text")
        if not isinstance(text, str):
            raise InvalidDialogue("non_text_turn", f"event {i} has Text of type {type(text).__name__}")
        meta = {"action": ev["Action"], "event_idx": i}
        if ev.get("ActionLabel"):
            meta["action_label"] = ev["ActionLabel"]
        turns.append((STAR_ROLES[ev["Agent"]], text, meta))
    scenario = doc.get("Scenario") if isinstance(doc.get("Scenario"), dict) else {}
    hints = [c.get("Task") for c in scenario.get("WizardCapabilities", []) if isinstance(c, dict) and c.get("Task")]
    return RawDialogue(str(did), source_file, turns, hints)


def _field(source: SourceSettings, name: str, default: str) -> str:
    return source.fields.get(name, default)


def _map_role(label: Any, source: SourceSettings) -> str:
    """Source role label -> canonical role; an unmapped label stays as is (validation rejects it)."""
    key = str(label).strip() if label is not None else ""
    return source.roles.get(key, source.roles.get(key.lower(), key.lower()))


def _decode(data: bytes, encoding: str = "utf-8") -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        raise InvalidDialogue("bad_encoding", f"not {encoding}: {exc}") from None


def parse_jsonl_line(line: bytes, source: SourceSettings, where: str) -> RawDialogue:
    """One dialogue per JSON line: ``{id, turns: [{role, text}, ...], scene?}`` (field names from config)."""
    text = _decode(line, source.encoding)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidDialogue("unreadable_json", f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidDialogue("malformed_structure", f"expected an object, got {type(doc).__name__}")
    did = doc.get(_field(source, "dialogue_id", "id"))
    turns_raw = doc.get(_field(source, "turns", "turns"))
    if did is None or isinstance(did, dict | list):
        field = _field(source, "dialogue_id", "id")
        raise InvalidDialogue("malformed_structure", f"missing or invalid dialogue id field {field!r}")
    if not isinstance(turns_raw, list):
        raise InvalidDialogue("malformed_structure", f"field {_field(source, 'turns', 'turns')!r} is not a list")
    rk, tk = _field(source, "role", "role"), _field(source, "text", "text")
    turns: list[tuple[str, str, dict[str, Any]]] = []
    for i, t in enumerate(turns_raw):
        if not isinstance(t, dict):
            raise InvalidDialogue("malformed_structure", f"turn {i} is not an object")
        if not isinstance(t.get(tk), str):
            raise InvalidDialogue("non_text_turn", f"turn {i} has {tk!r} of type {type(t.get(tk)).__name__}")
        turns.append((_map_role(t.get(rk), source), t[tk], {"source_role": str(t.get(rk))}))
    scene = doc.get(_field(source, "scene", "scene"))
    return RawDialogue(str(did), where, turns, [str(scene)] if isinstance(scene, str) else [])


def parse_turn_table(tbl: pa.Table, source: SourceSettings, where: str) -> Iterator[tuple[str, RawDialogue | InvalidDialogue]]:
    """One turn per row (CSV / Parquet): rows grouped by dialogue id, ordered by turn index."""
    did_k, idx_k = _field(source, "dialogue_id", "dialogue_id"), _field(source, "turn_idx", "turn_idx")
    rk, tk, sk = _field(source, "role", "role"), _field(source, "text", "text"), _field(source, "scene", "scene")
    missing = [c for c in (did_k, rk, tk) if c not in tbl.column_names]
    if missing:
        yield where, InvalidDialogue("malformed_structure", f"{where}: missing columns {missing}; has {tbl.column_names}")
        return
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in tbl.to_pylist():
        groups.setdefault(str(row.get(did_k)), []).append(row)
    for did, rows in groups.items():
        rid = f"{where}#{did}"
        try:
            if did in ("None", ""):
                raise InvalidDialogue("malformed_structure", f"{len(rows)} rows without a dialogue id")
            if idx_k in tbl.column_names:
                idxs = [r.get(idx_k) for r in rows]
                if any(not isinstance(i, int) or isinstance(i, bool) for i in idxs):
                    raise InvalidDialogue("malformed_structure", f"non-integer turn indices {idxs[:10]}")
                dup = sorted({i for i in idxs if idxs.count(i) > 1})
                if dup:
                    raise InvalidDialogue("duplicate_turn_index", f"turn indices {dup} occur more than once")
                rows = sorted(rows, key=lambda r: r[idx_k])
            turns = []
            for j, r in enumerate(rows):
                if not isinstance(r.get(tk), str):
                    raise InvalidDialogue("non_text_turn", f"row {j} has {tk!r} of type {type(r.get(tk)).__name__}")
                turns.append((_map_role(r.get(rk), source), r[tk], {"source_role": str(r.get(rk))}))
            hints = sorted({str(r[sk]) for r in rows if isinstance(r.get(sk), str)})
            yield rid, RawDialogue(did, where, turns, hints)
        except InvalidDialogue as exc:
            yield rid, exc


def _read_table(data: bytes, adapter: str, encoding: str = "utf-8") -> pa.Table:
    import io

    try:
        if adapter == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(data))
        import pyarrow.csv as pacsv

        text = _decode(data, encoding)  # a clear bad_encoding instead of a parser error
        return pacsv.read_csv(io.BytesIO(text.encode("utf-8")), convert_options=pacsv.ConvertOptions(
            column_types={"text": pa.string(), "role": pa.string()}, strings_can_be_null=False))
    except InvalidDialogue:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise InvalidDialogue("unreadable_file", f"cannot read {adapter}: {str(exc)[:300]}") from None


ADAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {  # adapter -> (folder prefix, file suffixes)
    "star": ("dialogues/", (".json",)),
    "jsonl": ("", (".jsonl", ".ndjson")),
    "csv": ("", (".csv",)),
    "parquet": ("", (".parquet",)),
}


# --- stage ----------------------------------------------------------------------------------


def _source_store(source: SourceSettings, settings: Settings) -> ObjectStore:
    uri = source.uri if "://" in source.uri else f"file://{settings.resolve_path(source.uri)}"
    return open_store(uri, settings)


def _records(source: SourceSettings, settings: Settings) -> Iterator[tuple[str, RawDialogue | InvalidDialogue, bytes | None]]:
    """Every dialogue record of a source, or the reason it cannot be one (one entry per record)."""
    store = _source_store(source, settings)
    prefix, suffixes = ADAPTERS[source.adapter]
    for key in [k for k in store.list(prefix) if k.endswith(suffixes)]:
        try:
            data = store.read_bytes(key)
        except OSError as exc:
            yield key, InvalidDialogue("unreadable_file", str(exc)), None
            continue
        if source.adapter == "star":
            try:
                yield key, _star_with_roles(data, key, source), data
            except InvalidDialogue as exc:
                yield key, exc, data
        elif source.adapter == "jsonl":
            for n, line in enumerate(data.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{key}#L{n}", parse_jsonl_line(line, source, key), line
                except InvalidDialogue as exc:
                    yield f"{key}#L{n}", exc, line
        else:
            try:
                tbl = _read_table(data, source.adapter, source.encoding)
            except InvalidDialogue as exc:
                yield key, exc, data
                continue
            for rid, rec in parse_turn_table(tbl, source, key):
                yield rid, rec, None


def _star_with_roles(data: bytes, key: str, source: SourceSettings) -> RawDialogue:
    raw = parse_star(data, key)
    if source.roles:  # STAR roles are already canonical; a mapping may still rename them
        raw.turns = [(source.roles.get(r, r), t, m) for r, t, m in raw.turns]
    return raw


def validate(raw: RawDialogue, settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    cfg = settings.ingest
    turns = [(role, normalise_text(text), meta) for role, text, meta in raw.turns]
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
        raise InvalidDialogue("unknown_role", f"roles {sorted(unknown)} not in {settings.taxonomy.roles}")
    for i, (_, text, _) in enumerate(turns):
        if len(text) > cfg.max_turn_chars:
            raise InvalidDialogue("turn_too_long", f"turn {i} has {len(text)} chars (> {cfg.max_turn_chars})")
    return turns


def ingest(settings: Settings, max_dialogues: int = 0, sources: list[str] | None = None,
           published: pa.Table | None = None) -> IngestResult:
    """Read every configured source (or the named ones) into canonical tables.

    ``published`` (DIALOGUE_INDEX rows of earlier snapshots) makes exact and near duplicates of
    already published dialogues quarantine records too (``duplicate_of_published``).
    """
    wanted = settings.sources if not sources else [s for s in settings.sources if s.name in sources]
    if sources and len(wanted) != len(set(sources)):
        known = [s.name for s in settings.sources]
        raise ValueError(f"unknown source(s) {sorted(set(sources) - set(known))}; configured: {known}")
    limit = max_dialogues or settings.ingest.max_dialogues
    turn_rows: list[dict[str, Any]] = []
    dlg_rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    seen_hashes: dict[str, str] = {}
    records_read = 0
    redactions: Counter[str] = Counter()
    hasher = MinHasher(k=settings.ingest.near_dup_shingle)
    lsh = LSHIndex(threshold=settings.ingest.near_dup_threshold)
    old_lsh = LSHIndex(threshold=settings.ingest.near_dup_threshold)
    old_hashes: dict[str, str] = {}
    index_rows: list[dict[str, Any]] = []
    for row in (published.to_pylist() if published is not None else []):
        where = f"{row['dialogue_id']} (snapshot {row['snapshot_id']})"
        old_hashes.setdefault(row["content_hash"], where)
        old_lsh.add(where, np.asarray(row["minhash"], dtype=np.uint64))
    dialogues_redacted = 0

    def duplicate_of(content_hash: str, sig: np.ndarray) -> tuple[str, str] | None:
        """(reason_code, detail) when this dialogue repeats one kept in this run or already published."""
        if content_hash in seen_hashes:
            return "duplicate", f"same content as {seen_hashes[content_hash]}"
        old = [(old_hashes[content_hash], 1.0)] if content_hash in old_hashes else old_lsh.query(sig)
        if old:
            how = "same content" if old[0][1] == 1.0 else f"similarity {old[0][1]:.2f}"
            return "duplicate_of_published", f"{how} as published {old[0][0]}"
        near = lsh.query(sig)
        if near:
            return "near_duplicate", (f"estimated similarity {near[0][1]:.2f} >= {settings.ingest.near_dup_threshold} "
                                      f"with {near[0][0]}")
        return None

    for source in wanted:
        read_here = 0
        for record_id_in_source, rec, data in _records(source, settings):
            if limit and read_here >= limit:  # max_dialogues is per source
                break
            read_here += 1
            records_read += 1
            record_id = f"{source.name}:{record_id_in_source}"
            key = record_id_in_source
            try:
                if isinstance(rec, InvalidDialogue):
                    raise rec
                raw = rec
                turns = validate(raw, settings)
            except InvalidDialogue as exc:
                snippet = data[:2000].decode("utf-8", "replace") if data else None
                quarantine.append(
                    schemas.quarantine_row(record_id, {"source": source.name, "file": key, "head": snippet},
                                           STAGE, exc.code, exc.detail)
                )
                continue
            dialogue_id = f"{source.name}:{raw.dialogue_id}"
            redact = Redactor()
            redact.learn_names([t for _, t, _ in turns])
            turns = [(role, redact(text), meta) for role, text, meta in turns]
            full_text = "\n".join(t for _, t, _ in turns)
            content_hash = hashlib.sha256(
                "\n".join(f"{r}\t{t.lower()}" for r, t, _ in turns).encode()
            ).hexdigest()
            sig = hasher.signature("\n".join(f"{r}: {t}" for r, t, _ in turns))
            dup = duplicate_of(content_hash, sig)
            if dup:
                quarantine.append(
                    schemas.quarantine_row(record_id, {"source": source.name, "file": key, "dialogue_id": dialogue_id},
                                           STAGE, *dup)
                )
                continue
            lsh.add(dialogue_id, sig)
            seen_hashes[content_hash] = dialogue_id
            index_rows.append({"dialogue_id": dialogue_id, "content_hash": content_hash, "minhash": sig.tolist(),
                               "snapshot_id": ""})
            lang = detect_lang(full_text)
            scene, scene_source = classify_scene_with_source(full_text, raw.scene_hints, source, settings)
            for idx, (role, text, meta) in enumerate(turns):
                turn_rows.append({
                    "dialogue_id": dialogue_id, "source": source.name, "turn_idx": idx, "role": role,
                    "text": text, "lang": lang, "scene": scene, "behaviour": classify_behaviour(role, text, settings),
                    "meta": json.dumps(meta, ensure_ascii=False),
                })
            dlg_rows.append({
                "dialogue_id": dialogue_id, "source": source.name, "scene": scene, "n_turns": len(turns),
                "lang": lang, "pii_counts": json.dumps(redact.counts, sort_keys=True), "content_hash": content_hash,
                "source_file": key, "scene_source": scene_source,
            })
            for kind, n in redact.counts.items():
                redactions[kind] += n
            if redact.counts:
                dialogues_redacted += 1
    stats = {
        "files_read": records_read,  # dialogue records read (a JSONL line, a group of CSV rows, a STAR file)
        "dialogues_kept": len(dlg_rows),
        "turns_kept": len(turn_rows),
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(Counter(q["reason_code"] for q in quarantine)),
        "duplicates": {k: sum(1 for q in quarantine if q["reason_code"] == k)
                       for k in ("duplicate", "near_duplicate", "duplicate_of_published")},
        "published_dialogues_compared": len(old_lsh),
        "scenes": dict(Counter(d["scene"] for d in dlg_rows)),
        "scene_sources": dict(Counter(d["scene_source"] for d in dlg_rows)),
        "langs": dict(Counter(d["lang"] for d in dlg_rows)),
        "behaviours": {role: dict(Counter(t["behaviour"] for t in turn_rows if t["role"] == role).most_common())
                       for role in settings.taxonomy.roles},
        "pii_redactions": dict(sorted(redactions.items())),
        "dialogues_with_pii": dialogues_redacted,
    }
    if records_read != len(dlg_rows) + len(quarantine):  # conservation, checked at every stage
        raise AssertionError(f"ingest lost records: read {records_read}, kept {len(dlg_rows)}, quarantined {len(quarantine)}")
    return IngestResult(
        turns=schemas.table(schemas.TURNS, turn_rows),
        dialogues=schemas.table(schemas.DIALOGUES, dlg_rows),
        quarantined=schemas.table(schemas.QUARANTINED, quarantine),
        stats=stats,
        index=schemas.table(schemas.DIALOGUE_INDEX, index_rows),
    )


# --- optional LLM scene classifier --------------------------------------------------------------


def turn_lines(turns: pa.Table) -> dict[str, list[str]]:
    """Per dialogue, its turns as ``role: text`` lines in table order (what LLM prompts about it show)."""
    lines: dict[str, list[str]] = {}
    for t in turns.select(["dialogue_id", "role", "text"]).to_pylist():
        lines.setdefault(t["dialogue_id"], []).append(f"{t['role']}: {t['text']}")
    return lines


def classify_scenes_llm(result: IngestResult, engine: Any, settings: Settings) -> IngestResult:
    """Revisit dialogues left at the default scene with an LLM (structured output: one of the
    taxonomy's scenes). A failed or invalid reply keeps the default scene, marked ``llm_failed``."""
    from dialinsight_core.inference import LabelRequest
    from dialinsight_core.prompts import template_env

    dialogues = result.dialogues.to_pylist()
    todo = [d for d in dialogues if d["scene_source"] == "default"]
    stats = {"asked": len(todo), "changed": 0, "kept_default": 0, "failed": 0}
    if not todo:
        return IngestResult(result.turns, result.dialogues, result.quarantined,
                            {**result.stats, "llm_scene_classifier": stats}, result.index)
    scenes = list(settings.taxonomy.scenes)
    schema = {"type": "object", "properties": {"scene": {"type": "string", "enum": scenes}}, "required": ["scene"],
              "additionalProperties": False}
    tpl = template_env().get_template("scene_classifier.j2")
    text_by = turn_lines(result.turns)
    reqs = [LabelRequest(d["dialogue_id"], [{"role": "user", "content": tpl.render(
        lang="zh" if d["lang"] == "zh" else "en", dialogue="\n".join(text_by.get(d["dialogue_id"], []))[:4000],
        scenes=[(n, settings.taxonomy.scenes[n].description) for n in scenes])}], schema) for d in todo]
    answers = {}
    for req, res in zip(reqs, engine.generate(reqs), strict=True):
        try:
            scene = json.loads(res.output_text or "")["scene"] if not res.error_code else None
        except (json.JSONDecodeError, TypeError, KeyError):
            scene = None
        answers[req.prompt_id] = scene if scene in scenes else None
    new_scene: dict[str, str] = {}
    for d in dialogues:
        if d["dialogue_id"] not in answers:
            continue
        scene = answers[d["dialogue_id"]]
        if scene is None:
            d["scene_source"] = "llm_failed"
            stats["failed"] += 1
            continue
        d["scene_source"] = "llm"
        stats["changed" if scene != d["scene"] else "kept_default"] += 1
        d["scene"] = new_scene[d["dialogue_id"]] = scene
    turns = result.turns.to_pylist()
    for t in turns:
        t["scene"] = new_scene.get(t["dialogue_id"], t["scene"])
    st = {**result.stats, "llm_scene_classifier": stats,
          "scenes": dict(Counter(d["scene"] for d in dialogues)),
          "scene_sources": dict(Counter(d["scene_source"] for d in dialogues))}
    return IngestResult(schemas.table(schemas.TURNS, turns), schemas.table(schemas.DIALOGUES, dialogues),
                        result.quarantined, st, result.index)
