"""``trim_heap`` gives freed heap pages back (publish calls it after each part it writes)."""

from __future__ import annotations

import sys

import pytest

from dialinsight_core.memory import trim_heap


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
