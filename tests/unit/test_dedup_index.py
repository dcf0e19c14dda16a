"""The persistent dedup index agrees with the in-memory LSH, reads only what a lookup needs, and
sees only committed snapshots of other dates."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from dialinsight_core import dedup_index
from dialinsight_core.dedup import LSHIndex, MinHasher
from dialinsight_core.dedup_index import DedupIndex, band_keys, index_snapshot, read_parts, sync
from dialinsight_core.schemas import DIALOGUE_INDEX, table
from dialinsight_core.storage import open_store

WORDS = ("apartment bedroom rent budget viewing balcony elevator floor deposit contract mortgage price "
         "租金 押金 看房 户型 电梯 阳台 预算 小区 地铁 合同").split()


def docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(40)) for _ in range(n)]


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/store")


def _sigs(texts: list[str]) -> np.ndarray:
    mh = MinHasher()
    return np.stack([mh.signature(t) for t in texts])


def test_band_keys_equal_bands_equal_keys():
    sigs = _sigs(docs(3, 1))
    edited = sigs[0].copy()
    edited[:8] += 1  # band 0 differs, bands 1..15 equal
    k = band_keys(np.stack([sigs[0], edited]))
    assert k.shape == (2, 16) and k[0, 0] != k[1, 0] and (k[0, 1:] == k[1, 1:]).all()
    assert len(set(band_keys(sigs).reshape(-1).tolist())) == 48  # distinct documents: distinct keys


@pytest.mark.parametrize("part_rows", [None, 37], ids=["whole", "in parts"])
def test_lookup_matches_in_memory_lsh(store, part_rows):
    """Same exact and near hits as the in-memory LSH over the same published documents, whether the
    snapshot was indexed whole or part by part (as ``sync`` reads a large one)."""
    old = docs(300, 2)
    mh = MinHasher()
    published = table(DIALOGUE_INDEX, [
        {"dialogue_id": f"d{i}", "content_hash": f"{i:064x}", "minhash": mh.signature(t).tolist(), "snapshot_id": ""}
        for i, t in enumerate(old)])
    parts = published if part_rows is None else (published.slice(i, part_rows) for i in range(0, 300, part_rows))
    assert index_snapshot(store, "2026-11-01/run_a", parts) == 300
    rng = random.Random(3)
    new = [old[5], old[7].replace("0", "1", 2) + " ok", *docs(50, 4), old[11][:-10]]
    hashes = [f"{5:064x}", "f" * 64, *("e" * 64 for _ in range(50)), "d" * 64]
    rng.shuffle(pairs := list(zip(new, hashes, strict=True)))
    new, hashes = [p[0] for p in pairs], [p[1] for p in pairs]
    sigs = _sigs(new)
    idx = DedupIndex(store, threshold=0.8)
    got = idx.lookup(hashes, sigs, allowed={"2026-11-01/run_a"})
    lsh = LSHIndex(threshold=0.8)
    for i, t in enumerate(old):
        lsh.add(f"d{i}", mh.signature(t))
    for h, sig, match in zip(hashes, sigs, got, strict=True):
        if h == f"{5:064x}":
            assert match is not None and match.exact and match.dialogue_id == "d5"
            continue
        want = lsh.query(sig)
        assert (match is None) == (not want)
        if want:
            assert (match.dialogue_id, round(match.similarity, 6)) == (want[0][0], round(want[0][1], 6))
    assert sum(m is not None for m in got) >= 3  # the copy, the small edit, the cut one


def test_only_allowed_snapshots_and_sync_is_incremental(store):
    mh = MinHasher()
    text = docs(1, 5)[0]
    row = {"dialogue_id": "d0", "content_hash": "a" * 64, "minhash": mh.signature(text).tolist(), "snapshot_id": ""}
    for snap in ("2026-11-01/a", "2026-11-02/b"):
        store.write_table(f"snapshots/{snap}/dialogues/index.parquet", table(DIALOGUE_INDEX, [row]))
    committed = [("2026-11-01/a", "snapshots/2026-11-01/a"), ("2026-11-02/b", "snapshots/2026-11-02/b")]
    assert sync(store, committed) == ["2026-11-01/a", "2026-11-02/b"]
    assert sync(store, committed) == []  # one listing, nothing re-read
    idx = DedupIndex(store)
    sig = mh.signature(text)[None, :]
    assert idx.lookup(["a" * 64], sig, allowed={"2026-11-02/b"})[0].snapshot_id == "2026-11-02/b"
    assert idx.lookup(["a" * 64], sig, allowed={"2026-11-03/c"}) == [None]  # e.g. the run's own date left out
    assert idx.lookup(["b" * 64], sig, allowed={"2026-11-01/a"})[0].similarity == 1.0  # near: same signature


@pytest.mark.parametrize(("part_rows", "piece_rows", "n"), [(40, 16, 300), (64, 32, 128), (64, 32, 0)],
                         ids=["uneven", "whole parts", "empty"])
def test_sync_reads_a_published_index_in_parts_and_writes_what_slicing_it_writes(tmp_path, monkeypatch,
                                                                                 part_rows, piece_rows, n):
    """``sync`` reads a snapshot's index a piece at a time into each part's signature matrix
    (publish's memory at 1M); the parts are the table's slices, and the segments written are byte
    for byte those of indexing the slices."""
    monkeypatch.setattr(dedup_index, "INDEX_PART_ROWS", part_rows)
    monkeypatch.setattr(dedup_index, "_PIECE_ROWS", piece_rows)
    mh = MinHasher()
    published = table(DIALOGUE_INDEX, [
        {"dialogue_id": f"d{i}", "content_hash": f"{i:064x}", "minhash": mh.signature(t).tolist(), "snapshot_id": "s"}
        for i, t in enumerate(docs(n, 6))])
    streamed, sliced = open_store(f"file://{tmp_path}/a"), open_store(f"file://{tmp_path}/b")
    # small row groups, so that pieces cross them
    streamed.write_table("snap/dialogues/index.parquet", published, row_group_rows=24)
    parts = list(read_parts(streamed, "snap/dialogues/index.parquet"))
    starts = range(0, max(n, 1), part_rows)
    assert [len(ids) for ids, _, _ in parts] == [min(part_rows, n - i) for i in starts]
    for (ids, hashes, sigs), i in zip(parts, starts, strict=True):
        want = published.slice(i, part_rows)
        assert ids == want.column("dialogue_id").to_pylist() and hashes == want.column("content_hash").to_pylist()
        assert sigs.dtype == np.uint64 and sigs.shape == (want.num_rows, 128)
        assert sigs.tolist() == want.column("minhash").to_pylist()
    assert sync(streamed, [("2026-11-01/r", "snap")]) == ["2026-11-01/r"]
    index_snapshot(sliced, "2026-11-01/r", (published.slice(i, part_rows) for i in starts))
    files = sorted(k for k in streamed.list("dedup/") if "/indexed/" not in k)
    assert files == sorted(k for k in sliced.list("dedup/") if "/indexed/" not in k) and files
    assert all(streamed.read_bytes(k) == sliced.read_bytes(k) for k in files)
    assert streamed.read_json("dedup/indexed/2026-11-01_r.json")["dialogues"] == n


def test_unequal_signatures_are_refused(store):
    rows = [{"dialogue_id": f"d{i}", "content_hash": f"{i:064x}", "minhash": list(range(128 - i)), "snapshot_id": ""}
            for i in range(2)]
    store.write_table("snap/dialogues/index.parquet", table(DIALOGUE_INDEX, rows))
    with pytest.raises(ValueError, match="unequal length"):
        sync(store, [("2026-11-01/r", "snap")])


def test_lookup_reads_only_the_buckets_of_its_keys(store):
    mh = MinHasher()
    old = docs(64, 6)
    index_snapshot(store, "s/1", table(DIALOGUE_INDEX, [
        {"dialogue_id": f"d{i}", "content_hash": f"{i:064x}", "minhash": mh.signature(t).tolist(), "snapshot_id": ""}
        for i, t in enumerate(old)]), buckets=256)
    idx = DedupIndex(store, buckets=256)
    idx.lookup(["f" * 64], _sigs(docs(1, 7)), allowed={"s/1"})
    assert idx.files_read <= 1 + 16 + 16  # one hash bucket, <= 16 band buckets, sigs of candidates only


def test_compact_folds_segments_and_drops_dead_snapshots(store):
    mh = MinHasher()
    texts = docs(40, 8)
    for j in range(3):
        index_snapshot(store, f"2026-11-0{j + 1}/r", table(DIALOGUE_INDEX, [
            {"dialogue_id": f"d{j}-{i}", "content_hash": f"{j}{i:063x}", "minhash": mh.signature(t).tolist(),
             "snapshot_id": ""} for i, t in enumerate(texts[j * 10:(j + 1) * 10])]))
    idx = DedupIndex(store)
    before = idx.lookup([f"1{3:063x}"], _sigs([texts[13]]), allowed={"2026-11-02/r"})
    assert before[0].dialogue_id == "d1-3"
    assert idx.compact(live={"2026-11-02/r", "2026-11-03/r"}) > 0
    assert all(len([k for k in store.list(f"dedup/{kind}/b={b:x}/") if k.endswith(".parquet")]) <= 1
               for kind in ("bands", "hashes", "sigs") for b in range(16))
    assert idx.lookup([f"1{3:063x}"], _sigs([texts[13]]), allowed={"2026-11-02/r"}) == before
    assert idx.lookup([f"0{3:063x}"], _sigs([texts[3]]), allowed={"2026-11-01/r"}) == [None]  # its rows are gone


def _index_rows(texts: list[str], tag: str, mh: MinHasher) -> list[dict]:
    return [{"dialogue_id": f"{tag}-{i}", "content_hash": hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(),
             "minhash": mh.signature(t).tolist(), "snapshot_id": ""} for i, t in enumerate(texts)]


def test_nightly_adds_stay_few_segments_and_lookups_read_what_they_ask(store, monkeypatch):
    """Twenty nights indexed one by one: size-tiered merges keep each bucket at <= log2(nights) + 1
    segments with no row twice, and a lookup of two dialogues reads row groups in proportion to its
    keys, not to the history: the statistics skip the rest."""
    import dialinsight_core.dedup_index as di

    monkeypatch.setattr(di, "ROW_GROUP_ROWS", {"bands": 8, "hashes": 2, "sigs": 2})
    mh = MinHasher()
    texts = docs(20 * 30, 9)
    nights = [f"2026-10-{d + 1:02d}/r" for d in range(20)]
    for d, snap in enumerate(nights):
        index_snapshot(store, snap, table(DIALOGUE_INDEX, _index_rows(texts[d * 30:(d + 1) * 30], f"n{d}", mh)), buckets=1)
    index_snapshot(store, nights[3], table(DIALOGUE_INDEX, _index_rows(texts[90:120], "n3", mh)), buckets=1)  # a rerun
    for kind in ("bands", "hashes", "sigs"):
        segs = [k for k in store.list(f"dedup/{kind}/b=0/") if k.endswith(".parquet")]
        assert 1 <= len(segs) <= 6, (kind, segs)  # log2(21) + 1
    refs = store.read_table(next(k for k in store.list("dedup/sigs/b=0/") if "merged" in k)).column("ref").to_pylist()
    assert len(refs) == len(set(refs))  # the rerun's rows were folded, not kept twice
    idx = DedupIndex(store, buckets=1)
    want = [texts[45], texts[301].replace("1", "2", 1)]
    got = idx.lookup(["0" * 64, "1" * 64], _sigs(want), allowed=set(nights))
    assert [m.dialogue_id for m in got] == ["n1-15", "n10-1"]
    read, skipped = idx.row_groups_read
    # 32 band keys, 2 candidates' signatures and 2 hashes can touch at most that many row groups per
    # segment; the other row groups of the 600-dialogue history are skipped
    assert read <= 36 * 6 and skipped > 0.8 * (read + skipped), (read, skipped)


def test_an_untiered_index_keeps_a_segment_per_add_and_no_file_open_between_lookups(store):
    """Ingest's run index: no merges (they would read the run's rows into memory), and its readers
    keep each segment's parsed footer, not an open file (a run adds three segments a batch)."""
    import os

    texts = docs(300, 3)
    sigs = _sigs(texts)
    idx = DedupIndex(store, buckets=1, tiered=False)
    for part in range(6):
        lo, hi = part * 50, part * 50 + 50
        idx.add("run", [f"d{i}" for i in range(lo, hi)], [hashlib.sha256(t.encode()).hexdigest() for t in texts[lo:hi]],
                sigs[lo:hi], part=part)
    assert idx.merges == 0 and len(store.list("dedup/bands/")) == 6
    fds = len(os.listdir("/proc/self/fd"))
    found = idx.lookup([hashlib.sha256(t.encode()).hexdigest() for t in texts[::7]], sigs[::7], {"run"})
    assert all(m is not None and m.exact and m.dialogue_id == f"d{i * 7}" for i, m in enumerate(found))
    assert len(idx._readers) == 18 and len(os.listdir("/proc/self/fd")) <= fds


def test_candidates_compared_in_chunks_decide_as_the_definition(store, monkeypatch):
    """Formulaic dialogues share bands with many indexed ones, so the candidate pairs grow with the
    index; compared a few at a time they give what the definition gives: exact first (smallest
    snapshot, id), else the most similar dialogue sharing a band, at or above the threshold, in an
    allowed snapshot (ties by snapshot, then id)."""
    rng = random.Random(11)
    base = docs(4, 12)
    # variants of four templates: most pairs share some band, many reach the threshold
    def variant(i: int) -> str:
        words = base[i % 4].split()
        for _ in range(rng.randrange(4)):
            words[rng.randrange(len(words))] = rng.choice(WORDS) + str(rng.randrange(100))
        return " ".join(words)

    texts = [variant(i) for i in range(240)]
    sigs = _sigs(texts)
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    snaps = ["2026-11-01/run_a", "2026-11-02/run_b", "2026-11-03/run_c"]
    idx = DedupIndex(store, threshold=0.8, buckets=16)
    for k, snap in enumerate(snaps):
        lo, hi = k * 60, k * 60 + 60
        idx.add(snap, [f"d{i:03d}" for i in range(lo, hi)], hashes[lo:hi], sigs[lo:hi])
    queries = [*range(150, 240), 3, 70, 125]  # new ones, and exact copies of indexed ones
    q_hashes, q_sigs = [hashes[i] for i in queries], sigs[queries]
    allowed = {snaps[0], snaps[2]}

    keys = band_keys(sigs)
    def definition(q: int) -> tuple[str, str, float, bool] | None:
        indexed = [(snaps[i // 60], f"d{i:03d}", i) for i in range(180) if snaps[i // 60] in allowed]
        same = sorted((s, d) for s, d, i in indexed if hashes[i] == hashes[q])
        if same:
            return (*same[0], 1.0, True)
        near = sorted((-float((sigs[i] == sigs[q]).mean()), s, d) for s, d, i in indexed
                      if (keys[i] == keys[q]).any() and (sigs[i] == sigs[q]).mean() >= 0.8)
        return (near[0][1], near[0][2], -near[0][0], False) if near else None

    want = [definition(q) for q in queries]
    whole = idx.lookup(q_hashes, q_sigs, allowed)
    monkeypatch.setattr(DedupIndex, "PAIR_CHUNK", 5)
    chunked = DedupIndex(store, threshold=0.8, buckets=16).lookup(q_hashes, q_sigs, allowed)
    as_tuples = [[(m.snapshot_id, m.dialogue_id, m.similarity, m.exact) if m else None for m in got]
                 for got in (whole, chunked)]
    assert as_tuples[0] == want and as_tuples[1] == want
    assert sum(w is not None and not w[3] for w in want) >= 30 and sum(w is not None and w[3] for w in want) >= 2


@pytest.mark.parametrize("kind", ["bands", "hashes", "sigs"])
def test_a_merge_read_by_row_groups_writes_what_a_merge_in_memory_writes(store, kind, monkeypatch):
    """Segments sorted by key alone (as ``add`` writes them), one key spanning row groups, the same
    (key, ref) in both inputs and in one, an empty input: the streamed merge writes the rows and
    row groups that ``_unique_rows`` of the concatenation writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dialinsight_core import dedup_index as di

    monkeypatch.setitem(di.ROW_GROUP_ROWS, kind, 7)  # many row groups from a few rows
    schema = {"bands": di.BANDS, "hashes": di.HASHES, "sigs": di.SIGS}[kind]
    key = di.KEYS[kind]
    rng = random.Random(kind)

    def segment(n: int, hot: int) -> pa.Table:
        refs = [rng.randrange(60) for _ in range(n)]
        if kind == "sigs":
            refs = sorted(set(refs))
            return pa.table({"ref": pa.array(refs, pa.uint64()), "snapshot_id": [f"s{r % 3}" for r in refs],
                             "dialogue_id": [f"d{r}" for r in refs],
                             "minhash": di._list_array(np.array([[r, r + 1] for r in refs], np.uint64).reshape(-1, 2))},
                            schema=schema)
        keys = [hot if i % 3 == 0 else rng.randrange(40) for i in range(n)]  # one key in a third of the rows
        col = pa.array(keys, pa.uint64()) if kind == "bands" else pa.array([f"h{k:03d}" for k in keys], pa.string())
        tbl = pa.table({key: col, "ref": pa.array(refs, pa.uint64())}, schema=schema)
        return tbl.take(pa.array(np.argsort(np.array(keys), kind="stable")))  # by key only, refs unsorted

    cases = [[segment(50, 5), segment(40, 5)], [segment(30, 11), segment(0, 0)], [segment(1, 3), segment(64, 3)]]
    a = segment(45, 9)
    cases.append([a, a])  # a snapshot indexed twice: nothing twice
    for i, tables in enumerate(cases):
        keys = []
        for j, t in enumerate(tables):
            keys.append(f"in/{i}-{j}.parquet")
            store.write_table(keys[-1], t, **di._segment_options(kind))
        n = di.merge_segments(store, keys, f"out/{i}.parquet", kind, schema)
        expected = di._unique_rows(pa.concat_tables(tables), key)
        store.write_table(f"want/{i}.parquet", expected, **di._segment_options(kind))
        got, want = (pq.ParquetFile(store._path(f"{d}/{i}.parquet")) for d in ("out", "want"))
        assert n == expected.num_rows == got.metadata.num_rows
        assert got.read().equals(want.read())
        assert [got.metadata.row_group(g).num_rows for g in range(got.num_row_groups)] == \
            [want.metadata.row_group(g).num_rows for g in range(want.num_row_groups)]
