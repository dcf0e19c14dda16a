"""The request cache: content-addressed, so an answer is found wherever its request lands.

A request's key hashes its full payload (the model's *identity*, messages, sampling parameters,
output schema: ``llm.request_key``), so the same request in another shard, run or logical date
finds the same answer, and new weights behind the same folder name never reuse an old one
(``fingerprint.model_fingerprint``).

Layout under ``labeling.cache_prefix`` (docs/labeling.md, docs/reliability.md):

- ``chunks/chunk-<ns>-<id>.parquet``: checkpoints, flushed every ``labeling.checkpoint_every``
  results while a label task runs (each is a new, atomically written object; a ``kill -9`` loses
  only the chunk in flight);
- ``segments/b=<h>/seg-<ns>-<id>.parquet``: the index, compacted. Rows are bucketed by the first
  hex digit(s) of their key (``labeling.cache_buckets``) and sorted by key. Compaction folds the
  chunks into their buckets' segments once ``labeling.cache_compact_chunks`` chunks have
  accumulated, so a lookup opens the segments of the buckets its keys fall in plus fewer than that
  many chunks, however many runs came before.

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


def _name(kind: str) -> str:
    return f"{kind}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


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
        try:
            tbl = self.store.read_table(key, CACHE_SCHEMA)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a torn chunk: its requests are sent again
            log.warning("skipping unreadable cache file %s: %s", key, exc)
            self.unreadable.append(key)
            return None
        self.files_read += 1
        return tbl.filter(pc.is_in(tbl["request_key"], value_set=wanted)) if wanted is not None else tbl

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
        self.store.write_table(f"{self.prefix}/chunks/{_name('chunk')}",
                               pa.Table.from_pylist(rows, schema=CACHE_SCHEMA), overwrite=False)
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
            rows = 0
            for b, parts in sorted(fresh.items()):
                old = segments.get(b, [])
                tables = [t for t in (self._read(k, None) for k in old) if t is not None] + parts
                merged = pa.concat_tables(tables)
                merged = merged.take(_first_per_key(merged)).sort_by("request_key")
                self.store.write_table(f"{self.prefix}/segments/b={b}/{_name('seg')}", merged, overwrite=False)
                rows += merged.num_rows
                for k in old:
                    self.store.delete(k)
            for k in absorbed:
                self.store.delete(k)
            out = {"compacted": True, "chunks": len(absorbed), "buckets": len(fresh), "rows_in_touched_buckets": rows}
            log.info("request cache %s compacted: %s", self.prefix, json.dumps(out))
            return out
        finally:
            self.store.delete(f"{self.prefix}/compaction.lock")


def _first_per_key(tbl: pa.Table) -> pa.Array:
    seen: set[str] = set()
    idx = []
    for i, k in enumerate(tbl["request_key"].to_pylist()):
        if k not in seen:
            seen.add(k)
            idx.append(i)
    return pa.array(idx, pa.int64())
