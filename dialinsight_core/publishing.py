"""Publishing: the immutable, versioned snapshot and the ``latest`` pointer.

A snapshot is ``snapshots/ds=<ds>/run=<run>/`` with ``data/``, ``rejected/`` and ``quarantined/``
Parquet, the dialogue index later runs deduplicate against, the GX evidence and a manifest. The
manifest is the commit marker: written last and write-once, so a reader never sees a snapshot
without it, and ``latest.json`` moves only after it (gates have passed to get here). A publish
that died before its manifest is redone; one that finished is recognised and not redone.
docs/architecture.md, "Object-store layout".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.contracts import Baseline, PublishOut
from dialinsight_core.storage import LATEST_KEY, ObjectStore

STAGE = "publish"


@dataclass
class Snapshot:
    """Everything one snapshot is made of; ``publish`` writes it."""

    prefix: str  # RunPaths.snapshot
    snapshot_id: str
    ds: str
    run_id: str
    params: dict[str, Any]
    lineage: dict[str, str]  # added as columns to every published row and to the manifest
    accepted: pa.Table  # SCORED rows
    rejected: pa.Table
    quarantined: pa.Table
    index: pa.Table  # DIALOGUE_INDEX rows of the dialogues this run kept
    ingest_stats: dict[str, Any]
    gx_prefix: str  # where the gate wrote this attempt's evidence; copied under gx/
    counts: dict[str, Any]  # the manifest's counts (records in, accepted, rejected, quarantined by stage)
    manifest: dict[str, Any] = field(default_factory=dict)  # further manifest sections (stages, engine, gx, ...)


def read_latest(store: ObjectStore) -> Baseline | None:
    """The previous published snapshot, from ``latest.json`` and its manifest (None before the first)."""
    if not store.exists(LATEST_KEY):
        return None
    latest = store.read_json(LATEST_KEY)
    manifest = store.read_json(latest["manifest"])
    return Baseline(latest["snapshot_id"], int(manifest["counts"]["accepted"]),
                          int(manifest["counts"].get("dialogues_read") or 0), manifest.get("params") or {})


def published_index(store: ObjectStore, exclude_ds: str) -> pa.Table:
    """Dialogue index of every committed snapshot of an *earlier or later* logical date.

    Snapshots of ``exclude_ds`` (the run's own date) are left out, so a rerun of the same date
    rebuilds the same result (idempotency) instead of finding its own dialogues as duplicates.
    """
    own = f"snapshots/ds={exclude_ds}/"
    tables = []
    for key in store.list("snapshots/"):
        if key.endswith("/dialogues/index.parquet") and not key.startswith(own):
            snap = key.removesuffix("/dialogues/index.parquet")
            if store.exists(f"{snap}/manifest.json"):  # committed snapshots only
                tables.append(store.read_table(key, schemas.DIALOGUE_INDEX))
    return pa.concat_tables(tables) if tables else schemas.table(schemas.DIALOGUE_INDEX, [])


def ids_digest(accepted: pa.Table) -> str:
    """The snapshot's identity by content: a hash of its sorted record ids."""
    ids = sorted(accepted.column("prompt_id").to_pylist())
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def publish(store: ObjectStore, snap: Snapshot) -> PublishOut:
    """Write the immutable snapshot, then move ``latest.json``."""
    accepted = snap.accepted
    n = accepted.num_rows
    for name, value in snap.lineage.items():
        accepted = accepted.append_column(name, pa.array([value] * n, type=pa.string()))
    accepted = accepted.sort_by("prompt_id")
    manifest_key = f"{snap.prefix}/manifest.json"
    if store.exists(manifest_key):  # the manifest is the commit marker of a snapshot
        existing = store.read_json(manifest_key)
        if existing.get("record_ids_sha256") == ids_digest(accepted):
            return {"snapshot_uri": existing["uri"], "counts": existing["counts"], "already_published": True}
        raise FileExistsError(f"snapshot {store.url(snap.prefix)} is already published with other records (immutable)")
    # data files may exist from a publish that died before its manifest: rewrite them
    store.write_table(f"{snap.prefix}/data/part-00000.parquet", accepted.cast(schemas.PUBLISHED))
    store.write_table(f"{snap.prefix}/rejected/part-00000.parquet", snap.rejected.sort_by("prompt_id"))
    store.write_table(f"{snap.prefix}/quarantined/part-00000.parquet", snap.quarantined.sort_by("record_id"))
    index = snap.index  # what later runs dedup against
    index = index.set_column(index.schema.get_field_index("snapshot_id"), "snapshot_id",
                             pa.array([snap.snapshot_id] * index.num_rows, type=pa.string()))
    store.write_table(f"{snap.prefix}/dialogues/index.parquet", index)
    store.write_json(f"{snap.prefix}/ingest_stats.json", snap.ingest_stats)
    for key in store.list(snap.gx_prefix + "/"):
        store.write_bytes(f"{snap.prefix}/gx/{key[len(snap.gx_prefix) + 1:]}", store.read_bytes(key))
    counts = snap.counts
    manifest = {
        **snap.lineage,
        "record_ids_sha256": ids_digest(accepted),
        "ds": snap.ds,
        "run_id": snap.run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "uri": store.url(snap.prefix),
        "params": snap.params,
        "counts": counts,
        **snap.manifest,
        "library_version": sorted(set(accepted.column("library_version").to_pylist())) if n else [],
        "files": {"data": ["data/part-00000.parquet"], "rejected": ["rejected/part-00000.parquet"],
                  "quarantined": ["quarantined/part-00000.parquet"], "dialogue_index": "dialogues/index.parquet",
                  "ingest_stats": "ingest_stats.json"},
    }
    store.write_json(manifest_key, manifest, overwrite=False)
    previous = store.read_json(LATEST_KEY) if store.exists(LATEST_KEY) else None
    store.write_json(LATEST_KEY, {"snapshot_id": snap.snapshot_id, "uri": store.url(snap.prefix),
                                  "manifest": manifest_key, "ds": snap.ds,
                                  "previous": previous.get("snapshot_id") if previous else None})
    return {"snapshot_uri": store.url(snap.prefix), "counts": counts}
