"""Prompt construction with seeded, weighted instruction sampling (docs/architecture.md, "prompts").

A prompt is system role + dialogue + one instruction + output constraints, rendered from
template files. The dialogue comes first and is rendered identically for every instruction and
variant, so all prompts about one dialogue share a prefix that vLLM's prefix cache reuses.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment

from dialinsight_core import schemas
from dialinsight_core.config import DomainSettings, Settings
from dialinsight_core.contracts import PromptStats
from dialinsight_core.templating import template_env
from dialinsight_core.text import prompt_lang, stable_id, stable_int

STAGE = "prompts"
TEMPLATE_ID = "chat-v1"


@dataclass
class PromptResult:
    prompts: pa.Table
    quarantined: pa.Table
    stats: PromptStats


def schema_fields(schema: dict[str, Any]) -> list[str]:
    return list(schema.get("properties", {}))


def render_messages(
    env: Environment, *, lang: str, scene: str, turns: list[dict[str, Any]], instruction: str, variant: str,
    fields: list[str], domain: DomainSettings,
) -> list[dict[str, str]]:
    """The chat messages of one prompt; the domain (of the dialogue's source) names the field and
    the two roles in the system prompt and the dialogue."""
    lang_key = prompt_lang(lang)
    role_names = domain.role_names[lang_key]
    system = env.get_template("system.j2").render(lang=lang_key, domain=domain.name[lang_key], role_names=role_names)
    dialogue = env.get_template("dialogue.j2").render(lang=lang_key, scene=scene, turns=turns, role_names=role_names)
    ask = env.get_template(f"variant_{variant}.j2").render(lang=lang_key, instruction=instruction, fields=fields)
    return [{"role": "system", "content": system}, {"role": "user", "content": f"{dialogue}\n{ask}"}]


def candidate_weights(instr: list[dict[str, Any]], scene: str, lang: str, settings: Settings) -> tuple[list[dict], np.ndarray]:
    """Weights over task family x scene x role so the data matches target family shares.

    Each family gets its target share, split over its candidate instructions; an instruction
    written for this scene counts ``scene_weight`` times a generic one.
    """
    cands = [i for i in instr if i["scene"] in (scene, "*") and i["lang"] in (lang, "*") and i["status"] == "approved"]
    if not cands:
        return [], np.zeros(0)
    raw = np.array([settings.prompts.scene_weight if c["scene"] == scene else 1.0 for c in cands])
    fam_total: dict[str, float] = defaultdict(float)
    for c, r in zip(cands, raw, strict=True):
        fam_total[c["task_family"]] += r
    present = {f: settings.task_families[f].target_share for f in fam_total}
    norm = sum(present.values())
    w = np.array([present[c["task_family"]] / norm * r / fam_total[c["task_family"]] for c, r in zip(cands, raw, strict=True)])
    return cands, w / w.sum()


class PromptBuilder:
    """Prompts for dialogues given a part at a time (``add``): a run's prompts can be written as they
    are made, so memory holds one part, not the run. ``stats`` and ``quarantined`` cover every part."""

    def __init__(self, library: pa.Table, output_schemas: dict[str, dict[str, Any]], settings: Settings, ds: str):
        self.env, self.settings, self.ds = template_env(), settings, ds
        self.output_schemas = output_schemas
        self.instr = library.to_pylist()
        self.quarantine: list[dict[str, Any]] = []
        self.family: Counter[str] = Counter()
        self.dialogues_in = self.dialogues_prompted = self.prompts = 0

    def add(self, dialogues: list[dict[str, Any]], turns_by_dialogue: dict[str, list[dict[str, Any]]]) -> pa.Table:
        """The PROMPTS rows of these dialogues (``turns_by_dialogue``: each one's turns, any order)."""
        cfg, settings = self.settings.prompts, self.settings
        rows: list[dict[str, Any]] = []
        for d in dialogues:
            self.dialogues_in += 1
            did = d["dialogue_id"]
            dturns = sorted(turns_by_dialogue.get(did, []), key=lambda t: t["turn_idx"])
            n_chars = sum(len(t["text"]) for t in dturns)
            cands, weights = candidate_weights(self.instr, d["scene"], d["lang"], settings)
            if not dturns:
                self.quarantine.append(schemas.quarantine_row(did, d, STAGE, "no_turns",
                                                              "dialogue has no turns in the turns table"))
                continue
            if n_chars > cfg.max_dialogue_chars:
                self.quarantine.append(schemas.quarantine_row(
                    did, d, STAGE, "dialogue_too_long", f"{n_chars} chars > prompts.max_dialogue_chars={cfg.max_dialogue_chars}"))
                continue
            if not cands:
                self.quarantine.append(schemas.quarantine_row(
                    did, d, STAGE, "no_instruction", f"no approved instruction for scene={d['scene']} lang={d['lang']}"))
                continue
            seed = stable_int(settings.seed, self.ds, did)
            rng = np.random.default_rng(seed)
            k = min(cfg.instructions_per_dialogue, len(cands))
            picks = rng.choice(len(cands), size=k, replace=False, p=weights)
            self.dialogues_prompted += 1
            for pick in picks:
                ins = cands[int(pick)]
                variant = cfg.variants[int(rng.integers(len(cfg.variants)))]
                schema = self.output_schemas[ins["output_schema_id"]]
                messages = render_messages(self.env, lang=d["lang"], scene=d["scene"], turns=dturns, instruction=ins["text"],
                                           variant=variant, fields=schema_fields(schema),
                                           domain=settings.domain_of(d["source"]))
                rows.append({
                    "prompt_id": stable_id(did, ins["instruction_id"], ins["library_version"], TEMPLATE_ID, variant),
                    "dialogue_id": did,
                    "instruction_id": ins["instruction_id"],
                    "task_family": ins["task_family"],
                    "scene": d["scene"],
                    "lang": d["lang"],
                    "output_schema_id": ins["output_schema_id"],
                    "template_id": TEMPLATE_ID,
                    "variant": variant,
                    "messages": json.dumps(messages, ensure_ascii=False),
                    "sampling_weight": float(weights[int(pick)]),
                    "seed": seed,
                    "library_version": ins["library_version"],
                    "turn_span": f"{dturns[0]['turn_idx']}-{dturns[-1]['turn_idx']}",
                })
        self.family.update(r["task_family"] for r in rows)
        self.prompts += len(rows)
        return schemas.table(schemas.PROMPTS, rows)

    def quarantined(self) -> pa.Table:
        return schemas.table(schemas.QUARANTINED, self.quarantine)

    def stats(self) -> PromptStats:
        n = max(self.prompts, 1)
        stats: PromptStats = {
            "dialogues_in": self.dialogues_in,
            "dialogues_prompted": self.dialogues_prompted,
            "prompts": self.prompts,
            "quarantined": len(self.quarantine),
            "quarantined_by_reason": dict(Counter(q["reason_code"] for q in self.quarantine)),
            "family_share": {f: round(self.family.get(f, 0) / n, 4) for f in self.settings.task_families},
            "family_target": {f: v.target_share for f, v in self.settings.task_families.items()},
        }
        if stats["dialogues_in"] != stats["dialogues_prompted"] + len(self.quarantine):
            raise AssertionError(f"prompt stage lost dialogues: {stats}")
        return stats


def build_prompts(
    dialogues: pa.Table, turns: pa.Table, library: pa.Table, output_schemas: dict[str, dict[str, Any]],
    settings: Settings, ds: str,
) -> PromptResult:
    """Prompts for whole tables at once (``PromptBuilder`` part by part gives the same rows)."""
    builder = PromptBuilder(library, output_schemas, settings, ds)
    by_dialogue: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in turns.to_pylist():
        by_dialogue[t["dialogue_id"]].append(t)
    prompts = builder.add(dialogues.to_pylist(), by_dialogue)
    return PromptResult(prompts, builder.quarantined(), builder.stats())


def shard_of(dialogue_id: str, n_shards: int) -> int:
    """The shard bucket of a dialogue: all its prompts go together (they share a prefix)."""
    return stable_int(dialogue_id) % n_shards


def shard_prompts(prompts: pa.Table, n_shards: int) -> list[pa.Table]:
    """Split by dialogue so prompts sharing a dialogue prefix land in the same shard."""
    n = max(1, min(n_shards, prompts.num_rows or 1))
    ids = prompts.column("dialogue_id").to_pylist()
    buckets: list[list[int]] = [[] for _ in range(n)]
    for i, did in enumerate(ids):
        buckets[shard_of(did, n)].append(i)
    return [prompts.take(pa.array(b, type=pa.int64())) for b in buckets if b] or [prompts]


def shard_turns(turns: pa.Table, shards: list[pa.Table]) -> list[pa.Table]:
    """Each shard's dialogues' turns (what scoring a shard reads instead of the whole run's):
    one vectorised pass, whatever the number of shards."""
    ids = [s.column("dialogue_id").unique() for s in shards]
    if not ids:
        return []
    all_ids = pa.concat_arrays([i.cast(pa.string()) for i in ids])
    shard_of = np.repeat(np.arange(len(ids)), [len(i) for i in ids])
    pos = pc.fill_null(pc.index_in(turns.column("dialogue_id"), value_set=all_ids), -1).to_numpy()
    which = np.where(pos >= 0, shard_of[pos], -1) if len(all_ids) else np.full(len(pos), -1)  # -1: no prompt
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(ids) + 1))
    return [turns.take(pa.array(order[bounds[i]:bounds[i + 1]])) for i in range(len(ids))]

