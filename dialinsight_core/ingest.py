"""Ingest: source adapters -> canonical ``turns`` and ``dialogues`` tables + quarantine.

Every file read leaves this stage as exactly one kept dialogue or one quarantined record with a
reason (``files_read == kept + quarantined``); a malformed file never crashes the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings, SourceSettings
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


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up >= 30% of the letters, else 'en' (first depth)."""
    letters = _LETTER.findall(text)
    if not letters:
        return "und"
    return "zh" if len(_CJK.findall(text)) / len(letters) >= 0.3 else "en"


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


def classify_scene(text: str, hints: list[str], source: SourceSettings, settings: Settings) -> str:
    """Source-provided task names first (config ``scene_map``), then taxonomy keywords."""
    for hint in hints:
        if hint in source.scene_map:
            return source.scene_map[hint]
    lowered = text.lower()
    best, best_hits = settings.taxonomy.default_scene, 0
    for name, scene in settings.taxonomy.scenes.items():
        hits = sum(lowered.count(k.lower()) for k in scene.keywords)
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


Adapter = Callable[[bytes, str], RawDialogue]
ADAPTERS: dict[str, tuple[str, Adapter]] = {"star": ("dialogues/", parse_star)}


# --- stage ----------------------------------------------------------------------------------


def _source_store(source: SourceSettings, settings: Settings) -> ObjectStore:
    uri = source.uri if "://" in source.uri else f"file://{settings.resolve_path(source.uri)}"
    return open_store(uri, settings)


def _iter_source(source: SourceSettings, settings: Settings, limit: int) -> Iterator[tuple[str, bytes | None, str]]:
    store = _source_store(source, settings)
    prefix, _ = ADAPTERS[source.adapter]
    keys = [k for k in store.list(prefix) if k.endswith(".json")]
    for key in keys[:limit] if limit else keys:
        try:
            yield key, store.read_bytes(key), ""
        except OSError as exc:
            yield key, None, str(exc)


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


def ingest(settings: Settings, max_dialogues: int = 0, sources: list[str] | None = None) -> IngestResult:
    """Read every configured source (or the named ones) into canonical tables."""
    wanted = settings.sources if not sources else [s for s in settings.sources if s.name in sources]
    if sources and len(wanted) != len(set(sources)):
        known = [s.name for s in settings.sources]
        raise ValueError(f"unknown source(s) {sorted(set(sources) - set(known))}; configured: {known}")
    limit = max_dialogues or settings.ingest.max_dialogues
    turn_rows: list[dict[str, Any]] = []
    dlg_rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    seen_hashes: dict[str, str] = {}
    files_read = 0
    for source in wanted:
        _, parse = ADAPTERS[source.adapter]
        for key, data, read_error in _iter_source(source, settings, limit):
            files_read += 1
            record_id = f"{source.name}:{key}"
            try:
                if data is None:
                    raise InvalidDialogue("unreadable_file", read_error)
                raw = parse(data, key)
                turns = validate(raw, settings)
            except InvalidDialogue as exc:
                snippet = data[:2000].decode("utf-8", "replace") if data else None
                quarantine.append(
                    schemas.quarantine_row(record_id, {"source": source.name, "file": key, "head": snippet},
                                           STAGE, exc.code, exc.detail)
                )
                continue
            dialogue_id = f"{source.name}:{raw.dialogue_id}"
            full_text = "\n".join(t for _, t, _ in turns)
            content_hash = hashlib.sha256(
                "\n".join(f"{r}\t{t.lower()}" for r, t, _ in turns).encode()
            ).hexdigest()
            if content_hash in seen_hashes:
                quarantine.append(
                    schemas.quarantine_row(record_id, {"source": source.name, "file": key, "dialogue_id": dialogue_id},
                                           STAGE, "duplicate", f"same content as {seen_hashes[content_hash]}")
                )
                continue
            seen_hashes[content_hash] = dialogue_id
            lang = detect_lang(full_text)
            scene = classify_scene(full_text, raw.scene_hints, source, settings)
            for idx, (role, text, meta) in enumerate(turns):
                turn_rows.append({
                    "dialogue_id": dialogue_id, "source": source.name, "turn_idx": idx, "role": role,
                    "text": text, "lang": lang, "scene": scene, "meta": json.dumps(meta),
                })
            dlg_rows.append({
                "dialogue_id": dialogue_id, "source": source.name, "scene": scene, "n_turns": len(turns),
                "lang": lang, "pii_counts": "{}", "content_hash": content_hash, "source_file": key,
            })
    stats = {
        "files_read": files_read,
        "dialogues_kept": len(dlg_rows),
        "turns_kept": len(turn_rows),
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(Counter(q["reason_code"] for q in quarantine)),
        "scenes": dict(Counter(d["scene"] for d in dlg_rows)),
        "langs": dict(Counter(d["lang"] for d in dlg_rows)),
    }
    if files_read != len(dlg_rows) + len(quarantine):  # conservation, checked at every stage
        raise AssertionError(f"ingest lost records: read {files_read}, kept {len(dlg_rows)}, quarantined {len(quarantine)}")
    return IngestResult(
        turns=schemas.table(schemas.TURNS, turn_rows),
        dialogues=schemas.table(schemas.DIALOGUES, dlg_rows),
        quarantined=schemas.table(schemas.QUARANTINED, quarantine),
        stats=stats,
    )
