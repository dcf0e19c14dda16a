"""Snapshot identity (dialinsight_core.publishing)."""

from __future__ import annotations


def test_ids_digest_is_the_hash_of_the_sorted_ids_joined_by_newlines():
    """Sorted in Arrow and hashed in chunks: the same digest as sorting and joining in Python
    (snapshots committed before keep their identity), across chunk edges and non-ASCII ids."""
    import hashlib
    import random

    import pyarrow as pa

    from dialinsight_core.publishing import ids_digest

    rng = random.Random(1)
    for n in (0, 1, 65_536, 65_537, 140_000):
        ids = [f"{rng.getrandbits(64):016x}" if i % 7 else f"p-é{i}" for i in range(n)]
        t = pa.table({"prompt_id": pa.chunked_array([ids[: n // 2], ids[n // 2:]], pa.string())})
        assert ids_digest(t) == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
