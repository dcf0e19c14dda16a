"""Instruction library: load, validate and expose the curated instructions.

The bundled library is a YAML file of human-reviewed seeds (docs/instructions.md); the
instructions DAG (a later issue) publishes evolved versions. Only ``approved`` rows are used to
build prompts, and the library version travels into every prompt's lineage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from dialinsight_core import schemas
from dialinsight_core.config import Settings
from dialinsight_core.errors import DataVerdict

REQUIRED = ("instruction_id", "task_family", "text")
ROLE_FOCI = {"agent", "customer", "both"}


class LibraryError(DataVerdict, ValueError):
    """The instruction library file is invalid; the message names the entry."""

    next_step = "fix the library entry named above (prompts.library_path)"


def load_output_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """JSON schemas per ``output_schema_id`` (one file each in ``prompts.output_schema_dir``)."""
    folder = settings.resolve_path(settings.prompts.output_schema_dir)
    out: dict[str, dict[str, Any]] = {}
    for family, fam in settings.task_families.items():
        path = folder / f"{fam.output_schema_id}.json"
        try:
            out[fam.output_schema_id] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LibraryError(f"task_families.{family}: cannot load output schema {path}: {exc}") from None
    return out


def load_library(settings: Settings, path: str | Path | None = None) -> pa.Table:
    """Load and validate the library file into the ``instructions`` table."""
    lib_path = Path(path) if path else settings.resolve_path(settings.prompts.library_path)
    try:
        doc = yaml.safe_load(lib_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LibraryError(f"cannot read instruction library {lib_path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("instructions"), list):
        raise LibraryError(f"{lib_path}: expected keys 'library_version' and 'instructions' (a list)")
    version = str(doc.get("library_version") or "")
    if not version:
        raise LibraryError(f"{lib_path}: library_version is required")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    scenes = settings.all_scenes() | {"*"}
    for i, entry in enumerate(doc["instructions"]):
        where = f"{lib_path.name}: instructions[{i}]"
        if not isinstance(entry, dict):
            raise LibraryError(f"{where} is not a mapping")
        missing = [k for k in REQUIRED if not entry.get(k)]
        if missing:
            raise LibraryError(f"{where} lacks {missing}")
        iid = str(entry["instruction_id"])
        if iid in seen:
            raise LibraryError(f"{where}: duplicate instruction_id {iid!r}")
        seen.add(iid)
        family = entry["task_family"]
        if family not in settings.task_families:
            raise LibraryError(f"{where}: task_family {family!r} not in {sorted(settings.task_families)}")
        scene = entry.get("scene", "*")
        if scene not in scenes:
            raise LibraryError(f"{where}: scene {scene!r} not in taxonomy {sorted(scenes)}")
        role = entry.get("role_focus", "both")
        if role not in ROLE_FOCI:
            raise LibraryError(f"{where}: role_focus {role!r} not in {sorted(ROLE_FOCI)}")
        rows.append({
            "instruction_id": iid,
            "task_family": family,
            "scene": scene,
            "role_focus": role,
            "lang": entry.get("lang", "*"),
            "text": str(entry["text"]).strip(),
            "output_schema_id": entry.get("output_schema_id") or settings.task_families[family].output_schema_id,
            "origin": entry.get("origin", "seed"),
            "parent_id": entry.get("parent_id"),
            "operator": entry.get("operator"),
            "round": int(entry.get("round", 0)),
            "status": entry.get("status", "approved"),
            "reviewer_note": entry.get("reviewer_note"),
            "library_version": version,
            "expected_fields": json.dumps(_expected_fields(entry.get("expected_fields"), where), ensure_ascii=False),
        })
    return schemas.table(schemas.INSTRUCTIONS, rows)


def _expected_fields(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LibraryError(f"{where}: expected_fields must be a list of non-empty strings ('alt1|alt2' or '$json_key')")
    return [v.strip() for v in value]
