"""Writers racing on one compare-and-swap pointer (``ObjectStore.swap_pointer``)."""

from __future__ import annotations

import threading

from dialinsight_core.storage import ObjectStore


def increment_concurrently(store: ObjectStore, key: str, threads: int, each: int) -> list[int]:
    """``threads`` writers each add one to ``{"n": …}`` at ``key`` ``each`` times, re-reading after a
    lost swap; returns the value every successful swap wrote."""
    wins: list[int] = []

    def bump() -> None:
        for _ in range(each):
            while True:
                obj, version = store.read_pointer(key)
                if store.swap_pointer(key, {"n": obj["n"] + 1}, version):
                    wins.append(obj["n"] + 1)
                    break

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return wins
