from __future__ import annotations

import pyarrow as pa
import pytest

from dialinsight_core.config import load_settings
from dialinsight_core.storage import FileObjectStore, ObjectExistsError, RunPaths, open_store, safe_segment


def _roundtrip(store):
    tbl = pa.table({"a": [1, 2], "b": ["x", "中"]})
    store.write_table("t/one.parquet", tbl)
    assert store.read_table("t/one.parquet").equals(tbl)
    store.write_json("t/m.json", {"k": "值"})
    assert store.read_json("t/m.json") == {"k": "值"}
    assert store.exists("t/m.json") and not store.exists("t/none.json")
    assert store.list("t/")[:2] == ["t/m.json", "t/one.parquet"]
    store.write_bytes("t/once", b"1", overwrite=False)
    with pytest.raises(ObjectExistsError):
        store.write_bytes("t/once", b"2", overwrite=False)
    assert store.read_bytes("t/once") == b"1"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("t/missing")
    with pytest.raises(ValueError):
        store.read_bytes("../escape")
    _streamed(store)
    _matching(store)


def _matching(store):
    """A sorted reader returns exactly the rows whose key was asked for, and reads only the row
    groups whose statistics can hold one (on S3 by ranged GETs, not the whole object)."""
    keys = list(range(0, 20000, 2))
    store.write_table("t/sorted.parquet", pa.table({"k": pa.array(keys, pa.uint64()), "v": [f"行{k}" for k in keys]}),
                      row_group_rows=500)
    reader = store.sorted_reader("t/sorted.parquet", "k")
    got = reader.read([4, 5, 9998, 19998])
    assert got.column("k").to_pylist() == [4, 9998, 19998] and got.column("v").to_pylist() == ["行4", "行9998", "行19998"]
    assert (reader.row_groups_read, reader.row_groups_skipped) == (3, 17)
    # 1 and 3 fall in the first group's range but are not in it: its key column is read, its rows never
    assert reader.read([1, 3]).num_rows == 0
    assert (reader.row_groups_read, reader.row_groups_skipped) == (3, 37)
    # integer keys are matched by binary search: past the last key, and at the top of uint64
    assert reader.read([19_998, 19_999, 2**64 - 1]).column("k").to_pylist() == [19_998]
    with pytest.raises(FileNotFoundError):
        store.sorted_reader("t/missing.parquet", "k")


def _streamed(store):
    """A table written batch by batch appears whole at the end, reads back in batches, and a
    writer whose block raises leaves nothing behind."""
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    with store.table_writer("t/streamed.parquet", schema) as w:
        for start in range(0, 5000, 1000):
            w.write_table(pa.table({"i": range(start, start + 1000), "s": ["房"] * 1000}, schema=schema))
        assert not store.exists("t/streamed.parquet")  # not visible before the end
    batches = list(store.iter_batches("t/streamed.parquet", 700))
    assert max(b.num_rows for b in batches) <= 700 and sum(b.num_rows for b in batches) == 5000
    assert store.read_table("t/streamed.parquet").column("i").to_pylist() == list(range(5000))
    with pytest.raises(RuntimeError), store.table_writer("t/broken.parquet", schema) as w:
        w.write_table(pa.table({"i": [1], "s": ["x"]}, schema=schema))
        raise RuntimeError("a stage failed mid-table")
    assert not store.exists("t/broken.parquet")
    with pytest.raises(FileNotFoundError):
        list(store.iter_batches("t/missing.parquet", 10))


def test_file_store(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert isinstance(store, FileObjectStore)
    _roundtrip(store)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temp files left behind


def test_s3_store_against_s3_protocol_server(moto_s3, s3_bucket):
    settings = load_settings(environ={"DIALINSIGHT__STORAGE__URI": f"s3://{s3_bucket}/pre/fix",
                                      "DIALINSIGHT__STORAGE__S3_ENDPOINT_URL": moto_s3})
    store = open_store(settings.storage.uri, settings)
    _roundtrip(store)
    assert store.url("a/b") == f"s3://{s3_bucket}/pre/fix/a/b"
    gets, real = [], store.client.get_object

    def counted(**kw):
        resp = real(**kw)
        gets.append((kw.get("Range"), resp["ContentLength"]))
        return resp

    big = pa.table({"k": pa.array(range(200_000), pa.uint64()), "v": [f"v{k}" for k in range(200_000)]})
    store.write_table("t/big.parquet", big, row_group_rows=5000)
    store.client.get_object = counted
    assert store.sorted_reader("t/big.parquet", "k").read([99_998]).column("v").to_pylist() == ["v99998"]
    size = store.client.head_object(Bucket=s3_bucket, Key="pre/fix/t/big.parquet")["ContentLength"]
    # ranged GETs only: the footer (pyarrow asks for its last 64 KiB) and one row group
    assert gets and all(r for r, _ in gets) and sum(n for _, n in gets) < size / 4, (gets, size)


def test_run_paths_are_portable():
    p = RunPaths("2026-11-25", "manual__2026-11-25T22:27:16.499727+00:00")
    assert p.snapshot == "snapshots/ds=2026-11-25/run=manual__2026-11-25T22_27_16.499727_00_00"
    assert p.work.startswith("work/ds=2026-11-25/")
    assert safe_segment("::") == "run"


def test_sorted_reader_finds_its_column_after_nested_fields():
    """Parquet numbers leaf columns, not fields: after a list and a struct, the key is leaf 3, not 2."""
    import io

    import pyarrow.parquet as pq

    from dialinsight_core.storage import SortedParquet

    t = pa.table({"l": pa.array([[1, 2]] * 6, pa.list_(pa.int64())), "s": pa.array([{"a": 1, "b": 2}] * 6),
                  "k": pa.array([1, 3, 5, 7, 9, 11], pa.uint64())})
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=2)
    reader = SortedParquet(pq.ParquetFile(io.BytesIO(buf.getvalue())), "k")
    assert reader.read([5, 6, 11]).column("k").to_pylist() == [5, 11]
    assert (reader.row_groups_read, reader.row_groups_skipped) == (2, 1)


@pytest.mark.parametrize("batch_size", [1, 5, 7, 8, 13, 64, 1000])
def test_parquet_batches_are_pyarrows_batches_read_a_row_group_at_a_time(tmp_path, batch_size):
    """The same batches as ``ParquetFile.iter_batches`` (sizes across row groups, the columns
    asked, list columns, an empty file), so every stream may use it for its bounded memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dialinsight_core.storage import parquet_batches

    n = 61
    tbl = pa.table({"id": [f"r{i}" for i in range(n)], "x": list(range(n)),
                    "sig": [[i, i + 1, i + 2] for i in range(n)], "zh": ["看房" * (i % 3) for i in range(n)]})
    for rows_per_group in (1, 7, 8, 100):
        path = tmp_path / f"t{rows_per_group}.parquet"
        pq.write_table(tbl, path, row_group_size=rows_per_group)
        for cols in (None, ["sig", "zh"]):
            want = list(pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=cols))
            got = list(parquet_batches(pq.ParquetFile(path), batch_size, cols))
            assert [b.num_rows for b in got] == [b.num_rows for b in want]
            assert all(g.equals(w) for g, w in zip(got, want, strict=True))
    empty = tmp_path / "empty.parquet"
    pq.write_table(tbl.slice(0, 0), empty)
    assert list(parquet_batches(pq.ParquetFile(empty), batch_size)) == \
        list(pq.ParquetFile(empty).iter_batches(batch_size=batch_size))
