"""ordered_map keeps order across worker processes and finishes in-process when the pool breaks."""

from __future__ import annotations

import multiprocessing
import os

from dialinsight_core.parallel import available_cores, ordered_map


def square(x: int) -> int:
    return x * x


def dies_in_a_worker_at_7(x: int) -> int:
    if x == 7 and multiprocessing.parent_process() is not None:
        os._exit(9)  # a worker killed mid-item (OOM killer, kill -9)
    return x * x


def test_order_kept_and_in_process_path_equal():
    items = list(range(50))
    assert list(ordered_map(square, items, workers=2, chunk=3)) == [x * x for x in items]
    assert list(ordered_map(square, iter(items), workers=1)) == [x * x for x in items]
    assert 1 <= available_cores() <= 8


def test_a_broken_pool_loses_nothing(caplog):
    items = list(range(40))
    assert list(ordered_map(dies_in_a_worker_at_7, iter(items), workers=2, chunk=2)) == [x * x for x in items]
    assert "worker pool broke" in caplog.text
