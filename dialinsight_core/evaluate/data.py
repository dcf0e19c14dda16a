"""What the evaluation trains and tests on, taken from one committed snapshot.

- ``accepted``: the export's train rows (``exports/openai/train.jsonl``, mix-in rows included), as
  a user would fine-tune on them; ``finetune.max_rows`` draws a seeded sample.
- ``ablation``: the same rows, each domain row replaced by a seeded draw from accepted + rejected
  rows of the train split (mix-in rows kept), so the two runs differ only in the gate's choice.
- ``heldout``: every prompt (accepted or rejected) about the dialogues the export holds out (its validation split, by
  dialogue id: ``publishing.exports.split_of``, passed in by the run layer). They are never in
  either training set; ``build`` checks it. An accepted row's answer is the reference
  (``reference: true``); a rejected row's prompt is answered and scored by the cascade only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialinsight_core.config import ExportSettings, Settings
from dialinsight_core.storage import ObjectStore

Messages = list[dict[str, str]]
HELDOUT_COLUMNS = ["prompt_id", "dialogue_id", "messages", "task_family", "lang", "output_schema_id",
                   "instruction_text", "output_text", "output_json", "overall_score"]


@dataclass
class TrainRow:
    id: str
    dialogue_id: str | None
    origin: str  # domain | mixin | rejected
    overall_score: float | None
    messages: Messages

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "dialogue_id": self.dialogue_id, "origin": self.origin,
                "overall_score": self.overall_score, "messages": self.messages}


@dataclass
class EvalInputs:
    accepted: list[TrainRow]
    ablation: list[TrainRow]
    heldout: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def _messages(value: Any) -> Messages:
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _rows(store: ObjectStore, snapshot: str, files: list[str], columns: list[str]) -> list[dict[str, Any]]:
    """The rows of the parts the manifest lists (the commit's record of what ``data/`` or ``rejected/`` holds)."""
    return [r for key in files for r in store.open_parquet(f"{snapshot}/{key}").read(columns=columns).to_pylist()]


def build(store: ObjectStore, snapshot: str, settings: Settings,
          split_of: Callable[[str, ExportSettings], str]) -> EvalInputs:
    """The three sets of one snapshot (``snapshot``: its key prefix, e.g. ``snapshots/ds=…/run=…``);
    ``split_of`` is the export's split (``publishing.exports.split_of``), applied with the settings
    the snapshot recorded, so held-out means what the export held out."""
    manifest = store.read_json(f"{snapshot}/manifest.json")
    exp = manifest.get("exports") or {}
    files = (exp.get("files") or {}).get("openai") or {}
    if "train" not in files:
        raise ValueError(f"snapshot {snapshot} has no exports/openai/train.jsonl: publishing.exports.formats "
                         "must include openai for the evaluation to train on it")
    split_cfg = ExportSettings(validation_fraction=exp.get("validation_fraction", 0.0), split_seed=exp.get("split_seed", 0))
    chats = store.read_jsonl(f"{snapshot}/{files['train']}")
    prov = store.read_jsonl(f"{snapshot}/{exp['files']['provenance']['train']}")
    if len(prov) != len(chats):
        raise ValueError(f"snapshot {snapshot}: {len(chats)} openai rows but {len(prov)} provenance rows")

    data = _rows(store, snapshot, manifest["files"]["data"], HELDOUT_COLUMNS)
    rejected = _rows(store, snapshot, manifest["files"]["rejected"], HELDOUT_COLUMNS)
    for r in data + rejected:
        r["split"] = split_of(r["dialogue_id"], split_cfg)
        r["messages"] = _messages(r["messages"])
    score_of = {r["prompt_id"]: r["overall_score"] for r in data}
    train = [TrainRow(p["id"], p.get("dialogue_id"), p.get("origin", "domain"), score_of.get(p["id"]), c["messages"])
             for c, p in zip(chats, prov, strict=True)]

    fcfg = settings.evaluate.finetune
    rng = random.Random(f"{fcfg.seed}:{manifest.get('snapshot_id', snapshot)}")
    if fcfg.max_rows and len(train) > fcfg.max_rows:
        train = rng.sample(train, fcfg.max_rows)

    heldout = [{k: v for k, v in r.items() if k != "split"} | {"reference": True}
               for r in data if r["split"] == "validation"]
    # a rejected answer is no reference (and its text was redacted)
    heldout += [{k: v for k, v in r.items() if k != "split"} | {"reference": False, "output_text": None, "output_json": None}
                for r in rejected if r["split"] == "validation"]

    pool = [row for row in train if row.origin == "domain"]
    seen = {row.id for row in pool}
    all_accepted_train = [TrainRow(r["prompt_id"], r["dialogue_id"], "domain", r["overall_score"], r["messages"])
                          for r in data if r["split"] == "train" and r["prompt_id"] not in seen]
    rej = [TrainRow(r["prompt_id"], r["dialogue_id"], "rejected", r["overall_score"], r["messages"])
           for r in rejected if r["split"] == "train"]
    pool = pool + all_accepted_train + rej
    n_domain = sum(1 for row in train if row.origin == "domain")
    drawn = iter(rng.sample(pool, n_domain)) if pool else iter(())
    ablation = [next(drawn) if row.origin == "domain" else row for row in train]

    held_dialogues = {r["dialogue_id"] for r in heldout}
    for name, rows in (("accepted", train), ("ablation", ablation)):
        leak = sorted({r.dialogue_id for r in rows if r.dialogue_id in held_dialogues})
        if leak:
            raise AssertionError(f"held-out dialogues in the {name} training set: {leak[:5]}")

    def mean_score(rows: list[TrainRow]) -> float | None:
        xs = [r.overall_score for r in rows if r.origin != "mixin" and r.overall_score is not None]
        return round(sum(xs) / len(xs), 4) if xs else None

    stats = {"snapshot": snapshot, "snapshot_id": manifest.get("snapshot_id"),
             "split": {"validation_fraction": split_cfg.validation_fraction, "split_seed": split_cfg.split_seed},
             "accepted": {"rows": len(train), "domain": n_domain, "mixin": len(train) - n_domain,
                          "mean_overall_score": mean_score(train)},
             "ablation": {"rows": len(ablation), "rejected": sum(r.origin == "rejected" for r in ablation),
                          "pool": len(pool), "pool_rejected": len(rej), "mean_overall_score": mean_score(ablation)},
             "heldout": {"rows": len(heldout), "with_reference": sum(r["reference"] for r in heldout),
                         "dialogues": len(held_dialogues)}}
    return EvalInputs(train, ablation, heldout, stats)
