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
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core.storage import ObjectStore, SortedParquet

__all__ = ["PREFIX", "DedupIndex", "Match", "band_keys"]

PREFIX = "dedup"
BANDS = pa.schema([("band_key", pa.uint64()), ("ref", pa.uint64())])
HASHES = pa.schema([("content_hash", pa.string()), ("ref", pa.uint64())])
SIGS = pa.schema([("ref", pa.uint64()), ("snapshot_id", pa.string()), ("dialogue_id", pa.string()),
                  ("minhash", pa.list_(pa.uint64()))])
# rows per row group of a segment (each segment is sorted by its key): a lookup reads only the row
# groups whose key range holds a key it asks for. Reading a row group costs pyarrow ~150 us before
# its first byte, about what 8,000 band rows cost to read, so band groups are that large; a lookup
# asks for few signatures, and those groups stay small (docs/benchmarks.md, "Dedup against history")
ROW_GROUP_ROWS = {"bands": 8192, "hashes": 4096, "sigs": 256}
KEYS = {"bands": "band_key", "hashes": "content_hash", "sigs": "ref"}
# a bucket's two smallest segments merge while the larger is < 2x the smaller: with nights of equal
# size that is a binary counter (log2(nights) segments, each row rewritten log2(nights) times)
MERGE_RATIO = 2
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants (golden ratio, splitmix64)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def band_keys(sigs: np.ndarray, bands: int = 16) -> np.ndarray:
    """(n, bands) uint64 keys: each band's rows of the MinHash signature (and the band's number)
    hashed to one integer. Equal bands give equal keys; a rare collision of unequal bands only adds
    a candidate that the similarity check then drops."""
    n, perm = sigs.shape
    rows = perm // bands
    v = sigs.reshape(n, bands, rows).astype(np.uint64, copy=False)  # no copy of a uint64 matrix
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
                 prefix: str = PREFIX, tiered: bool = True):
        if buckets not in (1, 16, 256):
            raise ValueError(f"buckets must be 1, 16 or 256, not {buckets}")
        self.store, self.threshold, self.bands, self.buckets, self.prefix = store, threshold, bands, buckets, prefix
        # size-tiered merges after each add; off for ingest's run index, whose merges would read the
        # run's whole rows into memory as it grows (a lookup then opens one segment per batch)
        self.tiered = tiered
        self._bits = {1: 0, 16: 4, 256: 8}[buckets]
        self.files_read = 0  # segments a lookup opened
        self.merges = 0  # segment merges done by add
        self._readers: dict[str, SortedParquet] = {}  # by segment key, kept for this index's life

    PAIR_CHUNK = 32_768  # candidate pairs compared at a time: two matrices of as many signatures (32 MiB each)

    @property
    def row_groups_read(self) -> tuple[int, int]:
        """(read, skipped by their statistics) over this index's lookups."""
        readers = self._readers.values()
        return sum(r.row_groups_read for r in readers), sum(r.row_groups_skipped for r in readers)

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

    def _segment_keys(self, kind: str, bucket: int) -> list[str]:
        return [k for k in self.store.list(self._folder(kind, bucket) + "/") if k.endswith(".parquet")]

    def _matching(self, kind: str, bucket: int, schema: pa.Schema, values: list) -> pa.Table | None:
        """The bucket's rows whose key is one of ``values`` (sorted), over all its segments, reading
        only the row groups that can hold them. A segment merged away between the listing and the
        read means the merged one exists: list again."""
        for _ in range(5):
            tables = []
            try:
                for key in self._segment_keys(kind, bucket):
                    reader = self._readers.get(key)
                    if reader is None:  # the footer is parsed once a run
                        reader = self._readers[key] = self.store.sorted_reader(key, KEYS[kind], lasting=True)
                    tables.append(reader.read(values, schema))
                    self.files_read += 1
            except FileNotFoundError:
                continue
            return pa.concat_tables(tables) if tables else None
        raise RuntimeError(f"dedup index bucket {self._folder(kind, bucket)} kept changing under a lookup")

    def _write_segment(self, kind: str, bucket: int, name: str, tbl: pa.Table) -> None:
        self.store.write_table(f"{self._folder(kind, bucket)}/{name}", tbl, **_segment_options(kind))

    def _tier(self, kind: str, bucket: int, schema: pa.Schema) -> int:
        """Size-tiered merging (as in an LSM tree): while the bucket's second-smallest segment is
        under ``MERGE_RATIO`` times its smallest, merge the two. A bucket then holds O(log(history /
        night)) segments, each row is rewritten O(log) times in its life, and a night's add costs
        O(its rows x log) amortised, not a rewrite of the history. Returns the merges done."""
        merges = 0
        try:
            segs = sorted(((self.store.open_parquet(k).metadata.num_rows, k) for k in self._segment_keys(kind, bucket)),
                          reverse=True)
            while len(segs) >= 2 and segs[-2][0] < MERGE_RATIO * max(segs[-1][0], 1):
                (_, a), (_, b) = segs.pop(), segs.pop()
                name = f"merged-{hashlib.sha256(f'{a}|{b}'.encode()).hexdigest()[:16]}.parquet"
                # written before the deletes: a lookup always finds the rows
                rows = merge_segments(self.store, [a, b], f"{self._folder(kind, bucket)}/{name}", kind, schema)
                for k in (a, b):
                    self.store.delete(k)
                segs = sorted([*segs, (rows, f"{self._folder(kind, bucket)}/{name}")], reverse=True)
                merges += 1
        except FileNotFoundError:  # a concurrent add merged the same segments: its merge holds the rows
            pass
        return merges

    # -- writing -----------------------------------------------------------------------------
    def add(self, snapshot_id: str, dialogue_ids: list[str], content_hashes: list[str], sigs: np.ndarray,
            part: int = 0) -> int:
        """Index a committed snapshot's dialogues (its ``part``-th slice of them): one segment per bucket
        and kind, named after the snapshot and part (a rerun rewrites the same files with the same
        rows). Returns the rows indexed."""
        segment = snapshot_id.replace("/", "_") + (f"-{part:05d}" if part else "") + ".parquet"
        refs = np.array([ref_of(snapshot_id, d) for d in dialogue_ids], dtype=np.uint64)
        keys = band_keys(sigs, self.bands) if len(refs) else np.zeros((0, self.bands), dtype=np.uint64)
        flat_keys, flat_refs = keys.reshape(-1), np.repeat(refs, self.bands)
        kb = self._bucket_of(flat_keys)
        rb = self._bucket_of(refs)
        hb = np.array([self._hash_bucket(h) for h in content_hashes], dtype=np.int64)
        for b in range(self.buckets):
            sel = kb == b
            order = np.argsort(flat_keys[sel], kind="stable")
            self._write_segment("bands", b, segment, pa.table(
                {"band_key": flat_keys[sel][order], "ref": flat_refs[sel][order]}, schema=BANDS))
            idx = np.flatnonzero(hb == b)
            hs = pa.table({"content_hash": [content_hashes[i] for i in idx], "ref": refs[idx]}, schema=HASHES)
            self._write_segment("hashes", b, segment, hs.sort_by("content_hash"))
            idx = np.flatnonzero(rb == b)
            idx = idx[np.argsort(refs[idx], kind="stable")]
            self._write_segment("sigs", b, segment, pa.table({
                "ref": refs[idx], "snapshot_id": [snapshot_id] * len(idx), "dialogue_id": [dialogue_ids[i] for i in idx],
                "minhash": _list_array(sigs[idx])}, schema=SIGS))
            for kind, schema in (("bands", BANDS), ("hashes", HASHES), ("sigs", SIGS)):
                if self.tiered:
                    self.merges += self._tier(kind, b, schema)
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
                self.store.write_table(target, _unique_rows(merged, key), **_segment_options(kind))
                for k in keys:
                    if k != target:
                        self.store.delete(k)
                        folded += 1
        return folded

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, content_hashes: list[str], sigs: np.ndarray, allowed: set[str]) -> list[Match | None]:
        """For each new dialogue, the indexed one it repeats (exact first, else the most similar at
        or above the threshold; ties by snapshot and dialogue id), among snapshots in ``allowed``.

        The candidates (pairs of a new dialogue and an indexed one sharing a band) are compared
        ``PAIR_CHUNK`` pairs at a time, reading only those pairs' signatures: a band many indexed
        dialogues share (short, formulaic dialogues) makes the pairs grow with the index, and
        holding them all was most of a 1M-dialogue ingest's memory."""
        n = len(content_hashes)
        out: list[Match | None] = [None] * n
        if not n or not allowed:
            return out
        exact = self._lookup_hashes(content_hashes)
        if exact:
            got, snaps, dids, _ = self._sig_rows(np.unique(np.array([r for rs in exact.values() for r in rs], dtype=np.uint64)))
            named = {r: (snap, did) for r, snap, did in zip(got.tolist(), snaps, dids, strict=True) if snap in allowed}
            for i, refs in exact.items():
                hits = sorted(named[r] for r in refs if r in named)
                if hits:
                    out[i] = Match(hits[0][0], hits[0][1], 1.0, True)
        cand_q, cand_ref = self._lookup_bands(band_keys(sigs, self.bands))
        open_q = np.fromiter((o is None for o in out), dtype=bool, count=n)
        keep = open_q[cand_q] if len(cand_q) else np.zeros(0, dtype=bool)
        cand_q, cand_ref = cand_q[keep], cand_ref[keep]
        if not len(cand_q):
            return out
        order = np.lexsort((cand_q, cand_ref))  # by indexed dialogue, then query; each pair once
        cand_q, cand_ref = cand_q[order], cand_ref[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (cand_ref[1:] != cand_ref[:-1]) | (cand_q[1:] != cand_q[:-1])
        cand_q, cand_ref = cand_q[first], cand_ref[first]
        best: dict[int, tuple[float, str, str]] = {}
        for lo in range(0, len(cand_q), self.PAIR_CHUNK):
            self._best_near(cand_q[lo:lo + self.PAIR_CHUNK], cand_ref[lo:lo + self.PAIR_CHUNK], sigs, allowed, best)
        for q, (s, snap, did) in best.items():
            out[q] = Match(snap, did, -s, False)
        return out

    def _best_near(self, qs: np.ndarray, refs: np.ndarray, sigs: np.ndarray, allowed: set[str],
                   best: dict[int, tuple[float, str, str]]) -> None:
        """Fold one chunk of candidate pairs (refs sorted) into ``best``: per query, the smallest
        (-similarity, snapshot, dialogue id) at or above the threshold."""
        got, snaps, dids, mat = self._sig_rows(np.unique(refs))
        if not len(got):
            return
        pos = np.minimum(np.searchsorted(got, refs), len(got) - 1)
        ok = (got[pos] == refs) & np.fromiter((s in allowed for s in snaps), dtype=bool, count=len(snaps))[pos]
        qs, pos = qs[ok], pos[ok]
        sims = (mat[pos] == sigs[qs]).mean(axis=1)
        hit = sims >= self.threshold
        for q, p, s in zip(qs[hit].tolist(), pos[hit].tolist(), sims[hit].tolist(), strict=True):
            cand = (-s, snaps[p], dids[p])
            if q not in best or cand < best[q]:
                best[q] = cand

    def _lookup_hashes(self, content_hashes: list[str]) -> dict[int, list[int]]:
        by_bucket: dict[int, list[int]] = {}
        for i, h in enumerate(content_hashes):
            by_bucket.setdefault(self._hash_bucket(h), []).append(i)
        found: dict[int, list[int]] = {}
        for b, idx in by_bucket.items():
            t = self._matching("hashes", b, HASHES, sorted({content_hashes[i] for i in idx}))
            if t is None:
                continue
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
            sel = buckets == b
            mine, mine_q = flat[sel], q_of[sel]
            t = self._matching("bands", b, BANDS, np.unique(mine).tolist())
            if t is None or not t.num_rows:
                continue
            hit_keys = t.column("band_key").to_numpy()
            hit_refs = t.column("ref").to_numpy()
            order = np.argsort(mine, kind="stable")
            sorted_keys = mine[order]
            lo = np.searchsorted(sorted_keys, hit_keys, "left")
            hi = np.searchsorted(sorted_keys, hit_keys, "right")
            counts = hi - lo  # each indexed row pairs with every query holding its key
            starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
            qs.append(mine_q[order[starts + np.arange(int(counts.sum()))]])
            refs.append(np.repeat(hit_refs, counts))
        if not qs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
        return np.concatenate(qs).astype(np.int64), np.concatenate(refs).astype(np.uint64)

    def _sig_rows(self, refs: np.ndarray) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
        """The indexed rows of the sorted ``refs``: refs (sorted), snapshot ids, dialogue ids and
        an (n, permutations) signature matrix."""
        tables = []
        if len(refs):
            buckets = self._bucket_of(refs)
            for b in np.unique(buckets).tolist():
                t = self._matching("sigs", b, SIGS, refs[buckets == b].tolist())
                if t is not None and t.num_rows:
                    tables.append(t)
        if not tables:
            return np.zeros(0, dtype=np.uint64), [], [], np.zeros((0, 0), dtype=np.uint64)
        t = pa.concat_tables(tables)
        t = t.take(pc.sort_indices(t.column("ref")))
        return (t.column("ref").to_numpy().astype(np.uint64), t.column("snapshot_id").to_pylist(),
                t.column("dialogue_id").to_pylist(), signatures(t.column("minhash")))


def _list_array(rows: np.ndarray) -> pa.ListArray:
    """An (n, w) uint64 matrix as a list<uint64> column, without a Python list per row."""
    n, w = rows.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * w),
                                    pa.array(np.ascontiguousarray(rows, dtype=np.uint64).reshape(-1)))


def _segment_options(kind: str) -> dict[str, Any]:
    # hashes and MinHash values are random bits: zstd and dictionary pages only spend time on them
    # (writing signatures took 4x longer with a dictionary attempt per row group)
    return {"row_group_rows": ROW_GROUP_ROWS[kind], "compression": "none", "dictionary": False}


def merge_segments(store: ObjectStore, keys: list[str], target: str, kind: str, schema: pa.Schema) -> int:
    """Segments sorted by their key into one segment at ``target``, sorted by (key, ref), each
    (key, ref) once: what ``_unique_rows`` of their concatenation is, row groups included, but
    read a row group at a time. A merge of a night's segments held both whole (publish's peak at
    1M: docs/benchmarks.md); now memory holds a row group of each input, the rows of one key that
    straddle row groups, and one output row group. Returns the rows written.

    Rows are emitted up to (not including) the smallest last key among the buffers of inputs
    that have more to read: no later row of any input can sort before them. Inputs need only be
    sorted by key (``add`` sorts bands and hashes by key alone)."""
    key, group = KEYS[kind], ROW_GROUP_ROWS[kind]
    streams = [iter(store.iter_batches(k, group, schema)) for k in keys]
    bufs: list[pa.Table] = [schema.empty_table() for _ in keys]
    more = [True] * len(keys)
    out: list[pa.Table] = []
    out_rows = written = 0
    with store.table_writer(target, schema, **{k: v for k, v in _segment_options(kind).items()
                                               if k != "row_group_rows"}) as writer:
        def emit(rows: pa.Table, final: bool = False) -> None:
            nonlocal out_rows, written
            if rows.num_rows:
                out.append(rows)
                out_rows += rows.num_rows
            while out_rows >= group or (final and out_rows):
                tbl = pa.concat_tables(out).combine_chunks()
                n = min(group, tbl.num_rows)
                writer.write_table(tbl.slice(0, n), row_group_size=group)
                written += n
                out[:] = [tbl.slice(n)] if tbl.num_rows > n else []
                out_rows = tbl.num_rows - n

        def pull(i: int) -> None:
            batch = next(streams[i], None)
            if batch is None:
                more[i] = False
            else:
                bufs[i] = pa.concat_tables([bufs[i], pa.Table.from_batches([batch])])

        for i in range(len(keys)):
            pull(i)
        while True:
            for i in range(len(keys)):  # an empty buffer of an input with more: read on
                while more[i] and not bufs[i].num_rows:
                    pull(i)
            open_lasts = [bufs[i].column(key)[-1] for i in range(len(keys)) if more[i]]
            if not open_lasts:  # every input read: the rest, in one sorted step
                rest = pa.concat_tables(bufs)
                emit(_unique_rows(rest, key) if rest.num_rows else rest, final=True)
                break
            bound = min(open_lasts, key=lambda s: s.as_py())
            ready, kept = [], []
            for buf in bufs:
                below = pc.less(buf.column(key), bound)
                ready.append(buf.filter(below))
                kept.append(buf.filter(pc.invert(below)))
            step = pa.concat_tables(ready)
            if step.num_rows:
                bufs = kept
                emit(_unique_rows(step, key))
            else:  # one key fills the buffers whose last key is the bound: read on there
                for i in range(len(keys)):
                    if more[i] and bufs[i].column(key)[-1] == bound:
                        pull(i)
    return written


def _unique_rows(tbl: pa.Table, key: str) -> pa.Table:
    """Sorted by (key, ref), each (key, ref) once: a snapshot indexed twice (a rerun, or two merges
    racing) adds nothing twice."""
    order = [(key, "ascending")] + ([("ref", "ascending")] if key != "ref" else [])
    tbl = tbl.sort_by(order).combine_chunks()
    if tbl.num_rows < 2:
        return tbl
    k, r = tbl.column(key).chunk(0), tbl.column("ref").chunk(0)
    same = pc.and_(pc.equal(k.slice(1), k.slice(0, len(k) - 1)), pc.equal(r.slice(1), r.slice(0, len(r) - 1)))
    return tbl.filter(pa.concat_arrays([pa.array([True]), pc.invert(same)]))


def _marker(prefix: str, snapshot_id: str) -> str:
    return f"{prefix}/indexed/{snapshot_id.replace('/', '_')}.json"


# a snapshot's dialogues are indexed this many at a time (one segment per bucket and kind each, which
# the tiered merges fold): memory follows this, not the night's size
INDEX_PART_ROWS = 65536
# rows read from a published index at a time into a part's signature matrix
_PIECE_ROWS = 8192

Part = tuple[list[str], list[str], np.ndarray]  # dialogue ids, content hashes, (n, perm) uint64 signatures


def signatures(minhash: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``minhash`` list column as an (n, perm) uint64 matrix (its values' one copy in NumPy)."""
    n = len(minhash)
    if not n:
        return np.zeros((0, 128), dtype=np.uint64)
    if isinstance(minhash, pa.ChunkedArray):
        minhash = minhash.combine_chunks()
    lengths = pc.list_value_length(minhash)
    width = pc.min_max(lengths)
    if width["min"] != width["max"] or minhash.null_count:
        raise ValueError("dialogue index rows have MinHash signatures of unequal length (or none)")
    return minhash.flatten().to_numpy(zero_copy_only=False).astype(np.uint64, copy=False).reshape(n, -1)


def _table_part(part: pa.Table) -> Part:
    return (part.column("dialogue_id").to_pylist(), part.column("content_hash").to_pylist(),
            signatures(part.column("minhash")))


def read_parts(store: ObjectStore, key: str) -> Iterable[Part]:
    """A published DIALOGUE_INDEX in parts of ``INDEX_PART_ROWS`` rows (the last shorter; one empty
    part for an empty index), read ``_PIECE_ROWS`` at a time into the part's signature matrix. The
    parts are what slicing the whole table would give. Reading a part as an Arrow table and
    converting it held its signatures three times over, and the next part was read before the
    last one was freed: at 1M this step was publish's peak (docs/benchmarks.md)."""
    total = store.open_parquet(key).metadata.num_rows
    piece = math.gcd(INDEX_PART_ROWS, _PIECE_ROWS)  # pieces never straddle a part
    batches = iter(store.iter_batches(key, piece))
    done = 0
    while True:
        rows = min(INDEX_PART_ROWS, total - done)
        ids: list[str] = []
        hashes: list[str] = []
        sigs: np.ndarray | None = None
        filled = 0
        while filled < rows:
            batch = next(batches)
            block = signatures(batch.column("minhash"))
            if sigs is None:
                sigs = np.empty((rows, block.shape[1]), dtype=np.uint64)
            elif block.shape[1] != sigs.shape[1]:
                raise ValueError(f"dialogue index {key} has MinHash signatures of unequal length")
            sigs[filled:filled + batch.num_rows] = block
            ids += batch.column("dialogue_id").to_pylist()
            hashes += batch.column("content_hash").to_pylist()
            filled += batch.num_rows
            del batch, block
        yield ids, hashes, sigs if sigs is not None else np.zeros((0, 128), dtype=np.uint64)
        done += rows
        if done >= total:
            return


def index_snapshot(store: ObjectStore, snapshot_id: str, index: Iterable[pa.Table] | pa.Table | Iterable[Part],
                   buckets: int = 16, prefix: str = PREFIX) -> int:
    """Add a committed snapshot's DIALOGUE_INDEX rows (a table, its parts in a fixed order, or
    ``read_parts`` of it) to the persistent index, then mark it indexed (a crash in between re-adds
    the same rows under the same segment names)."""
    parts = iter([index] if isinstance(index, pa.Table) else index)
    dedup, n, i = DedupIndex(store, buckets=buckets, prefix=prefix), 0, 0
    # no part is held while the next is read: not a for loop's variable, not enumerate's reused tuple
    # (either kept a 64 MiB part alive through the read of the next)
    while (part := next(parts, None)) is not None:
        ids, hashes, sigs = _table_part(part) if isinstance(part, pa.Table) else part
        del part
        if len(ids) or not i:
            n += dedup.add(snapshot_id, ids, hashes, sigs, part=i)
        del ids, hashes, sigs
        i += 1
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
            index_snapshot(store, snapshot_id, read_parts(store, key), buckets, prefix)
            added.append(snapshot_id)
    return added


class PublishedDialogues:
    """What ingest's dedup step asks: which new dialogues repeat a dialogue of a committed snapshot
    of another logical date (``allowed``: those snapshots' ids)."""

    def __init__(self, index: DedupIndex, allowed: set[str]):
        self.index, self.allowed = index, allowed

    def lookup(self, content_hashes: list[str], sigs: np.ndarray) -> list[Match | None]:
        return self.index.lookup(content_hashes, sigs, self.allowed)
