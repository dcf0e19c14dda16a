"""Record accounting across every hand-off of one run, by id (tests/reliability).

``audit`` reads what each stage wrote (its work tables) and what the snapshot holds, and checks
that each record that entered a stage left it exactly once as accepted, rejected or quarantined,
and that what one stage handed on is what the next one took in. It returns the row of the
reliability table (docs/reliability.md) with ``lost`` and ``duplicated`` counts; a caller asserts
they are 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dialinsight_core import schemas
from dialinsight_core.runs.context import RunContext
from dialinsight_core.storage import LATEST_KEY, ObjectStore


def _ids(store: ObjectStore, keys: list[str], column: str) -> list[str]:
    out: list[str] = []
    for k in keys:
        if store.exists(k):
            out += store.read_table(k).column(column).to_pylist()
    return out


def _compare(name: str, entered: list[str], left: list[str], problems: list[str]) -> tuple[int, int]:
    """(lost, duplicated) between what entered a hand-off and what left it."""
    c_in, c_out = Counter(entered), Counter(left)
    lost = sum((c_in - c_out).values())  # multiplicities count: an id that left twice is one duplicate
    dup = sum((c_out - c_in).values())
    if lost or dup:
        problems.append(f"{name}: {lost} lost, {dup} duplicated")
    return lost, dup


def audit(ctx: RunContext) -> dict[str, Any]:
    store, k = ctx.store, ctx.key
    problems: list[str] = []
    lost = dup = 0
    ingest_stats = store.read_json(k("ingest/stats.json"))
    kept = _ids(store, [k("ingest/dialogues.parquet")], "dialogue_id")
    q_ingest = _ids(store, [k("ingest/quarantined.parquet")], "record_id")
    # ingest: records read = kept + quarantined (inputs have no common id before parsing: by count)
    if ingest_stats["files_read"] != len(kept) + len(q_ingest):
        problems.append(f"ingest: {ingest_stats['files_read']} read, {len(kept)} kept + {len(q_ingest)} quarantined")
        lost += max(ingest_stats["files_read"] - len(kept) - len(q_ingest), 0)
    if len(set(kept)) != len(kept):
        dup += len(kept) - len(set(kept))
        problems.append("ingest: duplicated dialogue ids")
    prompts = store.read_table(k("prompts/prompts.parquet"), schemas.PROMPTS)
    q_prompts = _ids(store, [k("prompts/quarantined.parquet")], "record_id")
    prompted = sorted(set(prompts.column("dialogue_id").to_pylist()))
    a, b = _compare("ingest->prompts", kept, prompted + q_prompts, problems)
    lost, dup = lost + a, dup + b
    prompt_ids = prompts.column("prompt_id").to_pylist()
    shard_keys = [x for x in store.list(k("prompts/shards/"))  # the prompt shards (turns-*.parquet beside them)
                  if x.rsplit("/", 1)[-1].startswith("shard-") and x.endswith(".parquet")]
    a, b = _compare("prompts->shards", prompt_ids, _ids(store, shard_keys, "prompt_id"), problems)
    lost, dup = lost + a, dup + b
    label_dirs = sorted({x.rsplit("/", 1)[0] for x in store.list(k("label/")) if x.endswith("labels.parquet")})
    labeled = _ids(store, [f"{d}/labels.parquet" for d in label_dirs], "prompt_id")
    q_label = _ids(store, [f"{d}/quarantined.parquet" for d in label_dirs], "record_id")
    a, b = _compare("shards->label", prompt_ids, labeled + q_label, problems)
    lost, dup = lost + a, dup + b
    scored = _ids(store, [k("score/scored.parquet")], "prompt_id")
    a, b = _compare("label->score", labeled, scored, problems)
    lost, dup = lost + a, dup + b
    accepted = _ids(store, [k("gate/accepted.parquet")], "prompt_id")
    rejected = _ids(store, [k("gate/rejected.parquet")], "prompt_id")
    a, b = _compare("score->gate", scored, accepted + rejected, problems)
    lost, dup = lost + a, dup + b
    row: dict[str, Any] = {"records_in": ingest_stats["files_read"], "prompts": len(prompt_ids),
                           "accepted": len(accepted), "rejected": len(rejected),
                           "quarantined_dialogues": len(q_ingest) + len(q_prompts), "quarantined_prompts": len(q_label)}
    manifest_key = f"{ctx.paths.snapshot}/manifest.json"
    if store.exists(manifest_key):
        manifest = store.read_json(manifest_key)
        snap = ctx.paths.snapshot
        data = _ids(store, [f"{snap}/{f}" for f in manifest["files"]["data"]], "prompt_id")
        rej = _ids(store, [f"{snap}/{f}" for f in manifest["files"]["rejected"]], "prompt_id")
        quar = _ids(store, [f"{snap}/{f}" for f in manifest["files"]["quarantined"]], "record_id")
        for name, entered, left in (("gate->snapshot data", accepted, data), ("gate->snapshot rejected", rejected, rej),
                                    ("stages->snapshot quarantined", q_ingest + q_prompts + q_label, quar)):
            a, b = _compare(name, entered, left, problems)
            lost, dup = lost + a, dup + b
        counts = manifest["counts"]
        if (counts["quarantined_dialogues"], counts["quarantined_prompts"]) != \
                (row["quarantined_dialogues"], row["quarantined_prompts"]):
            problems.append(f"manifest counts {counts} differ from the stages' tables {row}")
    row.update(lost=lost, duplicated=dup, problems=problems)
    return row


def latest_state(store: ObjectStore) -> dict[str, Any]:
    """Where ``latest.json`` points and whether that snapshot is complete: committed (manifest),
    every file the manifest lists present, and gate-passed (its batch gate succeeded)."""
    latest, _ = store.read_pointer(LATEST_KEY)
    if latest is None:
        return {"snapshot_id": None, "complete": None}
    manifest = store.read_json(latest["manifest"])
    base = latest["manifest"].rsplit("/", 1)[0]
    files = [*manifest["files"]["data"], *manifest["files"]["rejected"], *manifest["files"]["quarantined"],
             manifest["files"]["card"], manifest["files"]["report"]]
    missing = [f for f in files if not store.exists(f"{base}/{f}")]
    tables = [store.read_table(f"{base}/{f}") for f in manifest["files"]["data"]]
    rows = sum(t.num_rows for t in tables) if tables else 0
    complete = not missing and rows == manifest["counts"]["accepted"] and bool(manifest["gx"]["batch_gate_success"])
    return {"snapshot_id": latest["snapshot_id"], "ds": latest.get("ds"), "complete": complete, "missing": missing}


def uncommitted_visible(store: ObjectStore) -> list[str]:
    """Snapshot prefixes a reader could take for a snapshot without a manifest: ``latest.json``
    pointing at one, or the dedup index (what the next run's dedup reads) holding rows of one: it
    is written only after a commit (both must be empty)."""
    from dialinsight_core import dedup_index, publishing

    bad = []
    latest, _ = store.read_pointer(LATEST_KEY)
    if latest is not None and not store.exists(latest["manifest"]):
        bad.append(f"latest.json -> {latest['manifest']}")
    committed = {s["snapshot_id"] for s in publishing.committed_snapshots(store)}
    indexed = {sid for key in store.list(f"{dedup_index.PREFIX}/sigs/") if key.endswith(".parquet")
               for sid in store.read_table(key, dedup_index.SIGS).column("snapshot_id").to_pylist()}
    bad += [f"the dedup index holds rows of {s}" for s in sorted(indexed - committed)]
    return bad

