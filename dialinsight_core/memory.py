"""Giving freed heap memory back to the system (bottom layer).

glibc's malloc keeps what a process frees for reuse and returns it only from the top of a heap.
A long stage that allocates and frees a part at a time (publish's rejected pass: records pickled to
and from worker processes, rows built as Python objects) ends with hundreds of MiB free but kept
(170-300 MiB at 1M dialogues: docs/benchmarks.md). ``malloc_trim(0)`` returns the free pages of
every arena, not only the top. Elsewhere (no glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

__all__ = ["trim_heap"]


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
