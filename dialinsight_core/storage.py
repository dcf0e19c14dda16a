"""One object-store interface for every byte the platform reads or writes.

``file://`` backs the embedded default (persistent, no server); ``s3://`` uses boto3 with a
configurable endpoint (AWS, MinIO, moto in tests). Stages only see keys relative to the store
root, so the same code publishes to either. Two primitives make publishing safe under concurrency
and crashes (docs/reliability.md): a create-only write (``overwrite=False``: ``If-None-Match: *`` on
S3, an exclusive hard link on ``file://``) commits a snapshot's manifest exactly once, and a
compare-and-swap pointer (``read_pointer`` / ``swap_pointer``: ``If-Match`` on the ETag on S3, a
create-only generation log on ``file://``) moves ``latest.json`` without a lock and without losing
a concurrent update.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dialinsight_core.config import PROJECT_ROOT, Settings


class SortedParquet:
    """Point lookups on one Parquet table sorted by ``column`` in small row groups: the footer is
    read once and each row group's min/max of ``column`` kept as arrays, so a lookup of sorted
    ``values`` reads only the row groups whose range holds one of them (on S3 by ranged GETs), and
    a reader kept open across lookups never parses the footer again. Of those row groups it reads
    the key column first and whole rows only of the groups holding a key asked for. Reads cost
    O(values x row group), not O(table)."""

    def __init__(self, pf: pq.ParquetFile, column: str,
                 reopen: Callable[[pq.FileMetaData], pq.ParquetFile] | None = None):
        self._pf, self.column, self._reopen = pf, column, reopen
        md = self.metadata = pf.metadata
        # the Parquet leaf column of ``column`` (leaf order differs from field order after a nested field)
        j = next(k for k in range(md.num_columns) if md.schema.column(k).path == column)
        stats = [md.row_group(i).column(j).statistics for i in range(md.num_row_groups)]
        self.unbounded = [i for i, st in enumerate(stats) if st is None or not st.has_min_max]
        bounded = [i for i, st in enumerate(stats) if st is not None and st.has_min_max]
        self.type = pf.schema_arrow.field(column).type
        self.groups = np.array(bounded, dtype=np.int64)
        # in the column's own type (a uint64 key must not pass through float64 or int64)
        self.mins = pa.array([stats[i].min for i in bounded], self.type).to_numpy(zero_copy_only=False)
        self.maxs = pa.array([stats[i].max for i in bounded], self.type).to_numpy(zero_copy_only=False)
        self.rows = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.row_groups_read = self.row_groups_skipped = 0  # whole row groups read / never read in full
        if reopen is not None:  # a local file: no descriptor held between lookups (a run may keep hundreds)
            pf.close()

    @property
    def pf(self) -> pq.ParquetFile:
        """The file to read: the one kept open, or the local file opened again on its parsed footer."""
        return self._pf if self._reopen is None else self._reopen(self.metadata)

    def read(self, values: Sequence[Any], schema: pa.Schema | None = None) -> pa.Table:
        value_set = pa.array(values, self.type)
        want = value_set.to_numpy(zero_copy_only=False)
        if len(self.groups) and len(want):
            hit = np.searchsorted(want, self.maxs, "right") > np.searchsorted(want, self.mins, "left")
            groups = sorted([*self.groups[hit].tolist(), *self.unbounded])
        else:
            groups = list(self.unbounded) if len(want) else []
        pf = self.pf
        if groups and len(pf.schema_arrow) > 1:
            # the key column first (a fraction of the bytes), then whole rows of the groups that hit
            found = self._member(pf.read_row_groups(groups, columns=[self.column]).column(0), value_set, want)
            group_of = np.repeat(np.array(groups), [self.rows[g] for g in groups])
            groups = np.unique(group_of[found]).tolist()
        self.row_groups_read += len(groups)
        self.row_groups_skipped += self.metadata.num_row_groups - len(groups)
        tbl = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        if self._reopen is not None:
            pf.close()
        if tbl.num_rows:
            tbl = tbl.filter(self._member(tbl.column(self.column), value_set, want))
        return tbl.cast(schema) if schema is not None else tbl

    def _member(self, keys: pa.ChunkedArray, value_set: pa.Array, want: np.ndarray) -> np.ndarray:
        """Which ``keys`` are among the sorted ``want``: a binary search for integer keys (a lookup
        asks one set of values of every segment; ``is_in`` would hash the set again each time)."""
        if pa.types.is_integer(self.type) and keys.null_count == 0:
            k = keys.to_numpy()
            pos = np.minimum(np.searchsorted(want, k), max(len(want) - 1, 0))
            return want[pos] == k if len(want) else np.zeros(len(k), dtype=bool)
        return pc.is_in(keys, value_set=value_set).to_numpy(zero_copy_only=False)


class ObjectExistsError(FileExistsError):
    """A write-once key was written twice."""


class ObjectStore(ABC):
    """Minimal key/value interface over ``file://`` or ``s3://``."""

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        """Write atomically; with ``overwrite=False`` fail if the key exists."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone is not an error."""

    @abstractmethod
    def modified(self, key: str) -> float:
        """When ``key`` was last written (POSIX seconds)."""

    @abstractmethod
    def read_pointer(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """A small JSON pointer and its version (None, None when absent), for ``swap_pointer``."""

    @abstractmethod
    def swap_pointer(self, key: str, obj: dict[str, Any], version: str | None) -> bool:
        """Write ``obj`` only if the pointer is still at ``version`` (None: only if absent);
        False when someone else moved it first (re-read and decide again)."""

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    # helpers shared by both backends
    def write_json(self, key: str, obj: Any, *, overwrite: bool = True) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode(), overwrite=overwrite)

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_jsonl(self, key: str) -> list[Any]:
        """One JSON value per non-blank line (exports, evaluation inputs)."""
        return [json.loads(line) for line in self.read_bytes(key).decode("utf-8").splitlines() if line.strip()]

    def write_table(self, key: str, tbl: pa.Table, *, overwrite: bool = True, row_group_rows: int | None = None,
                    compression: str = "zstd", dictionary: bool = True) -> None:
        buf = io.BytesIO()
        pq.write_table(tbl, buf, compression=compression, row_group_size=row_group_rows, use_dictionary=dictionary)
        self.write_bytes(key, buf.getvalue(), overwrite=overwrite)

    def open_parquet(self, key: str) -> pq.ParquetFile:
        """A Parquet file that reads only what is asked of it (footer, chosen row groups) where the
        store can read byte ranges; this default reads the whole object."""
        return pq.ParquetFile(io.BytesIO(self.read_bytes(key)))

    def read_table(self, key: str, schema: pa.Schema | None = None) -> pa.Table:
        tbl = pq.read_table(io.BytesIO(self.read_bytes(key)))
        return tbl.cast(schema) if schema is not None else tbl

    def sorted_reader(self, key: str, column: str, lasting: bool = False) -> SortedParquet:
        """Point lookups on a Parquet object sorted by ``column`` (see ``SortedParquet``). A
        ``lasting`` reader is kept across many lookups (a local file store then holds its parsed
        footer, not an open descriptor)."""
        return SortedParquet(self.open_parquet(key), column)

    @contextmanager
    def table_writer(self, key: str, schema: pa.Schema, *, compression: str = "zstd",
                     dictionary: bool = True) -> Iterator[pq.ParquetWriter]:
        """A Parquet writer whose row groups go to a local spool file as they are written (memory
        holds one batch, not the table); the object appears whole at the end of the ``with``, or not
        at all when the block raises."""
        with tempfile.TemporaryDirectory(prefix="dialinsight-spool-") as tmp:
            path = Path(tmp) / "part.parquet"
            with pq.ParquetWriter(path, schema, compression=compression, use_dictionary=dictionary) as writer:
                yield writer
            self.put_file(key, path)

    @contextmanager
    def file_writer(self, key: str) -> Iterator[BinaryIO]:
        """A binary file spooled locally and stored under ``key`` at the end of the ``with`` (not at
        all when the block raises): large text outputs (JSONL exports) never sit whole in memory."""
        with tempfile.TemporaryDirectory(prefix="dialinsight-spool-") as tmp:
            path = Path(tmp) / "part"
            with open(path, "wb") as fh:
                yield fh
            self.put_file(key, path)

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file under ``key`` (atomically, like ``write_bytes``)."""
        self.write_bytes(key, path.read_bytes())

    def iter_batches(self, key: str, batch_size: int, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """The table at ``key`` in record batches of at most ``batch_size`` rows (row group by row group)."""
        for batch in parquet_batches(pq.ParquetFile(io.BytesIO(self.read_bytes(key))), batch_size):
            yield batch.cast(schema) if schema is not None else batch


def parquet_batches(pf: pq.ParquetFile, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """``pf.iter_batches(batch_size, columns=columns)``: the same batches (``batch_size`` rows each
    but the last, across row groups), read a row group at a time. pyarrow's own reader keeps what
    it decoded alive as it goes: over a 1M run's ``scored.parquet`` in 50,000-row batches its live
    memory climbed from 111 to 272 MB in 30 batches (docs/benchmarks.md). Here memory holds a row
    group and the rows carried into the next batch."""
    carry: pa.Table | None = None
    for i in range(pf.num_row_groups):
        tbl = pf.read_row_group(i, columns=columns)
        if carry is not None and carry.num_rows:
            tbl = pa.concat_tables([carry, tbl])
        full = tbl.num_rows // batch_size * batch_size
        if full:
            yield from tbl.slice(0, full).combine_chunks().to_batches(max_chunksize=batch_size)
        carry = tbl.slice(full)
    if carry is not None and carry.num_rows:
        yield from carry.combine_chunks().to_batches(max_chunksize=batch_size)


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}")
    return key


class FileObjectStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root
        self.uri = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic create-if-absent
                except FileExistsError:
                    raise ObjectExistsError(f"{self.url(key)} already exists") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.move(str(path), tmp)  # a rename when the spool is on the same file system
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def open_parquet(self, key: str) -> pq.ParquetFile:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(self.url(key))
        return pq.ParquetFile(path)  # not memory-mapped: pages read would count in the process's RSS

    def sorted_reader(self, key: str, column: str, lasting: bool = False) -> SortedParquet:
        if not lasting:
            return SortedParquet(self.open_parquet(key), column)
        path = self._path(key)

        def reopen(md: pq.FileMetaData) -> pq.ParquetFile:
            if not path.exists():
                raise FileNotFoundError(self.url(key))
            return pq.ParquetFile(path, metadata=md)

        return SortedParquet(self.open_parquet(key), column, reopen)

    def iter_batches(self, key: str, batch_size: int, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        for batch in parquet_batches(pq.ParquetFile(self._path(key)), batch_size):
            yield batch.cast(schema) if schema is not None else batch

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def modified(self, key: str) -> float:
        return self._path(key).stat().st_mtime

    # The pointer on a file system: every move is a create-only entry ``<key>.d/<generation>.json``
    # (os.link: exactly one writer creates generation n + 1, no lock), and ``<key>`` itself is a copy of
    # the newest entry that each writer refreshes until it is stable (so a slow writer never leaves an
    # older copy behind). Readers of ``<key>`` (people, ``datasets``) see some committed generation;
    # ``read_pointer`` sees the newest. A ``<key>`` without a log (an older deployment) is generation 0.
    def _log(self, key: str) -> Path:
        return self._path(key + ".d")

    def _generation(self, key: str) -> int:
        log = self._log(key)
        gens = [int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()] if log.is_dir() else []
        return max(gens, default=0)

    def read_pointer(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        gen = self._generation(key)
        path = self._log(key) / f"{gen:012d}.json" if gen else self._path(key)
        if not path.exists():
            return None, None
        return json.loads(path.read_bytes()), str(gen)

    def swap_pointer(self, key: str, obj: dict[str, Any], version: str | None) -> bool:
        gen = int(version or 0) + 1
        if version is None and self._path(key).exists():
            return False  # absent was expected
        data = json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode()
        try:
            self.write_bytes(f"{key}.d/{gen:012d}.json", data, overwrite=False)
        except ObjectExistsError:
            return False
        while True:  # publish the newest generation as <key>; stop once nobody moved it meanwhile
            newest = self._generation(key)
            self.write_bytes(key, (self._log(key) / f"{newest:012d}.json").read_bytes())
            if self._generation(key) == newest:
                return True

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )


class _RangedObject(io.RawIOBase):
    """A read-only, seekable file over one S3 object: each read is a ranged GET, so a Parquet
    reader fetches the footer and the row groups it needs, not the object."""

    def __init__(self, client: Any, bucket: str, key: str, size: int):
        super().__init__()
        self.client, self.bucket, self.key, self.size, self.pos = client, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{self.pos + n - 1}")["Body"]
        data = body.read()
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


class S3ObjectStore(ObjectStore):
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, region: str, multipart_mib: int = 64):
        import boto3  # lazy: boto3 import costs ~0.3 s

        self.multipart_bytes = multipart_mib << 20
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.url(key)) from None

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        if overwrite and len(data) > self.multipart_bytes:
            self._multipart(key, data)
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if not overwrite:
            kwargs["IfNoneMatch"] = "*"  # S3 conditional write: 412 if the key exists
        try:
            self.client.put_object(**kwargs)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                raise ObjectExistsError(f"{self.url(key)} already exists") from None
            raise

    def put_file(self, key: str, path: Path) -> None:
        """boto3's managed upload: multipart above ``s3_multipart_mib``, read from disk part by part."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.multipart_bytes, multipart_chunksize=self.multipart_bytes,
                                max_concurrency=4)
        self.client.upload_file(str(path), self.bucket, self._key(key), Config=config)

    def open_parquet(self, key: str) -> pq.ParquetFile:
        """Ranged GETs: the footer, then only the column chunks of the row groups read."""
        try:
            size = self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFoundError(self.url(key)) from None
            raise
        return pq.ParquetFile(_RangedObject(self.client, self.bucket, self._key(key), size))

    def iter_batches(self, key: str, batch_size: int, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        with tempfile.TemporaryDirectory(prefix="dialinsight-spool-") as tmp:
            path = Path(tmp) / "part.parquet"
            try:
                self.client.download_file(self.bucket, self._key(key), str(path))
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                    raise FileNotFoundError(self.url(key)) from None
                raise
            for batch in parquet_batches(pq.ParquetFile(path), batch_size):
                yield batch.cast(schema) if schema is not None else batch

    def _multipart(self, key: str, data: bytes) -> None:
        """A multipart upload: the object appears whole at CompleteMultipartUpload or not at all; each
        part is retried on its own (botocore's retries), and an upload that fails is aborted."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.multipart_bytes, multipart_chunksize=self.multipart_bytes,
                                max_concurrency=4)
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=config)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def modified(self, key: str) -> float:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["LastModified"].timestamp()

    def read_pointer(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None, None
        return json.loads(obj["Body"].read()), obj["ETag"]

    def swap_pointer(self, key: str, obj: dict[str, Any], version: str | None) -> bool:
        condition = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), **condition,
                                   Body=json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode())
        except self.client.exceptions.ClientError as exc:
            # 412: someone moved it; 409: a concurrent conditional write; 404: deleted under If-Match
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412", "ConditionalRequestConflict",
                                                              "409", "NoSuchKey", "404"}:
                return False
            raise
        return True

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)


def open_store(uri: str, settings: Settings | None = None) -> ObjectStore:
    """Open ``file://path`` (relative to the project root) or ``s3://bucket/prefix``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        raw = uri[len("file://") :]
        path = Path(raw)
        return FileObjectStore(path if path.is_absolute() else PROJECT_ROOT / path)
    if parsed.scheme == "s3":
        endpoint = settings.storage.s3_endpoint_url if settings else None
        region = settings.storage.s3_region if settings else "us-east-1"
        multipart = settings.storage.s3_multipart_mib if settings else 64
        return S3ObjectStore(parsed.netloc, parsed.path, endpoint or os.environ.get("AWS_ENDPOINT_URL"), region, multipart)
    raise ValueError(f"unsupported object store URI {uri!r} (use file:// or s3://)")


def store_from_settings(settings: Settings) -> ObjectStore:
    return open_store(settings.storage.uri, settings)


_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_segment(value: str) -> str:
    """Airflow run ids hold ':' and '+'; keep keys portable across file systems and S3."""
    return _SAFE.sub("_", value).strip("_") or "run"


@dataclass(frozen=True)
class RunPaths:
    """Keys of one run: a scratch area for stage hand-offs and the snapshot it may publish."""

    ds: str
    run_id: str

    @property
    def work(self) -> str:
        return f"work/ds={self.ds}/run={safe_segment(self.run_id)}"

    @property
    def snapshot(self) -> str:
        return f"snapshots/ds={self.ds}/run={safe_segment(self.run_id)}"

    @property
    def snapshot_id(self) -> str:
        return f"{self.ds}/{safe_segment(self.run_id)}"


LATEST_KEY = "snapshots/latest.json"
