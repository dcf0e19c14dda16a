"""Order-keeping parallel map over spawned worker processes (bottom layer), for the CPU-bound
steps of ingest (PII redaction, classification) and score (rules, grounding).

Workers are *spawned* (a fresh interpreter; forking a task process that holds threads and locks
can deadlock), so the program's main module must guard its entry point with ``if __name__ ==
"__main__":`` as Python requires for spawn; Airflow's, Celery's, pytest's and this project's
entry points do. If the pool breaks anyway (a worker killed, a main module without the guard),
the items not yet done are computed in this process: slower, never lost.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any, TypeVar

__all__ = ["available_cores", "ordered_map"]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def available_cores(cap: int = 8) -> int:
    """The cores this process may run on (its CPU affinity, as a container or cgroup sets it), at most ``cap``."""
    return max(1, min(cap, len(os.sched_getaffinity(0))))


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, chunk: int = 1,
                initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
                ahead: int = 0) -> Iterator[R]:
    """``map(fn, items)`` in order, over ``workers`` processes (in this process when ``workers`` <= 1).
    At most two chunks per worker, or ``ahead`` items if more, are in flight, so memory holds a
    bounded window of ``items``. Work is submitted only while the caller takes results: a caller
    that stops to work on a batch of them leaves the workers that window to go on with.
    ``fn`` and the items must pickle; ``initializer(*initargs)`` also runs here before a fallback."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    it = iter(items)
    in_flight = max(2 * workers, -(-ahead // chunk))  # chunks
    pending: deque[tuple[list[T], Future[list[R]] | None]] = deque()
    ctx = multiprocessing.get_context("spawn")
    broken: BaseException | None = None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        try:
            while True:
                while len(pending) < in_flight:
                    part = list(islice(it, chunk))
                    if not part:
                        break
                    # held before the submit, which raises once the pool is broken: the fallback below
                    # computes every held part, so a part taken from ``items`` is never lost
                    pending.append((part, None))
                    pending[-1] = (part, pool.submit(_run_chunk, fn, part))
                if not pending:
                    return
                part, fut = pending[0]
                assert fut is not None  # only the part whose submit raised has none
                result = fut.result()
                pending.popleft()
                yield from result
        except BrokenProcessPool as exc:
            broken = exc
            pool.shutdown(wait=False, cancel_futures=True)
    log.warning("worker pool broke (%s); finishing the remaining items in this process", broken)
    if initializer is not None:
        initializer(*initargs)
    for part, _ in pending:
        yield from map(fn, part)
    yield from map(fn, it)
