"""publishing.examples.PromptLookup: a run's prompts by id, a shard at a time."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dialinsight_core.publishing.examples import PromptLookup
from dialinsight_core.storage import FileObjectStore


def _shard(ids: list[str]) -> pa.Table:
    return pa.table({"prompt_id": ids, "messages": [f"[{{\"role\": \"user\", \"content\": \"{i}\"}}]" for i in ids]})


def test_lookup_reads_a_shard_only_when_a_part_leaves_the_last_one(tmp_path):
    store = FileObjectStore(tmp_path)
    keys = []
    for s in range(3):
        keys.append(f"shards/shard-{s}.parquet")
        store.write_table(keys[-1], _shard([f"p{s}-{i}" for i in range(4)]))
    lookup = PromptLookup(store, keys)
    got = lookup.take(pa.array(["p0-2", "p0-0"]))
    assert sorted(got.column("prompt_id").to_pylist()) == ["p0-0", "p0-2"] and lookup.shards_read == 1
    assert lookup.take(pa.array(["p0-3"])).column("messages").to_pylist() == ['[{"role": "user", "content": "p0-3"}]']
    assert lookup.shards_read == 1  # still the shard read last
    across = lookup.take(pa.array(["p1-1", "p2-0", "p0-1"]))  # a part that spans shards reads each it needs
    assert sorted(across.column("prompt_id").to_pylist()) == ["p0-1", "p1-1", "p2-0"]
    with pytest.raises(KeyError, match="did not write"):
        lookup.take(pa.array(["p0-1", "nope"]))
