"""Source adapters: bytes in a source's object store -> ``RawDialogue`` records, or the reason a
record cannot be one (``InvalidDialogue``). One adapter per source format (STAR, JSONL, CSV,
Parquet); role and field names are mapped from the source's config (docs/ingest.md).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dialinsight_core.config import Settings, SourceSettings
from dialinsight_core.errors import DataVerdict
from dialinsight_core.storage import ObjectStore, open_store


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


class SourceError(DataVerdict, ValueError):
    """A source gives nothing to read (missing, empty, of another format): a configuration error,
    raised at once with what was found and what to set, instead of an empty run."""

    next_step = "check the source's uri, adapter and files (sources in config/dialinsight.yaml); the error names what was found"


def _load_json(data: bytes, source: SourceSettings) -> Any:
    """Decoded in the source's encoding and parsed, or the reason it cannot be."""
    try:
        return json.loads(_decode(data, source.encoding))
    except json.JSONDecodeError as exc:
        raise InvalidDialogue("unreadable_json", f"invalid JSON: {exc}") from None


def parse_jsonl_line(line: bytes, source: SourceSettings, where: str) -> RawDialogue:
    """One dialogue per JSON line: ``{id, turns: [{role, text}, ...], scene?}`` (field names from config)."""
    return parse_dialogue_obj(_load_json(line, source), source, where)


def json_export_items(data: bytes, source: SourceSettings) -> list[tuple[str, Any]]:
    """The dialogues of a ``.json`` export: an array of dialogue objects, one dialogue object, an
    object holding one list of them (``{"dialogues": [...]}``), or an object of id -> dialogue."""
    doc = _load_json(data, source)
    turns_key = _field(source, "turns", "turns")
    if isinstance(doc, list):
        return [(f"#{i}", x) for i, x in enumerate(doc)]
    if isinstance(doc, dict) and turns_key in doc:
        return [("", doc)]
    if isinstance(doc, dict):
        lists = [(k, v) for k, v in doc.items() if isinstance(v, list)]
        if len(lists) == 1:
            return [(f"#{lists[0][0]}[{i}]", x) for i, x in enumerate(lists[0][1])]
        if doc and all(isinstance(v, dict) for v in doc.values()):
            id_key = _field(source, "dialogue_id", "id")
            return [(f"#{k}", {id_key: k, **v} if id_key not in v else v) for k, v in doc.items()]
    raise InvalidDialogue("malformed_structure", f"a .json export must hold an array or an object of dialogues "
                          f"(each with a {turns_key!r} list); got {type(doc).__name__}")


def parse_dialogue_obj(doc: Any, source: SourceSettings, where: str) -> RawDialogue:
    """One dialogue object ``{id, turns: [{role, text}, ...], scene?}`` (field names from config)."""
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


@dataclass(frozen=True)
class BadRow:
    """A CSV line the parser could not split into the header's columns (quarantined on its own)."""

    line: int | None
    text: str
    expected: int
    actual: int


def _read_table(data: bytes, source: SourceSettings) -> tuple[pa.Table, list[BadRow]]:
    """The file as a table, and the CSV lines skipped because their column count is wrong: one bad
    row costs that row, not the file."""
    bad: list[BadRow] = []

    def skip(row: Any) -> str:
        bad.append(BadRow(row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        if source.adapter == "parquet":
            return pq.read_table(io.BytesIO(data)), bad
        text = _decode(data, source.encoding)  # a clear bad_encoding instead of a parser error
        strings = {_field(source, "text", "text"): pa.string(), _field(source, "role", "role"): pa.string()}
        return pacsv.read_csv(io.BytesIO(text.encode("utf-8")), read_options=pacsv.ReadOptions(use_threads=False),
                              parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
                              convert_options=pacsv.ConvertOptions(column_types=strings, strings_can_be_null=False)), bad
    except InvalidDialogue:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise InvalidDialogue("unreadable_file", f"cannot read {source.adapter}: {str(exc)[:300]}") from None


ADAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {  # adapter -> (folder prefix, file suffixes)
    "star": ("dialogues/", (".json",)),
    "jsonl": ("", (".jsonl", ".ndjson", ".json")),  # .json: an array (or an object) of dialogues
    "csv": ("", (".csv",)),
    "parquet": ("", (".parquet",)),
}


def source_store(source: SourceSettings, settings: Settings) -> ObjectStore:
    uri = source.uri if "://" in source.uri else f"file://{settings.resolve_path(source.uri)}"
    return open_store(uri, settings)


def read_source(source: SourceSettings, settings: Settings) -> Iterator[tuple[str, RawDialogue | InvalidDialogue, bytes | None]]:
    """Every dialogue record of a source, or the reason it cannot be one (one entry per record).

    A source with no file of its adapter's format raises ``SourceError`` (unless ``optional``); an
    empty file is one quarantined record (``empty_file``), never nothing."""
    store = source_store(source, settings)
    prefix, suffixes = ADAPTERS[source.adapter]
    listed = store.list(prefix)
    keys = [k for k in listed if k.endswith(suffixes)]
    if not keys and not source.optional:
        raise SourceError(_nothing_to_read(source, store.url(prefix), listed, suffixes))
    for key in keys:
        try:
            data = store.read_bytes(key)
        except OSError as exc:
            yield key, InvalidDialogue("unreadable_file", str(exc)), None
            continue
        if not data.strip():
            yield key, InvalidDialogue("empty_file", f"{len(data)} bytes, no content"), None
            continue
        if source.adapter == "star":
            try:
                yield key, _star_with_roles(data, key, source), data
            except InvalidDialogue as exc:
                yield key, exc, data
        elif source.adapter == "jsonl" and key.endswith(".json"):
            try:
                items = json_export_items(data, source)
            except InvalidDialogue as exc:
                yield key, exc, data
                continue
            if not items:
                yield key, InvalidDialogue("empty_file", "the export holds no dialogue"), data
            for suffix, item in items:
                raw = json.dumps(item, ensure_ascii=False, default=str).encode()
                try:
                    yield f"{key}{suffix}", parse_dialogue_obj(item, source, key), raw
                except InvalidDialogue as exc:
                    yield f"{key}{suffix}", exc, raw
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
                tbl, bad_rows = _read_table(data, source)
            except InvalidDialogue as exc:
                yield key, exc, data
                continue
            for row in bad_rows:
                yield (f"{key}#L{row.line}" if row.line else f"{key}#row?"), InvalidDialogue(
                    "bad_csv_row", f"line {row.line}: {row.actual} column(s) where the header has {row.expected}"
                ), row.text.encode()
            if tbl.num_rows == 0 and not bad_rows:
                yield key, InvalidDialogue("empty_file", f"no rows (columns {tbl.column_names})"), None
                continue
            for rid, rec in parse_turn_table(tbl, source, key):
                yield rid, rec, None


def _nothing_to_read(source: SourceSettings, where: str, listed: list[str], suffixes: tuple[str, ...]) -> str:
    others = Counter(("." + k.rsplit(".", 1)[-1]) if "." in k.rsplit("/", 1)[-1] else "(no suffix)" for k in listed)
    found = (f"it holds {len(listed)} other file(s): "
             + ", ".join(f"{n} {ext}" for ext, n in others.most_common(5))) if listed else "nothing is there"
    hint = {".json": "`adapter: jsonl` reads .json exports (an array or an object of dialogues)",
            ".csv": "`adapter: csv`", ".parquet": "`adapter: parquet`", ".jsonl": "`adapter: jsonl`"}
    tips = [hint[ext] for ext in others if ext in hint and ext not in suffixes]
    return (f"source {source.name!r} (adapter {source.adapter}) has no {'/'.join(suffixes)} file under {where}: {found}. "
            + (f"Try {'; '.join(tips)}. " if tips else "")
            + "Check `uri:` (and `adapter:`, `encoding:`, `fields:`, `roles:`), or set `optional: true` "
              "for a source that may be empty.")


def _star_with_roles(data: bytes, key: str, source: SourceSettings) -> RawDialogue:
    raw = parse_star(data, key)
    if source.roles:  # STAR roles are already canonical; a mapping may still rename them
        raw.turns = [(source.roles.get(r, r), t, m) for r, t, m in raw.turns]
    return raw
