"""Versioned instruction library in the object store: pending -> (human review) -> approved.

``library/v=<version>/instructions.parquet`` holds every row of a version (approved, proposed and
rejected ones, each with its reason), ``manifest.json`` its status, counts, yield and diversity,
and ``review.md`` a readable export for the reviewer. ``library/approved.json`` points at the
latest approved version; only approval moves it, so a rejected version publishes nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings
from dialinsight_core.errors import DataVerdict
from dialinsight_core.instructions.evolution import yield_report
from dialinsight_core.storage import ObjectStore

REVIEW_STATUSES = ("approved", "rejected")


class LibraryVersionError(DataVerdict, ValueError):
    """A library version that does not exist, or is not in a state that allows the action."""

    next_step = "pick an existing library version in the state the action needs (docs/instructions.md)"


def _prefix(settings: Settings) -> str:
    return settings.instructions.library_prefix.strip("/")


def version_key(settings: Settings, version: str, name: str) -> str:
    return f"{_prefix(settings)}/v={version}/{name}"


def approved_pointer(settings: Settings) -> str:
    return f"{_prefix(settings)}/approved.json"


def last_review_pointer(settings: Settings) -> str:
    """The most recently reviewed version, approved or rejected (its note guides the next round)."""
    return f"{_prefix(settings)}/last_review.json"


def write_pending(store: ObjectStore, settings: Settings, rows: list[dict[str, Any]], version: str,
                  parent_version: str | None, report: dict[str, Any],
                  candidate_ids: list[str] | None = None) -> dict[str, Any]:
    """Write a new version for review. Rows are INSTRUCTIONS rows (plus reason columns)."""
    if store.exists(version_key(settings, version, "manifest.json")):
        manifest = store.read_json(version_key(settings, version, "manifest.json"))
        if manifest["status"] != "pending":
            raise LibraryVersionError(f"library version {version} is already {manifest['status']} (immutable)")
    table = schemas.table(LIBRARY_ROWS, [{**{c: None for c in LIBRARY_ROWS.names}, **r, "library_version": version}
                                         for r in rows])
    store.write_table(version_key(settings, version, "instructions.parquet"), table)
    store.write_bytes(version_key(settings, version, "review.md"), review_markdown(table.to_pylist(), version).encode())
    manifest = {"version": version, "parent_version": parent_version, "status": "pending",
                "created_at": datetime.now(UTC).isoformat(), "counts": dict(Counter(table.column("status").to_pylist())),
                **report, "candidate_ids": candidate_ids or []}
    store.write_json(version_key(settings, version, "manifest.json"), manifest)
    return manifest


def review_markdown(rows: list[dict[str, Any]], version: str) -> str:
    lines = [f"# Instruction library {version}: pending review", "",
             "Approve, reject or edit each proposed instruction; notes guide the next evolution round.", ""]
    for status in ("proposed", "approved", "rejected"):
        group = [r for r in rows if r["status"] == status]
        if not group:
            continue
        lines += [f"## {status} ({len(group)})", "", "| id | family | scene | role | origin/operator | text | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in group:
            note = r.get("reason_code") or r.get("reviewer_note") or ""
            text = str(r["text"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['instruction_id']} | {r['task_family']} | {r['scene']} | {r['role_focus']} | "
                         f"{r['origin']}/{r.get('operator') or '-'} | {text} | {note} |")
        lines.append("")
    return "\n".join(lines)


def review(store: ObjectStore, settings: Settings, version: str, decision: str, reviewer: str,
           edits: dict[str, dict[str, Any]] | None = None, note: str = "") -> dict[str, Any]:
    """Apply a reviewer's decision to a pending version.

    ``decision='approved'``: each ``edits[id]`` may set ``status`` (approved/rejected), ``text``
    and ``reviewer_note``; proposed rows without an edit become approved. The version is published
    (``approved.json`` moves). ``decision='rejected'``: the version is marked rejected and nothing
    is published.
    """
    if decision not in REVIEW_STATUSES:
        raise LibraryVersionError(f"decision must be one of {REVIEW_STATUSES}, got {decision!r}")
    mkey = version_key(settings, version, "manifest.json")
    if not store.exists(mkey):
        raise LibraryVersionError(f"no library version {version}")
    manifest = store.read_json(mkey)
    if manifest["status"] != "pending":
        raise LibraryVersionError(f"library version {version} is {manifest['status']}, not pending")
    rows = store.read_table(version_key(settings, version, "instructions.parquet"), LIBRARY_ROWS).to_pylist()
    edits = edits or {}
    unknown = sorted(set(edits) - {r["instruction_id"] for r in rows})
    if unknown:
        raise LibraryVersionError(f"edits name unknown instructions {unknown}")
    if decision == "approved":
        for r in rows:
            e = edits.get(r["instruction_id"], {})
            if r["status"] == "proposed":
                r["status"] = e.get("status", "approved")
            if "text" in e:
                r["text"] = str(e["text"]).strip()
                r["reviewer_note"] = (e.get("reviewer_note") or "edited by reviewer").strip()
            elif "reviewer_note" in e:
                r["reviewer_note"] = e["reviewer_note"]
        store.write_table(version_key(settings, version, "instructions.parquet"), schemas.table(LIBRARY_ROWS, rows))
    manifest.update(status=decision, reviewed_by=reviewer, reviewed_at=datetime.now(UTC).isoformat(), review_note=note,
                    counts=dict(Counter(r["status"] for r in rows)))
    if manifest.get("candidate_ids"):  # this version's candidates only, now with the reviewer's verdicts
        ids = set(manifest["candidate_ids"])
        manifest["yield"] = yield_report([r for r in rows if r["instruction_id"] in ids])
    store.write_json(mkey, manifest)
    store.write_json(last_review_pointer(settings), {"version": version, "status": decision, "manifest": mkey})
    if decision == "approved":
        store.write_json(approved_pointer(settings), {"version": version, "manifest": mkey,
                                                      "instructions": version_key(settings, version, "instructions.parquet")})
    return manifest


def load_approved(store: ObjectStore, settings: Settings) -> pa.Table | None:
    """The approved rows of the latest approved version (INSTRUCTIONS schema), or None if none yet."""
    if not store.exists(approved_pointer(settings)):
        return None
    ptr = store.read_json(approved_pointer(settings))
    rows = store.read_table(ptr["instructions"], LIBRARY_ROWS)
    return schemas.conform(rows.filter(pa.compute.equal(rows.column("status"), "approved")), schemas.INSTRUCTIONS)


# the library table: instructions + why a row was eliminated (kept, never deleted)
LIBRARY_ROWS = pa.schema([*list(schemas.INSTRUCTIONS), pa.field("reason_code", pa.string()),
                          pa.field("reason_detail", pa.string())])
