"""ordered_map keeps order across worker processes and finishes in-process when the pool breaks."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from dialinsight_core.parallel import available_cores, ordered_map


def square(x: int) -> int:
    return x * x


def dies_in_a_worker_at_7(x: int) -> int:
    if x == 7 and multiprocessing.parent_process() is not None:
        os._exit(9)  # a worker killed mid-item (OOM killer, kill -9)
    return x * x


def mark(item: tuple[str, int]) -> int:
    Path(item[0], str(item[1])).touch()  # which items a worker has done, seen from the test
    return item[1]


def test_a_paused_caller_leaves_the_workers_ahead_items(tmp_path):
    """While the caller works on what it took (ingest's dedup lookup), the workers go on with up to
    ``ahead`` items, and no more: the window is what memory holds."""

    def done_after_pause(ahead: int) -> int:
        d = tmp_path / f"ahead-{ahead}"
        d.mkdir()
        results = ordered_map(mark, [(str(d), i) for i in range(200)], workers=2, chunk=4, ahead=ahead)
        assert next(results) == 0  # then the caller pauses
        n, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline:  # until the workers stop
            time.sleep(0.5)
            n, last = len(list(d.iterdir())), n
            if n == last:
                break
        assert list(results) == list(range(1, 200))
        return n

    assert done_after_pause(64) == 64  # 16 chunks of 4
    assert done_after_pause(0) == 16  # two chunks per worker


def test_order_kept_and_in_process_path_equal():
    items = list(range(50))
    assert list(ordered_map(square, items, workers=2, chunk=3)) == [x * x for x in items]
    assert list(ordered_map(square, iter(items), workers=1)) == [x * x for x in items]
    assert 1 <= available_cores() <= 8


def test_a_broken_pool_loses_nothing(caplog):
    items = list(range(40))
    assert list(ordered_map(dies_in_a_worker_at_7, iter(items), workers=2, chunk=2)) == [x * x for x in items]
    assert "worker pool broke" in caplog.text


def test_a_pool_found_broken_at_submit_loses_nothing(monkeypatch):
    """A pool can be found broken when work is handed to it, not only when a result is asked for:
    the part in hand then goes to the in-process fallback too (it once vanished, seen as a flaky
    run of the test above)."""
    real, calls = ProcessPoolExecutor.submit, []

    def submit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise BrokenProcessPool("a worker died")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit)
    items = list(range(30))
    assert list(ordered_map(square, items, workers=2, chunk=2)) == [x * x for x in items]
