from __future__ import annotations

import pytest

from dialinsight_core import schemas
from dialinsight_core.instructions import LibraryError, load_library, load_output_schemas


def test_bundled_library_covers_every_family_and_language(settings):
    lib = load_library(settings).to_pylist()
    assert {r["task_family"] for r in lib} == set(settings.task_families)
    assert {r["lang"] for r in lib} == {"en", "zh"}
    assert all(r["status"] == "approved" and r["origin"] == "seed" and r["library_version"] == "v1" for r in lib)
    out = load_output_schemas(settings)
    assert all(out[r["output_schema_id"]]["type"] == "object" for r in lib)


@pytest.mark.parametrize(("entry", "message"), [
    ("{instruction_id: a, task_family: poetry, text: x}", "task_family 'poetry'"),
    ("{instruction_id: a, task_family: summarisation, scene: moon, text: x}", "scene 'moon'"),
    ("{instruction_id: a, task_family: summarisation, role_focus: robot, text: x}", "role_focus 'robot'"),
    ("{instruction_id: a, task_family: summarisation}", "lacks ['text']"),
])
def test_invalid_entries_are_named(settings, tmp_path, entry, message):
    path = tmp_path / "lib.yaml"
    path.write_text(f"library_version: v9\ninstructions:\n  - {entry}\n")
    with pytest.raises(LibraryError, match=message.replace("[", r"\[").replace("]", r"\]")) as exc:
        load_library(settings, path)
    assert "instructions[0]" in str(exc.value)


def test_duplicate_ids_rejected(settings, tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text("library_version: v9\ninstructions:\n"
                    "  - {instruction_id: a, task_family: summarisation, text: x}\n"
                    "  - {instruction_id: a, task_family: summarisation, text: y}\n")
    with pytest.raises(LibraryError, match="duplicate instruction_id"):
        load_library(settings, path)


def test_table_builder_names_missing_columns():
    with pytest.raises(KeyError, match="lacks columns"):
        schemas.table(schemas.TURNS, [{"dialogue_id": "d"}])
