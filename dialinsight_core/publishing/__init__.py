"""Publishing: the immutable, versioned snapshot and the ``latest`` pointer.

A snapshot is ``snapshots/ds=<ds>/run=<run>/`` with ``data/`` (complete training examples:
``examples``), ``rejected/`` and ``quarantined/`` Parquet, ``exports/`` in fine-tuning formats
(``exports``), a dataset card ``README.md`` that ``datasets.load_dataset`` reads (``card``), the
dialogue index later runs deduplicate against, the GX evidence and a manifest.

The commit protocol (docs/reliability.md): every data file is written first, the manifest last
with a create-only write; a snapshot exists for readers only once its manifest does (readers go
through the manifest or ``latest.json``, never a listing). ``latest.json`` then moves by
compare-and-swap, only forward in (logical date, commit time), and only for a run without
override params, unless the run is promoted. A publish that died before its manifest is redone;
one that committed is recognised, not redone, and still moves ``latest.json`` if it died before
that. docs/dataset.md, docs/architecture.md ("Object-store layout").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core import dedup_index, schemas
from dialinsight_core.config import CardSettings, ExportSettings, RetentionSettings
from dialinsight_core.contracts import Baseline, ExportManifest, LatestMove, PublishOut
from dialinsight_core.dedup_index import PublishedDialogues
from dialinsight_core.memory import trim_heap
from dialinsight_core.publishing.card import LANG_NAMES, front_matter, render_card
from dialinsight_core.publishing.exports import Example, ExportWriter
from dialinsight_core.publishing.report import Previous, ReportTally, build_report, reject_reasons
from dialinsight_core.storage import LATEST_KEY, ObjectExistsError, ObjectStore, parquet_batches

STAGE = "publish"


# a table given part by part, each call a fresh pass: publish streams every part to its file and keeps
# only the report's tallies (and the accepted rows' ids), so its memory follows the part size, not the rows
Parts = Callable[[], Iterable[pa.Table]]


@dataclass
class Snapshot:
    """Everything one snapshot is made of; ``publish`` writes it."""

    prefix: str  # RunPaths.snapshot
    snapshot_id: str
    ds: str
    run_id: str
    params: dict[str, Any]
    lineage: dict[str, str]  # also columns of every published row
    accepted: Parts  # PUBLISHED rows (examples.complete), part by part
    rejected: Parts  # PUBLISHED_REJECTED rows
    record_ids_sha256: str  # ids_digest of the rows ``accepted`` yields: a committed snapshot is recognised by it
    quarantined: Callable[[], pa.Table]  # QUARANTINED rows, read when written (after the passes)
    index: Parts  # DIALOGUE_INDEX rows of the dialogues this run kept
    ingest_stats: dict[str, Any]
    gx_prefix: str  # where the gate wrote this attempt's evidence; copied under gx/
    counts: dict[str, Any]  # the manifest's counts (records in, accepted, rejected, quarantined by stage)
    exports: ExportSettings
    mixin: list[Example]  # general instruction rows available to the exports' mix-in
    seed: int
    card: dict[str, Any]  # the card's context besides counts (models, sources, thresholds, limitations)
    card_settings: CardSettings
    report: dict[str, Any]  # the report's inputs besides the tables: families, prompt_mix, score_stats, label_stats
    manifest: dict[str, Any] = field(default_factory=dict)  # further manifest sections (stages, engine, gx, ...)
    overrides: list[str] = field(default_factory=list)  # override params set (contracts.run_overrides)
    promote: bool = False  # move latest.json even for an override run or an older date
    retention: RetentionSettings | None = None
    dedup_buckets: int = 16  # ingest.dedup_index_buckets: the persistent dedup index's layout
    release: Callable[[], None] | None = None  # frees what ``accepted`` and ``rejected`` held, once both are written


def _latest(store: ObjectStore) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``latest.json`` and the manifest it points at (None before the first snapshot)."""
    latest, _ = store.read_pointer(LATEST_KEY)
    if latest is None:
        return None
    return latest, store.read_json(latest["manifest"])


def _order(entry: dict[str, Any]) -> tuple[str, str]:
    return str(entry.get("ds") or ""), str(entry.get("created_at") or "")


def move_latest(store: ObjectStore, entry: dict[str, Any], overrides: list[str], promote: bool,
                attempts: int = 50) -> LatestMove:
    """Point ``latest.json`` at a committed snapshot by compare-and-swap: only forward in (logical
    date, commit time), never for an override run, unless ``promote``. A concurrent mover makes the
    swap fail; the decision is then taken again on what it wrote."""
    for _ in range(attempts):
        cur, version = store.read_pointer(LATEST_KEY)
        cur_id = cur["snapshot_id"] if cur else None
        if cur_id == entry["snapshot_id"]:
            return {"moved": True, "why": "latest.json already points at this snapshot", "latest": cur_id}
        if overrides and not promote:
            return {"moved": False, "latest": cur_id,
                    "why": f"override run ({', '.join(overrides)}): published beside latest.json, which still "
                           f"points at {cur_id}; trigger with promote=true to make it latest"}
        if cur and _order(cur) > _order(entry) and not promote:
            return {"moved": False, "latest": cur_id,
                    "why": f"latest.json points at a newer snapshot ({cur_id}, ds {cur.get('ds')}); it moves only "
                           "forward unless the run is promoted (promote=true)"}
        if store.swap_pointer(LATEST_KEY, {**entry, "previous": cur_id}, version):
            return {"moved": True, "why": "promoted" if promote else "newest complete snapshot",
                    "latest": entry["snapshot_id"]}
    raise RuntimeError(f"latest.json kept changing under {attempts} compare-and-swap attempts")


def committed_snapshots(store: ObjectStore) -> list[dict[str, Any]]:
    """Every committed snapshot (one with a manifest), oldest first by (ds, commit time)."""
    out = []
    for key in store.list("snapshots/"):
        if key.endswith("/manifest.json"):
            m = store.read_json(key)
            out.append({"prefix": key.removesuffix("/manifest.json"), "snapshot_id": m.get("snapshot_id"),
                        "ds": m.get("ds"), "created_at": m.get("created_at")})
    return sorted(out, key=_order)


def apply_retention(store: ObjectStore, retention: RetentionSettings | None, now: datetime | None = None) -> dict[str, Any]:
    """Delete committed snapshots no rule keeps (never the one ``latest.json`` points at): the
    manifest first, so a reader stops seeing the snapshot before any of its files go."""
    if retention is None or (retention.keep_last is None and retention.max_age_days is None):
        return {"rule": "off", "deleted": []}
    now = now or datetime.now(UTC)
    latest, _ = store.read_pointer(LATEST_KEY)
    snaps = list(reversed(committed_snapshots(store)))  # newest first
    deleted = []
    for rank, snap in enumerate(snaps):
        age_days = (now - datetime.fromisoformat(snap["created_at"])).total_seconds() / 86400
        keep = (latest is not None and snap["snapshot_id"] == latest["snapshot_id"]) \
            or (retention.keep_last is not None and rank < retention.keep_last) \
            or (retention.max_age_days is not None and age_days <= retention.max_age_days)
        if keep:
            continue
        store.delete(f"{snap['prefix']}/manifest.json")
        for key in store.list(snap["prefix"] + "/"):
            store.delete(key)
        deleted.append(snap["snapshot_id"])
    orphans = _delete_orphans(store, {s["prefix"] for s in snaps}, now.timestamp() - retention.orphans_after_hours * 3600)
    return {"rule": retention.model_dump(), "kept": len(snaps) - len(deleted), "deleted": deleted, "orphans": orphans}


def _delete_orphans(store: ObjectStore, committed: set[str], before: float) -> list[str]:
    """Snapshot folders without a manifest whose newest file was written before ``before``: a
    publish that died and was never redone (a publish in progress writes files all along)."""
    folders: dict[str, list[str]] = {}
    for key in store.list("snapshots/"):
        parts = key.split("/")
        if len(parts) > 3 and parts[1].startswith("ds=") and parts[2].startswith("run="):
            folders.setdefault("/".join(parts[:3]), []).append(key)
    removed = []
    for prefix, keys in sorted(folders.items()):
        if prefix in committed or f"{prefix}/manifest.json" in keys:
            continue
        if max(store.modified(k) for k in keys) < before:
            for key in keys:
                store.delete(key)
            removed.append(prefix)
    return removed


def read_latest(store: ObjectStore) -> Baseline | None:
    """The previous published snapshot, from ``latest.json`` and its manifest (None before the first)."""
    found = _latest(store)
    if found is None:
        return None
    latest, manifest = found
    return Baseline(latest["snapshot_id"], int(manifest["counts"]["accepted"]),
                    int(manifest["counts"].get("dialogues_read") or 0), manifest.get("params") or {})


def published_dialogues(store: ObjectStore, exclude_ds: str, threshold: float, buckets: int = 16) -> PublishedDialogues:
    """The persistent dedup index, asked about committed snapshots of every *other* logical date
    (a rerun of the same date rebuilds the same result instead of finding its own dialogues).
    Committed snapshots not indexed yet are indexed first (``dedup_index.sync``)."""
    committed = committed_snapshots(store)
    dedup_index.sync(store, [(s["snapshot_id"], s["prefix"]) for s in committed], buckets)
    allowed = {s["snapshot_id"] for s in committed if s["ds"] != exclude_ds}
    return PublishedDialogues(dedup_index.DedupIndex(store, threshold, buckets=buckets), allowed)


def ids_digest(accepted: pa.Table) -> str:
    """The snapshot's identity by content: a hash of its sorted record ids joined by newlines.
    Sorted in Arrow (UTF-8 byte order is code point order, as Python sorts) and hashed 65,536 ids
    at a time: a run's ids never become one Python list or string."""
    ids = accepted.column("prompt_id")
    ids = ids.take(pc.sort_indices(ids))
    h = hashlib.sha256()
    for start in range(0, len(ids), 65_536):
        chunk = "\n".join(ids.slice(start, 65_536).to_pylist())
        h.update((("\n" if start else "") + chunk).encode())
    return h.hexdigest()


def _write_parts(store: ObjectStore, key: str, parts: Iterable[pa.Table], schema: pa.Schema,
                 each: Callable[[pa.Table], None] | None = None, keep_ids: bool = False) -> ReportTally:
    """Every part to ``key`` as row groups; returns what the report and the card read of them."""
    tally = ReportTally(keep_ids)
    with store.table_writer(key, schema) as writer:
        for part in parts:
            part = part.cast(schema)
            writer.write_table(part)
            if each is not None:
                each(part)
            tally.add(part)
            trim_heap()  # a part's garbage back to the system, not kept by malloc (docs/benchmarks.md)
    return tally


def publish(store: ObjectStore, snap: Snapshot) -> PublishOut:
    """Write the immutable snapshot, then move ``latest.json``. Rows are streamed part by part in the
    gate's order (a snapshot's identity is the digest of its sorted ids, not its row order)."""
    manifest_key = f"{snap.prefix}/manifest.json"
    if store.exists(manifest_key):  # the manifest is the commit marker of a snapshot
        return _committed(store, snap, manifest_key, snap.record_ids_sha256)
    # data files may exist from a publish that died before its manifest: rewrite them
    library: set[str] = set()
    with ExportWriter(store, snap.prefix, snap.exports, snap.mixin, snap.seed) as exports:
        def each(part: pa.Table) -> None:
            exports.add(part)
            library.update(v for v in part.column("library_version").to_pylist() if v)

        accepted = _write_parts(store, f"{snap.prefix}/data/part-00000.parquet", snap.accepted(), schemas.PUBLISHED, each,
                                keep_ids=True)
        exported = exports.close()
    digest = ids_digest(accepted.ids)
    if digest != snap.record_ids_sha256:
        raise AssertionError(f"publish wrote {accepted.rows} rows whose ids differ from the gate's accepted records")
    rejected = _write_parts(store, f"{snap.prefix}/rejected/part-00000.parquet", snap.rejected(),
                            schemas.PUBLISHED_REJECTED)
    if snap.release is not None:
        snap.release()
    quarantined = snap.quarantined()
    if quarantined.num_rows != snap.counts["quarantined"]:
        raise AssertionError(f"quarantined/ would hold {quarantined.num_rows} rows, the counts say {snap.counts['quarantined']}")
    store.write_table(f"{snap.prefix}/quarantined/part-00000.parquet", quarantined.sort_by("record_id"))
    del quarantined
    with store.table_writer(f"{snap.prefix}/dialogues/index.parquet", schemas.DIALOGUE_INDEX) as writer:
        for index in snap.index():  # what later runs dedup against
            index = index.cast(schemas.DIALOGUE_INDEX)
            writer.write_table(index.set_column(index.schema.get_field_index("snapshot_id"), "snapshot_id",
                                                pa.array([snap.snapshot_id] * index.num_rows, type=pa.string())))
    store.write_json(f"{snap.prefix}/ingest_stats.json", snap.ingest_stats)
    for key in store.list(snap.gx_prefix + "/"):
        store.write_bytes(f"{snap.prefix}/gx/{key[len(snap.gx_prefix) + 1:]}", store.read_bytes(key))
    page, report_data = build_report(snapshot_id=snap.snapshot_id, uri=store.url(snap.prefix), accepted=accepted,
                                     rejected=rejected, counts=snap.counts, previous=previous_snapshot(store, snap),
                                     summary_md=snap.manifest.get("summary_md", ""), **snap.report)
    store.write_bytes(f"{snap.prefix}/report.html", page.encode())
    library_version = sorted(library)
    store.write_bytes(f"{snap.prefix}/README.md", dataset_card(store.url(snap.prefix), snap, accepted, rejected,
                                                               exported, library_version).encode())
    accepted.drop_ids()  # the diff was their use; the dedup index, below, is publish's largest step
    manifest = {
        **snap.lineage,
        "record_ids_sha256": digest,
        "ds": snap.ds,
        "run_id": snap.run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "uri": store.url(snap.prefix),
        "params": snap.params,
        "counts": snap.counts,
        **snap.manifest,
        "library_version": library_version,
        "exports": exported,
        "report": report_data,
        "files": {"data": ["data/part-00000.parquet"], "rejected": ["rejected/part-00000.parquet"],
                  "quarantined": ["quarantined/part-00000.parquet"], "dialogue_index": "dialogues/index.parquet",
                  "ingest_stats": "ingest_stats.json", "card": "README.md", "report": "report.html",
                  "exports": exported["files"]},
    }
    try:
        store.write_json(manifest_key, manifest, overwrite=False)  # the commit
    except ObjectExistsError:  # another attempt of this run committed first
        return _committed(store, snap, manifest_key, manifest["record_ids_sha256"])
    return {"snapshot_uri": store.url(snap.prefix), "counts": snap.counts, **_after_commit(store, snap, manifest)}


def _committed(store: ObjectStore, snap: Snapshot, manifest_key: str, digest: str) -> PublishOut:
    """This run's snapshot is already committed: the same records are recognised (a retry or a
    rerun), and ``latest.json`` is still moved if the attempt that committed died before it."""
    existing = store.read_json(manifest_key)
    if existing.get("record_ids_sha256") != digest:
        raise FileExistsError(f"snapshot {store.url(snap.prefix)} is already published with other records (immutable)")
    return {"snapshot_uri": existing["uri"], "counts": existing["counts"], "already_published": True,
            **_after_commit(store, snap, existing)}


def _after_commit(store: ObjectStore, snap: Snapshot, manifest: dict[str, Any]) -> dict[str, Any]:
    # later runs dedup against committed snapshots through the persistent index (idempotent: a rerun
    # finds the marker; a publish that died here is indexed by the next run's ``sync``)
    dedup_index.sync(store, [(snap.snapshot_id, snap.prefix)], snap.dedup_buckets)
    entry = {"snapshot_id": snap.snapshot_id, "uri": store.url(snap.prefix), "manifest": f"{snap.prefix}/manifest.json",
             "ds": snap.ds, "created_at": manifest["created_at"]}
    latest = move_latest(store, entry, snap.overrides, snap.promote)
    return {"latest": latest, "retention": apply_retention(store, snap.retention)}


def previous_snapshot(store: ObjectStore, snap: Snapshot) -> Previous | None:
    """The snapshot ``latest.json`` points at before this one moves it (None for the first)."""
    found = _latest(store)
    if found is None or found[0]["snapshot_id"] == snap.snapshot_id:
        return None
    latest, manifest = found
    base = latest["manifest"].rsplit("/", 1)[0]
    cols = ["prompt_id", "task_family", "output_text", "overall_score"]
    tally = ReportTally(keep_ids=True)
    for k in manifest["files"]["data"]:
        for b in parquet_batches(store.open_parquet(f"{base}/{k}"), 8192, cols):
            tally.add(pa.Table.from_batches([b]))
    return Previous(latest["snapshot_id"], tally)


def dataset_card(uri: str, snap: Snapshot, accepted: ReportTally, rejected: ReportTally, exported: ExportManifest,
                 library_version: list[str]) -> str:
    """The snapshot's ``README.md``: Hugging Face front matter (configs for ``load_dataset``) + the card."""
    langs = sorted(lang for lang in accepted.counts["lang"] if lang in LANG_NAMES)
    meta = front_matter(languages=langs, n_rows=accepted.rows, license_id=snap.card_settings.license,
                        pretty_name=snap.card_settings.pretty_name,
                        data_files={"default": [{"split": "train", "path": "data/*.parquet"}],
                                    "rejected": [{"split": "train", "path": "rejected/*.parquet"}]})
    return render_card(meta, {
        **snap.card, "pretty_name": snap.card_settings.pretty_name, "snapshot_id": snap.snapshot_id, "uri": uri,
        "local_path": uri.removeprefix("file://") if uri.startswith("file://") else None,
        "counts": snap.counts, "exports": exported, "library_version": library_version,
        "by_family": dict(accepted.counts["task_family"].most_common()),
        "by_lang": dict(accepted.counts["lang"].most_common()),
        "reject_reasons": reject_reasons(rejected).most_common(5),
        "limitations": [*snap.card_settings.limitations, *snap.card.get("limitations", [])],
    })


def verify(store: ObjectStore, prefix: str) -> dict[str, Any]:
    """Read a published snapshot back as its users will and check it against its manifest: row counts
    and the record-id digest of ``data/``, ``rejected/`` rows, every export file's line count, and the
    card's ``configs``. Returns what was checked; ``problems`` lists every mismatch."""
    manifest = store.read_json(f"{prefix}/manifest.json")
    problems: list[str] = []
    counts = manifest["counts"]
    data = pa.concat_tables([store.open_parquet(f"{prefix}/{k}").read(columns=["prompt_id"]) for k in manifest["files"]["data"]])
    rejected = pa.concat_tables([store.open_parquet(f"{prefix}/{k}").read(columns=["prompt_id"])
                                 for k in manifest["files"]["rejected"]])
    if data.num_rows != counts["accepted"]:
        problems.append(f"data/ has {data.num_rows} rows, the manifest says {counts['accepted']} accepted")
    if ids_digest(data) != manifest["record_ids_sha256"]:
        problems.append("data/ record ids do not match the manifest's record_ids_sha256")
    if rejected.num_rows != counts["rejected"]:
        problems.append(f"rejected/ has {rejected.num_rows} rows, the manifest says {counts['rejected']}")
    exports = manifest.get("exports") or {}
    lines: dict[str, dict[str, int]] = {}
    for fmt, splits in (exports.get("files") or {}).items():
        for split, key in splits.items():
            n = sum(1 for line in store.read_bytes(f"{prefix}/{key}").splitlines() if line.strip())
            lines.setdefault(fmt, {})[split] = n
            want = sum(exports["counts"][split].values())
            if n != want:
                problems.append(f"{key} has {n} lines, the manifest says {want}")
    card = store.read_bytes(f"{prefix}/README.md").decode()
    if not card.startswith("---\n") or "configs:" not in card.split("---\n")[1]:
        problems.append("README.md has no dataset-card front matter with configs")
    return {"snapshot_id": manifest["snapshot_id"], "uri": manifest["uri"], "accepted": data.num_rows,
            "rejected": rejected.num_rows, "export_lines": lines, "problems": problems}
