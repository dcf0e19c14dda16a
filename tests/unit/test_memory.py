"""``trim_heap`` gives freed heap pages back (publish calls it after each part it writes)."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest

from dialinsight_core.memory import arrow_pool, trim_heap


def _rss_mib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) >> 10 for line in fh if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_are_returned():
    # 100 KiB blocks stay in the heap (below glibc's mmap threshold once it has grown); every other
    # one freed leaves holes that malloc keeps and only a trim returns
    trim_heap()
    kept = [bytearray(100_000) for _ in range(3000)]  # about 286 MiB, touched
    del kept[::2]
    before = _rss_mib()
    assert trim_heap() is True
    assert before - _rss_mib() > 100  # about 143 MiB were free in holes
    del kept


@pytest.mark.parametrize("name", ["jemalloc", "system", "mimalloc"])
def test_arrow_pool_is_the_default_inside_and_restored_after(name):
    if name not in pa.supported_memory_backends():
        pytest.skip(f"this pyarrow has no {name} pool")
    before = pa.default_memory_pool().backend_name
    with arrow_pool(name) as pool:
        assert pool.backend_name == name and pa.default_memory_pool().backend_name == name
        kept = pa.array(range(100_000))  # allocated from the pool, outlives the block
        assert pool.bytes_allocated() >= kept.nbytes
    assert pa.default_memory_pool().backend_name == before
    assert kept.sum().as_py() == sum(range(100_000))


def test_arrow_pool_default_or_missing_leaves_arrow_s_own(monkeypatch, caplog):
    before = pa.default_memory_pool().backend_name
    with arrow_pool("default") as pool:
        assert pool.backend_name == before
    monkeypatch.setattr(pa, "supported_memory_backends", lambda: [before])
    other = next(n for n in ("jemalloc", "system") if n != before)
    with arrow_pool(other) as pool:
        assert pool.backend_name == before
    assert f"no {other} memory pool" in caplog.text
