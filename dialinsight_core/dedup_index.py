"""The persistent near-duplicate index of published dialogues (bottom layer, object store).

Ingest used to rebuild an in-memory LSH from every committed snapshot's dialogue index on every
run: O(all history) in Python dict inserts. This index is written once per snapshot (at publish,
after its commit) and queried in batches with columnar filters, so a night pays for its own
dialogues, not for the history:

    dedup/bands/b=<h>/<segment>.parquet   band_key (uint64), ref (uint64)    16 rows per dialogue
    dedup/hashes/b=<h>/<segment>.parquet  content_hash, ref                  exact duplicates
    dedup/sigs/b=<h>/<segment>.parquet    ref, snapshot_id, dialogue_id, minhash

``ref`` is a stable 64-bit id of (snapshot, dialogue); ``b=<h>`` buckets rows by the key's top
bits, and each segment is sorted by its key. A lookup reads only the buckets its keys fall in,
keeps the rows whose key it asked for (``pyarrow.compute.is_in``), confirms LSH candidates by their
estimated Jaccard similarity (vectorised), and ignores rows of snapshots that are not committed
(a dead publish, a deleted one) or of the run's own logical date (a rerun is idempotent).
``compact`` folds a bucket's segments into one. docs/ingest.md, "Deduplication".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core.storage import ObjectStore

__all__ = ["PREFIX", "DedupIndex", "Match", "band_keys"]

PREFIX = "dedup"
BANDS = pa.schema([("band_key", pa.uint64()), ("ref", pa.uint64())])
HASHES = pa.schema([("content_hash", pa.string()), ("ref", pa.uint64())])
SIGS = pa.schema([("ref", pa.uint64()), ("snapshot_id", pa.string()), ("dialogue_id", pa.string()),
                  ("minhash", pa.list_(pa.uint64()))])
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants (golden ratio, splitmix64)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def band_keys(sigs: np.ndarray, bands: int = 16) -> np.ndarray:
    """(n, bands) uint64 keys: each band's rows of the MinHash signature (and the band's number)
    hashed to one integer. Equal bands give equal keys; a rare collision of unequal bands only adds
    a candidate that the similarity check then drops."""
    n, perm = sigs.shape
    rows = perm // bands
    v = sigs.reshape(n, bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        k = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * _MIX, (n, bands)).copy()
        for r in range(rows):
            k = (k ^ v[:, :, r]) * _MULT
            k ^= k >> np.uint64(29)
    return k


def ref_of(snapshot_id: str, dialogue_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{snapshot_id}\x00{dialogue_id}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Match:
    """An indexed dialogue that a new one repeats: exactly (``similarity`` 1.0 by content hash) or nearly."""

    snapshot_id: str
    dialogue_id: str
    similarity: float
    exact: bool


class DedupIndex:
    """Near-duplicate index of committed snapshots' dialogues in the object store."""

    def __init__(self, store: ObjectStore, threshold: float = 0.8, bands: int = 16, buckets: int = 16,
                 prefix: str = PREFIX):
        if buckets not in (1, 16, 256):
            raise ValueError(f"buckets must be 1, 16 or 256, not {buckets}")
        self.store, self.threshold, self.bands, self.buckets, self.prefix = store, threshold, bands, buckets, prefix
        self._bits = {1: 0, 16: 4, 256: 8}[buckets]
        self.files_read = 0

    # -- layout ------------------------------------------------------------------------------
    def _bucket_of(self, keys: np.ndarray) -> np.ndarray:
        if not self._bits:
            return np.zeros(len(keys), dtype=np.int64)
        return (keys >> np.uint64(64 - self._bits)).astype(np.int64)

    def _hash_bucket(self, content_hash: str) -> int:
        return int(content_hash[: 2], 16) >> (8 - self._bits) if self._bits else 0

    def _folder(self, kind: str, bucket: int) -> str:
        width = 2 if self.buckets == 256 else 1
        return f"{self.prefix}/{kind}/b={bucket:0{width}x}"

    def _segments(self, kind: str, bucket: int, schema: pa.Schema) -> dict[str, pa.Table]:
        """The bucket's segments of one kind, by key."""
        out = {}
        for key in self.store.list(self._folder(kind, bucket) + "/"):
            if key.endswith(".parquet"):
                try:
                    out[key] = self.store.read_table(key, schema)
                except FileNotFoundError:  # compacted away since the listing: its rows are in the new segment
                    continue
                self.files_read += 1
        return out

    def _read(self, kind: str, bucket: int, schema: pa.Schema) -> list[pa.Table]:
        return list(self._segments(kind, bucket, schema).values())

    # -- writing -----------------------------------------------------------------------------
    def add(self, snapshot_id: str, dialogue_ids: list[str], content_hashes: list[str], sigs: np.ndarray) -> int:
        """Index a committed snapshot's dialogues: one segment per bucket and kind, named after the
        snapshot (a rerun rewrites the same files with the same rows). Returns the rows indexed."""
        segment = snapshot_id.replace("/", "_") + ".parquet"
        refs = np.array([ref_of(snapshot_id, d) for d in dialogue_ids], dtype=np.uint64)
        keys = band_keys(sigs, self.bands) if len(refs) else np.zeros((0, self.bands), dtype=np.uint64)
        flat_keys, flat_refs = keys.reshape(-1), np.repeat(refs, self.bands)
        kb = self._bucket_of(flat_keys)
        rb = self._bucket_of(refs)
        hb = np.array([self._hash_bucket(h) for h in content_hashes], dtype=np.int64)
        for b in range(self.buckets):
            sel = kb == b
            order = np.argsort(flat_keys[sel], kind="stable")
            self.store.write_table(f"{self._folder('bands', b)}/{segment}", pa.table(
                {"band_key": flat_keys[sel][order], "ref": flat_refs[sel][order]}, schema=BANDS))
            idx = np.flatnonzero(hb == b)
            hs = pa.table({"content_hash": [content_hashes[i] for i in idx], "ref": refs[idx]}, schema=HASHES)
            self.store.write_table(f"{self._folder('hashes', b)}/{segment}", hs.sort_by("content_hash"))
            idx = np.flatnonzero(rb == b)
            idx = idx[np.argsort(refs[idx], kind="stable")]
            self.store.write_table(f"{self._folder('sigs', b)}/{segment}", pa.table({
                "ref": refs[idx], "snapshot_id": [snapshot_id] * len(idx), "dialogue_id": [dialogue_ids[i] for i in idx],
                "minhash": pa.array([sigs[i].tolist() for i in idx], type=pa.list_(pa.uint64()))}, schema=SIGS))
        return len(refs)

    def compact(self, live: set[str] | None = None) -> int:
        """Fold each bucket's segments into one sorted segment (dropping rows of snapshots not in
        ``live``, when given). Returns the segments folded away."""
        folded = 0
        for b in range(self.buckets):
            sig_segments = self._segments("sigs", b, SIGS)
            dead = None
            if live is not None and sig_segments:
                sigs = pa.concat_tables(sig_segments.values())
                dead = pc.invert(pc.is_in(sigs.column("snapshot_id"), value_set=pa.array(sorted(live), pa.string())))
                dead = sigs.filter(dead).column("ref")
            for kind, schema, key in (("bands", BANDS, "band_key"), ("hashes", HASHES, "content_hash"), ("sigs", SIGS, "ref")):
                keys = list(sig_segments) if kind == "sigs" else \
                    [k for k in self.store.list(self._folder(kind, b) + "/") if k.endswith(".parquet")]
                if len(keys) <= 1 and dead is None:
                    continue
                # the signatures were read above; the other kinds only when there is something to fold
                tables = list(sig_segments.values()) if kind == "sigs" else [self.store.read_table(k, schema) for k in keys]
                merged = pa.concat_tables(tables) if tables else schema.empty_table()
                if dead is not None and len(dead):
                    merged = merged.filter(pc.invert(pc.is_in(merged.column("ref"), value_set=dead)))
                target = f"{self._folder(kind, b)}/compacted-{hashlib.sha256('|'.join(keys).encode()).hexdigest()[:16]}.parquet"
                self.store.write_table(target, merged.sort_by(key))
                for k in keys:
                    if k != target:
                        self.store.delete(k)
                        folded += 1
        return folded

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, content_hashes: list[str], sigs: np.ndarray, allowed: set[str]) -> list[Match | None]:
        """For each new dialogue, the indexed one it repeats (exact first, else the most similar at
        or above the threshold; ties by snapshot and dialogue id), among snapshots in ``allowed``."""
        n = len(content_hashes)
        out: list[Match | None] = [None] * n
        if not n or not allowed:
            return out
        exact = self._lookup_hashes(content_hashes)
        keys = band_keys(sigs, self.bands)
        cand_q, cand_ref = self._lookup_bands(keys)
        want = np.unique(np.concatenate([cand_ref, np.array([r for rs in exact.values() for r in rs], dtype=np.uint64)]))
        info = self._sigs(want)  # ref -> (snapshot_id, dialogue_id, minhash)
        info = {r: v for r, v in info.items() if v[0] in allowed}
        for i, refs in exact.items():
            hits = sorted((info[r][0], info[r][1]) for r in refs if r in info)
            if hits:
                out[i] = Match(hits[0][0], hits[0][1], 1.0, True)
        if len(cand_q):
            pairs = {(int(q), int(r)) for q, r in zip(cand_q, cand_ref, strict=True) if out[q] is None and int(r) in info}
            if pairs:
                qs = np.array([p[0] for p in pairs])
                rs = [p[1] for p in pairs]
                other = np.stack([info[r][2] for r in rs])
                sims = (other == sigs[qs]).mean(axis=1)
                best: dict[int, tuple[float, str, str]] = {}
                for q, r, s in zip(qs.tolist(), rs, sims.tolist(), strict=True):
                    if s >= self.threshold:
                        cand = (-s, info[r][0], info[r][1])
                        if q not in best or cand < best[q]:
                            best[q] = cand
                for q, (s, snap, did) in best.items():
                    out[q] = Match(snap, did, -s, False)
        return out

    def _lookup_hashes(self, content_hashes: list[str]) -> dict[int, list[int]]:
        by_bucket: dict[int, list[int]] = {}
        for i, h in enumerate(content_hashes):
            by_bucket.setdefault(self._hash_bucket(h), []).append(i)
        found: dict[int, list[int]] = {}
        for b, idx in by_bucket.items():
            tables = self._read("hashes", b, HASHES)
            if not tables:
                continue
            t = pa.concat_tables(tables)
            wanted = pa.array(sorted({content_hashes[i] for i in idx}), pa.string())
            t = t.filter(pc.is_in(t.column("content_hash"), value_set=wanted))
            refs_by_hash: dict[str, list[int]] = {}
            for h, r in zip(t.column("content_hash").to_pylist(), t.column("ref").to_pylist(), strict=True):
                refs_by_hash.setdefault(h, []).append(r)
            for i in idx:
                if content_hashes[i] in refs_by_hash:
                    found[i] = refs_by_hash[content_hashes[i]]
        return found

    def _lookup_bands(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, ref) for every indexed band key equal to one of the queries'."""
        flat = keys.reshape(-1)
        q_of = np.repeat(np.arange(keys.shape[0]), keys.shape[1])
        buckets = self._bucket_of(flat)
        qs, refs = [], []
        for b in np.unique(buckets).tolist():
            tables = self._read("bands", b, BANDS)
            if not tables:
                continue
            t = pa.concat_tables(tables)
            sel = buckets == b
            mine, mine_q = flat[sel], q_of[sel]
            t = t.filter(pc.is_in(t.column("band_key"), value_set=pa.array(np.unique(mine))))
            if not t.num_rows:
                continue
            hit_keys = t.column("band_key").to_numpy()
            hit_refs = t.column("ref").to_numpy()
            order = np.argsort(mine, kind="stable")
            sorted_keys = mine[order]
            lo = np.searchsorted(sorted_keys, hit_keys, "left")
            hi = np.searchsorted(sorted_keys, hit_keys, "right")
            for k in range(len(hit_keys)):  # each indexed row pairs with every query holding its key
                for j in range(lo[k], hi[k]):
                    qs.append(mine_q[order[j]])
                    refs.append(hit_refs[k])
        return np.array(qs, dtype=np.int64), np.array(refs, dtype=np.uint64)

    def _sigs(self, refs: Iterable[int] | np.ndarray) -> dict[int, tuple[str, str, np.ndarray]]:
        refs = np.asarray(refs, dtype=np.uint64)
        out: dict[int, tuple[str, str, np.ndarray]] = {}
        if not len(refs):
            return out
        buckets = self._bucket_of(refs)
        for b in np.unique(buckets).tolist():
            tables = self._read("sigs", b, SIGS)
            if not tables:
                continue
            t = pa.concat_tables(tables)
            t = t.filter(pc.is_in(t.column("ref"), value_set=pa.array(refs[buckets == b])))
            mh = t.column("minhash").combine_chunks()
            width = len(mh[0]) if len(mh) else 0
            mat = mh.flatten().to_numpy().reshape(len(mh), width) if len(mh) else np.zeros((0, 0), np.uint64)
            for i, (r, s, d) in enumerate(zip(t.column("ref").to_pylist(), t.column("snapshot_id").to_pylist(),
                                              t.column("dialogue_id").to_pylist(), strict=True)):
                out[r] = (s, d, mat[i])
        return out


def _marker(prefix: str, snapshot_id: str) -> str:
    return f"{prefix}/indexed/{snapshot_id.replace('/', '_')}.json"


def index_snapshot(store: ObjectStore, snapshot_id: str, index: pa.Table, buckets: int = 16,
                   prefix: str = PREFIX) -> int:
    """Add a committed snapshot's DIALOGUE_INDEX rows to the persistent index, then mark it indexed
    (a crash in between re-adds the same rows under the same segment names)."""
    sigs = np.array(index.column("minhash").to_pylist(), dtype=np.uint64).reshape(index.num_rows, -1) \
        if index.num_rows else np.zeros((0, 128), dtype=np.uint64)
    n = DedupIndex(store, buckets=buckets, prefix=prefix).add(
        snapshot_id, index.column("dialogue_id").to_pylist(), index.column("content_hash").to_pylist(), sigs)
    store.write_json(_marker(prefix, snapshot_id), {"snapshot_id": snapshot_id, "dialogues": n})
    return n


def sync(store: ObjectStore, committed: list[tuple[str, str]], buckets: int = 16, prefix: str = PREFIX) -> list[str]:
    """Index every committed snapshot ``(snapshot_id, its prefix)`` that is not indexed yet (snapshots
    published before the index existed, or whose publish died between its commit and indexing):
    one listing, then only the missing ones are read. Returns the snapshot ids indexed now."""
    done = set(store.list(f"{prefix}/indexed/"))
    added = []
    for snapshot_id, snap_prefix in committed:
        if _marker(prefix, snapshot_id) in done:
            continue
        key = f"{snap_prefix}/dialogues/index.parquet"
        if store.exists(key):
            index_snapshot(store, snapshot_id, store.read_table(key), buckets, prefix)
            added.append(snapshot_id)
    return added


class PublishedDialogues:
    """What ingest's dedup step asks: which new dialogues repeat a dialogue of a committed snapshot
    of another logical date (``allowed``: those snapshots' ids)."""

    def __init__(self, index: DedupIndex, allowed: set[str]):
        self.index, self.allowed = index, allowed

    def lookup(self, content_hashes: list[str], sigs: np.ndarray) -> list[Match | None]:
        return self.index.lookup(content_hashes, sigs, self.allowed)
