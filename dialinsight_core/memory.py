"""Giving freed heap memory back to the system (bottom layer).

glibc's malloc keeps what a process frees for reuse and returns it only from the top of a heap.
A long stage that allocates and frees a part at a time (publish's rejected pass: records pickled to
and from worker processes, rows built as Python objects) ends with hundreds of MiB free but kept
(170-300 MiB at 1M dialogues: docs/benchmarks.md). ``malloc_trim(0)`` returns the free pages of
every arena, not only the top. Elsewhere (no glibc) it does nothing.

Arrow's own allocations go through its memory pool. Its default, mimalloc, kept freed pages of its
arena mapped through publish's passes (its 1 GiB arena held 495-656 MiB of RSS against 280-370
MiB of live Arrow bytes at 1M); on jemalloc for the stage, publish peaked at 932 MiB instead of
1,009 (886 with the whole process on it). ``arrow_pool`` selects the pool for one stage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import pyarrow as pa

__all__ = ["arrow_pool", "trim_heap"]

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Return the heap's free pages to the system; True where glibc did (it found some to return)."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


@contextmanager
def arrow_pool(name: str) -> Iterator[pa.MemoryPool]:
    """Arrow's default memory pool is ``name`` (``jemalloc``, ``mimalloc``, ``system``; ``default``:
    leave it) inside the block, and what it was after. A pool this pyarrow lacks leaves the default,
    with a warning. Buffers allocated inside are freed to their own pool whenever they die."""
    before = pa.default_memory_pool()
    if name == "default" or name == before.backend_name:
        yield before
        return
    if name not in pa.supported_memory_backends():
        log.warning("pyarrow has no %s memory pool here; keeping %s", name, before.backend_name)
        yield before
        return
    pool = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool,
            "system": pa.system_memory_pool}[name]()
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(before)
