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


def test_export_writer_counts_each_split_s_distinct_dialogues_across_parts(tmp_path):
    """The manifest's dialogues per split: a dialogue whose prompts come in several parts counts once."""
    from dialinsight_core.config import ExportSettings
    from dialinsight_core.publishing.exports import ExportWriter, split_of

    cfg = ExportSettings(formats=["openai"], validation_fraction=0.5)
    msgs = [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]

    def part(rows: list[tuple[str, str]]) -> pa.Table:
        return pa.table({"prompt_id": [p for p, _ in rows], "dialogue_id": [d for _, d in rows],
                         "messages": [msgs] * len(rows)})

    dialogues = [f"d{i}" for i in range(40)]
    parts = [part([(f"{d}-a", d) for d in dialogues[:30]]), part([(f"{d}-b", d) for d in dialogues[10:]])]
    with ExportWriter(FileObjectStore(tmp_path), "snap", cfg, [], 0) as writer:
        for p in parts:
            writer.add(p)
        out = writer.close()
    want = {s: sum(split_of(d, cfg) == s for d in dialogues) for s in ("train", "validation")}
    assert out["dialogues"] == want and sum(want.values()) == 40 and all(want.values())
    assert out["counts"] == {s: {"domain": 0, "mixin": 0} | {"domain": sum(
        split_of(d, cfg) == s for p in parts for d in p.column("dialogue_id").to_pylist())} for s in want}


def test_lookup_follows_parts_in_shard_order_without_searching_every_id(tmp_path):
    """Parts in shard order (as publish reads them) are found in the shard read last and the next
    ones; a part out of order, or one past more than ``ahead`` shards in a row that hold none of it,
    is found by searching every id. Either way the rows are the prompts asked for."""
    store = FileObjectStore(tmp_path)
    keys, all_ids = [], []
    for s in range(8):
        ids = [f"p{s}-{i}" for i in range(5 if s != 3 else 0)]  # shard 3 is empty: a part skips it
        keys.append(f"shards/shard-{s}.parquet")
        store.write_table(keys[-1], _shard(ids).cast(pa.schema([("prompt_id", pa.string()), ("messages", pa.string())])))
        all_ids += ids
    lookup = PromptLookup(store, keys, ahead=1)
    in_order = [all_ids[i:i + 7] for i in range(0, len(all_ids), 7)]  # parts span 2 shards, or 2, 3 (empty), 4 and 5
    for part in in_order:
        got = lookup.take(pa.array(part + part[:2]))  # repeated ids: one row each
        assert sorted(got.column("prompt_id").to_pylist()) == sorted(part)
    assert lookup.searches == 0 and lookup.shards_read == 8 and lookup._index is None  # the run's ids never read
    lookup.rewind()  # a second pass in shard order (publish's rejected records) walks from the first shard
    for part in in_order[::2]:
        assert sorted(lookup.take(pa.array(part)).column("prompt_id").to_pylist()) == sorted(part)
    assert lookup.searches == 0 and lookup._index is None
    got = lookup.take(pa.array(["p1-0", "p7-4", "p0-3"]))  # out of order
    assert sorted(got.column("prompt_id").to_pylist()) == ["p0-3", "p1-0", "p7-4"] and lookup.searches == 1
    assert lookup.take(pa.array([], pa.string())).num_rows == 0
    with pytest.raises(KeyError, match="did not write"):
        lookup.take(pa.array(["p2-0", "nope"]))
    near = PromptLookup(store, keys, ahead=0)  # stops at a shard that holds none of the part: the empty one
    for part in in_order:
        assert sorted(near.take(pa.array(part)).column("prompt_id").to_pylist()) == sorted(part)
    assert near.searches == 1
