"""Complete rows: every published (and rejected) row is a training example on its own.

The scored record knows its answer and scores; the prompt, the instruction and the dialogue it
came from live in other tables. Publishing joins them once, so a user needs no join and no code of
ours: ``messages`` is the chat exactly as sent to the labeling model plus the answer as the last
(assistant) message, next to the instruction text, its chain (parent, operator, round, origin),
the source file and the sampling parameters (docs/dataset.md).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core import schemas
from dialinsight_core.pii import Redactor
from dialinsight_core.storage import ObjectStore


def complete(records: pa.Table, prompts: pa.Table, instructions: pa.Table, dialogues: pa.Table,
             sampling_params: dict[str, Any], lineage: dict[str, str], schema: pa.Schema) -> pa.Table:
    """``records`` (SCORED, or REJECTED with reasons) -> ``schema`` (PUBLISHED or PUBLISHED_REJECTED)."""
    messages_by = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("messages").to_pylist(), strict=True))
    instr_by = {r["instruction_id"]: r for r in
                instructions.select(["instruction_id", "text", "parent_id", "operator", "round", "origin"]).to_pylist()}
    dlg_by = {r["dialogue_id"]: r for r in dialogues.select(["dialogue_id", "source", "source_file"]).to_pylist()}
    params = json.dumps(sampling_params, sort_keys=True)
    rows = []
    for r in records.to_pylist():
        instr = instr_by.get(r["instruction_id"], {})
        dlg = dlg_by.get(r["dialogue_id"], {})
        sent = json.loads(messages_by[r["prompt_id"]])
        r.update(
            messages=[{"role": m["role"], "content": m["content"]} for m in sent]
            + [{"role": "assistant", "content": r["output_text"] or ""}],
            instruction_text=instr.get("text"),
            instruction_parent_id=instr.get("parent_id"),
            instruction_operator=instr.get("operator"),
            instruction_round=instr.get("round"),
            instruction_origin=instr.get("origin"),
            source=dlg.get("source"),
            source_file=dlg.get("source_file"),
            sampling_params=params,
            **lineage,
        )
        rows.append(r)
    return schemas.table(schema, rows)


class PromptLookup:
    """A run's prompts found by id a part at a time, without the run's prompts in memory: a shard's
    prompts are read when a part asks for one of them. Records reach publish shard by shard (score
    reads one label shard at a time, the gate keeps its order), so each shard is read about once
    per pass; memory holds the last shard read.

    A part is looked for first in the shard read last and the shards after it, in order, until it is
    found or ``ahead`` shards in a row held none of it (a part of 8,192 rejected records spans about
    six shards at 1M dialogues). Finding a part's shards through every id of the run builds a hash
    table of them all (0.67 s and 75 MiB a part at 1M dialogues, 1.7M prompts: docs/benchmarks.md),
    so that is left for parts out of order and for ids no shard holds; the run's ids (about 23 bytes
    a prompt) are read on the first such part, not before. A pass that starts over in shard order
    (publish's rejected records, after its accepted ones) calls ``rewind`` first."""

    def __init__(self, store: ObjectStore, shard_keys: list[str], ahead: int = 3):
        self.store, self.keys, self.ahead = store, shard_keys, ahead
        self._index: tuple[pa.Array, np.ndarray] | None = None  # every prompt id, and its shard
        self._shard: tuple[int, pa.Table] | None = None
        self._pos = 0  # where the next part's walk starts: the shard read last
        self.shards_read = 0
        self.searches = 0  # parts whose shards were found through every id (out of order, or unknown ids)

    def _read(self, i: int) -> pa.Table:
        if self._shard is None or self._shard[0] != i:
            self._shard = (i, self.store.open_parquet(self.keys[i]).read(columns=["prompt_id", "messages"]))
            self.shards_read += 1
        self._pos = i
        return self._shard[1]

    def rewind(self) -> None:
        """The next part's walk starts at the first shard (a new pass in shard order)."""
        self._pos = 0

    def _ids(self) -> tuple[pa.Array, np.ndarray]:
        if self._index is None:
            ids = [self.store.open_parquet(k).read(columns=["prompt_id"]).column("prompt_id").combine_chunks()
                   for k in self.keys]
            self._index = (pa.concat_arrays(ids) if ids else pa.array([], type=pa.string()),
                           np.repeat(np.arange(len(ids), dtype=np.int32), [len(i) for i in ids]))  # 4 bytes a prompt
        return self._index

    def take(self, prompt_ids: pa.Array | pa.ChunkedArray) -> pa.Table:
        """``prompt_id`` and ``messages`` of these prompts (any order); KeyError for an unknown id."""
        left = pc.unique(prompt_ids)
        if not len(left):
            return schemas.table(schemas.PROMPTS, []).select(["prompt_id", "messages"])
        parts: list[pa.Table] = []
        i, misses = self._pos, 0
        while i < len(self.keys) and misses <= self.ahead:  # in order: this shard, then the next ones
            shard = self._read(i)
            found = shard.filter(pc.is_in(shard.column("prompt_id"), value_set=left))
            if found.num_rows:
                misses = 0
                parts.append(found)
                left = pc.filter(left, pc.invert(pc.is_in(left, value_set=found.column("prompt_id"))))
                if not len(left):
                    return pa.concat_tables(parts)
            else:
                misses += 1
            i += 1
        self.searches += 1
        ids, shard_of = self._ids()
        pos = pc.index_in(left, value_set=ids)
        if pos.null_count:
            missing = pc.filter(left, pc.is_null(pos)).to_pylist()[:5]
            raise KeyError(f"{pos.null_count} records name prompts that build_prompts did not write, e.g. {missing}")
        for i in np.unique(shard_of[pos.to_numpy()]):
            shard = self._read(int(i))
            parts.append(shard.filter(pc.is_in(shard.column("prompt_id"), value_set=left)))
        return pa.concat_tables(parts)  # not empty: every id left was found in a shard


# the fields of a rejected row that carry the model's own words (and the evidence quoting them)
ANSWER_FIELDS = ("output_text", "output_json", "quality_findings", "reason_detail", "judge_rationale")


def redact_answers(rejected: pa.Table) -> pa.Table:
    """Rejected rows are published so a person can read why; some were rejected *because* the answer
    leaks personal data (``pii_leak``), and the evidence quotes it. Redact the answer, the assistant
    message (of complete rows; ``complete`` makes it from the answer) and every field quoting it with
    the ingest redactor before they reach a snapshot."""
    rows = rejected.to_pylist()
    for r in rows:
        redact = Redactor()
        redact.learn_names([r[f] for f in ANSWER_FIELDS if isinstance(r.get(f), str)])
        for f in ANSWER_FIELDS:
            if isinstance(r.get(f), str):
                r[f] = redact(r[f])
        if r.get("messages") and r["messages"][-1]["role"] == "assistant":
            r["messages"][-1] = {"role": "assistant", "content": r["output_text"] or ""}
    return pa.Table.from_pylist(rows, schema=rejected.schema)
