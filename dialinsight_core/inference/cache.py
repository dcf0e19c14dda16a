"""The request cache: content-addressed, so an answer is found wherever its request lands.

A request's key hashes its full payload (the model's *identity*, messages, sampling parameters,
output schema: ``llm.request_key``), so the same request in another shard, run or logical date
finds the same answer, and new weights behind the same folder name never reuse an old one
(``fingerprint.model_fingerprint``).

Layout under ``labeling.cache_prefix`` (docs/labeling.md, docs/reliability.md):

- ``chunks/chunk-<ns>-<id>.parquet``: checkpoints, flushed every ``labeling.checkpoint_every``
  results while a label task runs (each is a new, atomically written object; a ``kill -9`` loses
  only the chunk in flight);
- ``segments/b=<h>/seg-<ns>-r<rows>-<id>.parquet``: the index, compacted. Rows are bucketed by the
  first hex digit(s) of their key (``labeling.cache_buckets``) and sorted by key. Compaction folds
  the chunks into a new segment per bucket once ``labeling.cache_compact_chunks`` chunks have
  accumulated, then merges a bucket's newest segments while the one before is less than
  ``MERGE_RATIO`` times the size of the last (size-tiered, like an LSM tree): a bucket's segments
  shrink geometrically from oldest to newest, so there are O(log rows) of them, and each row is
  rewritten O(log rows) times over the cache's life, not once per compaction. A lookup opens the
  segments of the buckets its keys fall in plus fewer than ``cache_compact_chunks`` chunks,
  however many runs came before.

Compaction writes a bucket's new segment before it deletes what the segment absorbed, and a
reader lists chunks before segments, so a concurrent reader sees every row at least once (a file
deleted under it makes it list again). One compactor at a time holds ``compaction.lock``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core.storage import ObjectExistsError, ObjectStore

log = logging.getLogger(__name__)

CACHE_SCHEMA = pa.schema([
    ("request_key", pa.string()),
    ("prompt_id", pa.string()),
    ("output_text", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_s", pa.float64()),
    ("error_code", pa.string()),
    ("error_detail", pa.string()),
    ("model", pa.string()),
    ("engine", pa.string()),
    ("created_at", pa.float64()),
])
LOCK_STALE_S = 900.0  # a compactor that held the lock this long died: the lock is broken
MERGE_RATIO = 4  # merge a bucket's last two segments while the older is < 4x the newer
# rows per row group of a segment (sorted by key): a lookup reads a segment's key column, then whole
# rows only of the groups that hold a key it asks for (storage.SortedParquet)
SEGMENT_GROUP_ROWS = 4096


def _name(kind: str, ns: int | None = None, rows: int | None = None) -> str:
    size = f"-r{rows}" if rows is not None else ""
    return f"{kind}-{ns if ns is not None else time.time_ns():020d}{size}-{uuid.uuid4().hex[:8]}.parquet"


def _segment_ns_rows(key: str) -> tuple[int, int | None]:
    """A segment's creation time and row count, from its name (older names carry no count)."""
    parts = key.rsplit("/", 1)[-1].removesuffix(".parquet").split("-")
    rows = next((int(p[1:]) for p in parts[2:-1] if p.startswith("r") and p[1:].isdigit()), None)
    return int(parts[1]), rows


class RequestCache:
    """Content-addressed results of engine requests in the object store."""

    def __init__(self, store: ObjectStore, prefix: str, buckets: int = 16, compact_chunks: int = 32):
        if buckets not in (1, 16, 256, 4096):
            raise ValueError(f"cache buckets must be 1, 16, 256 or 4096, not {buckets}")
        self.store = store
        self.prefix = prefix.strip("/")
        self.digits = {1: 0, 16: 1, 256: 2, 4096: 3}[buckets]
        self.compact_chunks = compact_chunks
        self.unreadable: list[str] = []
        self.chunks_written = 0
        self.files_read = 0
        self._written: dict[str, pa.Table] = {}  # chunks this process flushed: compaction needs not read them back

    def bucket(self, key: str) -> str:
        return key[: self.digits] or "all"

    def _chunks(self) -> list[str]:
        return [k for k in self.store.list(f"{self.prefix}/chunks/") if k.endswith(".parquet")]

    def _segments(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for k in self.store.list(f"{self.prefix}/segments/"):
            if k.endswith(".parquet"):
                out[k.split("/b=", 1)[1].split("/", 1)[0]].append(k)
        return out

    def _read(self, key: str, wanted: pa.Array | None) -> pa.Table | None:
        """A chunk or segment (only the rows of ``wanted`` keys, when given: then only its key column
        and the row groups that hold a wanted key are read, so a first night's requests, which miss,
        never read an answer; segments are sorted by key in small row groups, so few groups hit)."""
        try:
            if key in self._written:
                tbl = self._written[key]
                if wanted is not None:
                    tbl = tbl.filter(pc.is_in(tbl["request_key"], value_set=wanted))
            elif wanted is not None:
                tbl = self.store.sorted_reader(key, "request_key").read(wanted, CACHE_SCHEMA)
            else:
                tbl = self.store.read_table(key, CACHE_SCHEMA)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a torn chunk: its requests are sent again
            log.warning("skipping unreadable cache file %s: %s", key, exc)
            self.unreadable.append(key)
            return None
        self.files_read += 1
        return tbl

    def lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Cached rows of ``keys`` (first answer per key wins)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        buckets = {self.bucket(k) for k in wanted}
        value_set = pa.array(wanted, pa.string())
        for attempt in range(5):
            self.unreadable, self.files_read = [], 0
            try:
                chunks = self._chunks()  # chunks before segments: see the module docstring
                segments = [k for b, ks in self._segments().items() if b in buckets for k in ks]
                rows: dict[str, dict[str, Any]] = {}
                for key in [*segments, *chunks]:
                    tbl = self._read(key, value_set)
                    if tbl is not None:
                        for row in tbl.to_pylist():
                            rows.setdefault(row["request_key"], row)
                return rows
            except FileNotFoundError:  # compacted away under us: list again
                log.info("cache file compacted during lookup (attempt %d); listing again", attempt + 1)
        raise RuntimeError(f"request cache {self.prefix} kept changing during 5 lookups")

    def flush(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        key, tbl = f"{self.prefix}/chunks/{_name('chunk')}", pa.Table.from_pylist(rows, schema=CACHE_SCHEMA)
        self.store.write_table(key, tbl, overwrite=False)
        self._written[key] = tbl
        self.chunks_written += 1

    def maybe_compact(self) -> dict[str, Any] | None:
        """Compact when enough chunks have accumulated; never fails the caller."""
        try:
            if len(self._chunks()) < self.compact_chunks:
                return None
            return self.compact()
        except Exception as exc:  # the cache stays correct without compaction, only slower
            log.warning("request cache compaction skipped: %s", exc)
            return None

    def _lock(self) -> bool:
        key = f"{self.prefix}/compaction.lock"
        for _ in range(2):
            try:
                self.store.write_json(key, {"at": time.time(), "id": uuid.uuid4().hex}, overwrite=False)
                return True
            except ObjectExistsError:
                try:
                    held = self.store.read_json(key)
                except FileNotFoundError:
                    continue
                if time.time() - float(held.get("at", 0)) < LOCK_STALE_S:
                    return False
                self.store.delete(key)  # stale: its holder died
        return False

    def _merge_tail(self, bucket: str, segments: list[str], newest: pa.Table) -> int:
        """Merge the bucket's last two segments while the older is less than ``MERGE_RATIO`` times
        the newer; returns the merges made. The merged segment takes the newer one's time, so it
        keeps its place in the order (older answers first) among the segments left."""
        tail: pa.Table | None = newest
        merges = 0
        while len(segments) >= 2:
            (_, older_rows), (newer_ns, newer_rows) = _segment_ns_rows(segments[-2]), _segment_ns_rows(segments[-1])
            if older_rows is None or newer_rows is None or older_rows >= MERGE_RATIO * newer_rows:
                break
            older = self._read(segments[-2], None)
            newer = tail if tail is not None else self._read(segments[-1], None)
            if older is None or newer is None:  # unreadable: leave it to lookups (they skip it)
                break
            merged = pa.concat_tables([older, newer])
            merged = merged.take(_first_per_key(merged)).sort_by("request_key")
            key = f"{self.prefix}/segments/b={bucket}/{_name('seg', newer_ns, merged.num_rows)}"
            self.store.write_table(key, merged, overwrite=False, row_group_rows=SEGMENT_GROUP_ROWS)
            for k in segments[-2:]:
                self.store.delete(k)
            segments[-2:] = [key]
            tail = merged
            merges += 1
        return merges

    def compact(self) -> dict[str, Any]:
        """Fold every chunk into its bucket's segment; returns what it did."""
        if not self._lock():
            return {"compacted": False, "why": "another compaction holds the lock"}
        try:
            chunks = self._chunks()
            segments = self._segments()
            fresh: dict[str, list[pa.Table]] = defaultdict(list)
            absorbed = []
            for key in chunks:
                tbl = self._read(key, None)
                absorbed.append(key)  # an unreadable chunk is dropped: its requests are sent again
                if tbl is None or not tbl.num_rows:
                    continue
                by_bucket = pc.utf8_slice_codeunits(tbl["request_key"], 0, self.digits) if self.digits else None
                for b in (set(by_bucket.to_pylist()) if by_bucket is not None else {"all"}):
                    part = tbl.filter(pc.equal(by_bucket, b)) if by_bucket is not None else tbl
                    fresh[b].append(part)
            rows = merges = 0
            for b, parts in sorted(fresh.items()):
                new = pa.concat_tables(parts)  # chunks in name (time) order: the first answer per key wins
                new = new.take(_first_per_key(new)).sort_by("request_key")
                key = f"{self.prefix}/segments/b={b}/{_name('seg', rows=new.num_rows)}"
                self.store.write_table(key, new, overwrite=False, row_group_rows=SEGMENT_GROUP_ROWS)
                rows += new.num_rows
                merges += self._merge_tail(b, [*sorted(segments.get(b, [])), key], new)
            for k in absorbed:
                self.store.delete(k)
                self._written.pop(k, None)
            out = {"compacted": True, "chunks": len(absorbed), "buckets": len(fresh), "rows_folded": rows,
                   "segment_merges": merges}
            log.info("request cache %s compacted: %s", self.prefix, json.dumps(out))
            return out
        finally:
            self.store.delete(f"{self.prefix}/compaction.lock")


def _first_per_key(tbl: pa.Table) -> pa.Array:
    """Row positions of each key's first row, in input order."""
    pos = pa.table({"request_key": tbl["request_key"], "i": pa.array(range(tbl.num_rows), pa.int64())})
    firsts = pos.group_by("request_key", use_threads=False).aggregate([("i", "min")])["i_min"].combine_chunks()
    return firsts.take(pc.sort_indices(firsts))
