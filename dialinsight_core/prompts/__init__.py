"""Prompt construction with stratified, weighted instruction sampling (docs/architecture.md, "prompts").

A prompt is system role + dialogue + one instruction + output constraints, rendered from
template files. Which instructions a dialogue gets is the sampler's (``sampler.py``: task family x
scene x role focus x language, adaptive to earlier runs' accept rates); how each is asked is drawn
too: a register (``templates/ask_<register>.j2``), a layout and a placement, recorded per prompt
as ``template_id`` and ``variant``. With the ask after the dialogue (the default for most prompts),
all prompts about one dialogue share a prefix that vLLM's prefix cache reuses. A dialogue longer
than the prompt's token budget is windowed by turn spans (``turn_span``), never cut silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment

from dialinsight_core import schemas
from dialinsight_core.config import DomainSettings, Settings
from dialinsight_core.contracts import PromptStats
from dialinsight_core.prompts.sampler import Multipliers, StratifiedSampler, inclusion, mix_audit, systematic
from dialinsight_core.templating import template_env
from dialinsight_core.text import prompt_lang, stable_id, stable_int

STAGE = "prompts"
TEMPLATE_VERSION = "2"  # part of every template_id: a change of the ask templates makes new prompt ids


@dataclass
class PromptResult:
    prompts: pa.Table
    quarantined: pa.Table
    stats: PromptStats


def schema_fields(schema: dict[str, Any]) -> list[str]:
    return list(schema.get("properties", {}))


@dataclass(frozen=True)
class Ask:
    """How one prompt asks: register (template file), layout and placement of the ask."""

    register: str = "formal"
    layout: str = "plain"
    placement: str = "after"

    @property
    def template_id(self) -> str:
        return f"{self.register}@{TEMPLATE_VERSION}"

    @property
    def variant(self) -> str:
        return f"{self.layout}-{self.placement}"


def render_parts(
    env: Environment, *, lang: str, scene: str, turns: list[dict[str, Any]], instruction: str, ask: Ask,
    fields: list[str], domain: DomainSettings, excerpt: tuple[int, int, int] | None = None,
) -> tuple[str, str, str]:
    """(system, dialogue, ask) texts of one prompt; the domain (of the dialogue's source) names the
    field and the two roles. ``excerpt``: (first, last, of) turn numbers when the dialogue is windowed."""
    system, dialogue = render_context(env, lang=lang, scene=scene, turns=turns, domain=domain, excerpt=excerpt)
    return system, dialogue, render_ask(env, lang=lang, instruction=instruction, fields=fields, ask=ask)


def render_context(env: Environment, *, lang: str, scene: str, turns: list[dict[str, Any]], domain: DomainSettings,
                   excerpt: tuple[int, int, int] | None = None) -> tuple[str, str]:
    """(system, dialogue): what every prompt about one dialogue shares, whatever its instruction."""
    lang_key = prompt_lang(lang)
    role_names = domain.role_names[lang_key]
    system = env.get_template("system.j2").render(lang=lang_key, domain=domain.name[lang_key], role_names=role_names)
    dialogue = env.get_template("dialogue.j2").render(lang=lang_key, scene=scene, turns=turns, role_names=role_names,
                                                      excerpt=excerpt)
    return system, dialogue


def render_ask(env: Environment, *, lang: str, instruction: str, fields: list[str], ask: Ask) -> str:
    """The ask of one prompt: the instruction and the output constraints in the ask's register and layout."""
    return env.get_template(f"ask_{ask.register}.j2").render(lang=prompt_lang(lang), instruction=instruction, fields=fields,
                                                              layout=ask.layout, placement=ask.placement)


def join_user(dialogue: str, ask_text: str, placement: str) -> str:
    return f"{dialogue}\n{ask_text}" if placement == "after" else f"{ask_text}\n\n{dialogue}"


def render_messages(
    env: Environment, *, lang: str, scene: str, turns: list[dict[str, Any]], instruction: str, ask: Ask,
    fields: list[str], domain: DomainSettings, excerpt: tuple[int, int, int] | None = None,
) -> list[dict[str, str]]:
    """The chat messages of one prompt."""
    system, dialogue, text = render_parts(env, lang=lang, scene=scene, turns=turns, instruction=instruction, ask=ask,
                                          fields=fields, domain=domain, excerpt=excerpt)
    return [{"role": "system", "content": system}, {"role": "user", "content": join_user(dialogue, text, ask.placement)}]


class TokenCounter:
    """Counts a prompt's tokens with the labeling model's tokenizer, loaded only when a prompt's UTF-8
    bytes exceed the budget (a byte-level BPE token covers at least one byte, so bytes bound tokens).
    Without a local tokenizer (a remote model's name) it counts bytes: conservative, never over."""

    def __init__(self, settings: Settings):
        self.settings = settings
        cfg = settings.prompts
        self.budget = (cfg.context_tokens or settings.engine.max_model_len) - settings.engine.max_tokens - cfg.token_margin
        if self.budget < 64:
            raise ValueError(f"the prompt's token budget is {self.budget}: raise prompts.context_tokens / "
                             "engine.max_model_len or lower engine.max_tokens")

    @cached_property
    def tokenizer(self) -> Any:
        """A ``tokenizers.Tokenizer`` (the fast tokenizer's own file: no transformers import), or a
        transformers tokenizer where the model has no tokenizer.json, or None (count bytes)."""
        cfg = self.settings.prompts
        name = cfg.tokenizer or self.settings.engine.model
        path = self.settings.resolve_path(name)
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path / "tokenizer.json"))
        if cfg.tokenizer is None and not path.is_dir():
            return None
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path) if path.exists() else name)

    def used(self) -> str:
        """What counted this run's long prompts: bytes, the tokenizer, or nothing (every prompt was short)."""
        if "tokenizer" not in self.__dict__:
            return "none needed"
        return "bytes" if self.tokenizer is None else "tokenizer"

    def count(self, texts: list[str]) -> list[int]:
        tok = self.tokenizer
        if tok is None:
            return [len(t.encode("utf-8")) for t in texts]
        if hasattr(tok, "encode_batch"):
            return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    @staticmethod
    def surely_fits(texts: list[str], budget: int) -> bool:
        return sum(len(t.encode("utf-8")) for t in texts) <= budget


def choose_window(tokens: list[int], focus: list[bool], avail: int, mode: str, min_turns: int) -> tuple[int, int] | None:
    """[start, end) of the turns to keep within ``avail`` tokens: ``tail`` keeps the last turns, ``focus``
    the window with most tokens of the instruction's role focus (then the longest, then the latest).
    None when no window of ``min_turns`` turns fits (or ``mode`` is ``whole``)."""
    n = len(tokens)
    if mode == "whole":
        return None
    if mode == "tail":
        start, used = n, 0
        while start > 0 and used + tokens[start - 1] <= avail:
            start -= 1
            used += tokens[start]
        return (start, n) if n - start >= min_turns else None
    best: tuple[int, int, int] | None = None  # (focus tokens, turns, start)
    start = used = fscore = 0
    for end in range(n):  # two pointers: the longest window ending at ``end``
        used += tokens[end]
        fscore += tokens[end] if focus[end] else 0
        while used > avail and start <= end:
            used -= tokens[start]
            fscore -= tokens[start] if focus[start] else 0
            start += 1
        if end - start + 1 >= min_turns:
            cand = (fscore, end - start + 1, start)
            if best is None or cand >= best:
                best = cand
    return (best[2], best[2] + best[1]) if best else None


_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]")


class Diversity:
    """Distinct n-grams of the asks as sent (instruction + template), and template usage."""

    def __init__(self) -> None:
        self.distinct: dict[int, set[tuple[str, ...]]] = {n: set() for n in (1, 2, 3)}
        self.total: Counter[int] = Counter()
        self.grams: dict[tuple[str, str, str], dict[int, int]] = {}
        self.by_combo: Counter[tuple[str, str, str]] = Counter()
        self.templates: Counter[str] = Counter()
        self.variants: Counter[str] = Counter()

    def add(self, instruction_id: str, template_id: str, variant: str, text: str) -> None:
        combo = (instruction_id, template_id, variant)
        self.by_combo[combo] += 1
        self.templates[template_id] += 1
        self.variants[variant] += 1
        if combo not in self.grams:  # the same instruction, template and variant: the same ask
            words = _WORD.findall(text.lower())
            self.grams[combo] = {n: max(len(words) - n + 1, 0) for n in (1, 2, 3)}
            for n in (1, 2, 3):
                self.distinct[n].update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        for n, c in self.grams[combo].items():
            self.total[n] += c

    def report(self) -> dict[str, Any]:
        n = sum(self.templates.values()) or 1
        return {
            "distinct_asks": len(self.by_combo),
            "distinct_ngrams": {f"{k}": len(v) for k, v in self.distinct.items()},
            "distinct_n": {f"{k}": round(len(self.distinct[k]) / self.total[k], 4) if self.total[k] else 0.0
                           for k in self.distinct},
            "template_share": {k: round(v / n, 4) for k, v in sorted(self.templates.items())},
            "variant_share": {k: round(v / n, 4) for k, v in sorted(self.variants.items())},
        }


def _draw(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


class PromptBuilder:
    """Prompts for dialogues given a part at a time (``add``): a run's prompts can be written as they
    are made, so memory holds one part, not the run. ``stats`` and ``quarantined`` cover every part."""

    def __init__(self, library: pa.Table, output_schemas: dict[str, dict[str, Any]], settings: Settings, ds: str,
                 multipliers: Multipliers | None = None):
        self.env, self.settings, self.ds = template_env(), settings, ds
        self.output_schemas = output_schemas
        self.instr = library.to_pylist()
        self.sampler = StratifiedSampler(settings, multipliers)
        self.tokens = TokenCounter(settings)
        self.diversity = Diversity()
        self.quarantine: list[dict[str, Any]] = []
        self.family: Counter[str] = Counter()
        self.observed: Counter[str] = Counter()  # built prompts per stratum
        self.expected: defaultdict[str, float] = defaultdict(float)  # sum of inclusion probabilities, adapted
        self.design: defaultdict[str, float] = defaultdict(float)  # the same with the targets alone (no adaptation)
        self.dialogues_in = self.dialogues_prompted = self.prompts = self.sampled = 0
        self.dialogues_quarantined = self.prompts_quarantined = self.windowed = self.sampled_unfit = 0
        self._rendered: tuple[str | None, tuple[str, str]] = (None, ("", ""))

    def add(self, dialogues: list[dict[str, Any]], turns_by_dialogue: dict[str, list[dict[str, Any]]]) -> pa.Table:
        """The PROMPTS rows of these dialogues (``turns_by_dialogue``: each one's turns, any order)."""
        cfg, settings = self.settings.prompts, self.settings
        rows: list[dict[str, Any]] = []
        for d in dialogues:
            self.dialogues_in += 1
            did = d["dialogue_id"]
            dturns = sorted(turns_by_dialogue.get(did, []), key=lambda t: t["turn_idx"])
            n_chars = sum(len(t["text"]) for t in dturns)
            cands, w0, w, keys = self.sampler.weights(self.instr, d["scene"], d["lang"])
            if not dturns:
                self._quarantine_dialogue(did, d, "no_turns", "dialogue has no turns in the turns table")
                continue
            if n_chars > cfg.max_dialogue_chars:
                self._quarantine_dialogue(did, d, "dialogue_too_long",
                                          f"{n_chars} chars > prompts.max_dialogue_chars={cfg.max_dialogue_chars}")
                continue
            if not cands:
                self._quarantine_dialogue(did, d, "no_instruction",
                                          f"no approved instruction for scene={d['scene']} lang={d['lang']}")
                continue
            seed = stable_int(settings.seed, self.ds, did)
            rng = np.random.default_rng(seed)
            k = min(cfg.instructions_per_dialogue, len(cands))
            pi, pi0 = inclusion(w, k), inclusion(w0, k)
            for key, a, b in zip(keys, pi, pi0, strict=True):
                self.expected[key] += float(a)
                self.design[key] += float(b)
            picks = systematic(pi, rng)
            built, too_long = [], []
            for pick in sorted(int(i) for i in picks):  # instruction order, not draw order: stable rows
                ins = cands[pick]
                ask = Ask(_draw(rng, cfg.templates), cfg.variants[int(rng.integers(len(cfg.variants)))],
                          _draw(rng, cfg.placements))
                row = self._prompt(d, dturns, ins, ask, float(w[pick]), seed)
                self.sampled += 1
                (built if isinstance(row, dict) else too_long).append((ins, ask, row))
            if not built:  # none of its prompts fits: the dialogue is quarantined (once, not per prompt)
                self.sampled_unfit += len(too_long)
                why = "; ".join(r for _, _, r in too_long)
                self._quarantine_dialogue(did, d, "prompt_too_long", why)
                continue
            self.dialogues_prompted += 1
            for ins, ask, reason in too_long:
                self.prompts_quarantined += 1
                pid = stable_id(did, ins["instruction_id"], ins["library_version"], ask.template_id, ask.variant)
                self.quarantine.append(schemas.quarantine_row(
                    pid, {"dialogue_id": did, "instruction_id": ins["instruction_id"], "template_id": ask.template_id,
                          "variant": ask.variant}, STAGE, "prompt_too_long", reason))
            for ins, _ask, row in built:
                rows.append(row)
                self.observed[self.sampler_key(row, ins)] += 1
        self.family.update(r["task_family"] for r in rows)
        self.prompts += len(rows)
        return schemas.table(schemas.PROMPTS, rows)

    @staticmethod
    def sampler_key(row: dict[str, Any], ins: dict[str, Any]) -> str:
        return f"{row['task_family']}|{row['scene']}|{ins['role_focus']}|{row['lang']}"

    def _quarantine_dialogue(self, did: str, d: dict[str, Any], code: str, detail: str) -> None:
        self.dialogues_quarantined += 1
        self.quarantine.append(schemas.quarantine_row(did, d, STAGE, code, detail))

    def _prompt(self, d: dict[str, Any], dturns: list[dict[str, Any]], ins: dict[str, Any], ask: Ask, weight: float,
                seed: int) -> dict[str, Any] | str:
        """The PROMPTS row, windowed to the token budget if need be; or why it cannot fit."""
        settings = self.settings
        fields = schema_fields(self.output_schemas[ins["output_schema_id"]])
        domain = settings.domain_of(d["source"])
        common = {"lang": d["lang"], "scene": d["scene"], "instruction": ins["text"], "ask": ask, "fields": fields,
                  "domain": domain}
        if self._rendered[0] != d["dialogue_id"]:  # system and dialogue are the same for every prompt of a dialogue
            self._rendered = (d["dialogue_id"], render_context(self.env, lang=d["lang"], scene=d["scene"], turns=dturns,
                                                               domain=domain))
        system, dialogue = self._rendered[1]
        text = render_ask(self.env, lang=d["lang"], instruction=ins["text"], fields=fields, ask=ask)
        budget = self.tokens.budget
        span = (0, len(dturns))
        if not TokenCounter.surely_fits([system, dialogue, text], budget):
            full = sum(self.tokens.count([system, join_user(dialogue, text, ask.placement)]))
            if full > budget:
                span = self._window(dturns, ins, common, budget, full)
                if isinstance(span, str):
                    return span
                self.windowed += 1
                first, last = dturns[span[0]]["turn_idx"], dturns[span[1] - 1]["turn_idx"]
                system, dialogue, text = render_parts(self.env, turns=dturns[span[0]:span[1]],
                                                      excerpt=(first, last, len(dturns)), **common)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": join_user(dialogue, text, ask.placement)}]
        self.diversity.add(ins["instruction_id"], ask.template_id, ask.variant, text)
        kept = dturns[span[0]:span[1]]
        return {
            "prompt_id": stable_id(d["dialogue_id"], ins["instruction_id"], ins["library_version"], ask.template_id,
                                   ask.variant, *(() if span == (0, len(dturns)) else (f"span={span[0]}-{span[1]}",))),
            "dialogue_id": d["dialogue_id"],
            "instruction_id": ins["instruction_id"],
            "task_family": ins["task_family"],
            "scene": d["scene"],
            "lang": d["lang"],
            "role_focus": ins["role_focus"],
            "output_schema_id": ins["output_schema_id"],
            "template_id": ask.template_id,
            "variant": ask.variant,
            "messages": json.dumps(messages, ensure_ascii=False),
            "sampling_weight": weight,
            "seed": seed,
            "library_version": ins["library_version"],
            "turn_span": f"{kept[0]['turn_idx']}-{kept[-1]['turn_idx']}",
        }

    def _window(self, dturns: list[dict[str, Any]], ins: dict[str, Any], common: dict[str, Any], budget: int,
                full: int) -> tuple[int, int] | str:
        """The turn span that fits, checked by counting the rendered prompt; or why none does."""
        settings = self.settings
        mode = settings.task_families[ins["task_family"]].window
        n = len(dturns)
        if mode == "whole":
            return (f"{full} tokens > budget {budget} and task family {ins['task_family']} needs the whole dialogue "
                    f"(task_families.{ins['task_family']}.window: whole)")
        role_names = common["domain"].role_names[prompt_lang(common["lang"])]
        lines = [f"{role_names[t['role']]}: {t['text']}\n" for t in dturns]
        per_turn = self.tokens.count(lines)
        system, empty, text = render_parts(self.env, turns=[], excerpt=(n, n, n), **common)
        fixed = sum(self.tokens.count([system, join_user(empty, text, common["ask"].placement)]))
        role = ins["role_focus"]
        focus = [role == "both" or t["role"] == role for t in dturns]
        avail = budget - fixed
        span = choose_window(per_turn, focus, avail, mode, settings.prompts.min_window_turns)
        while span is not None:
            a, b = span
            excerpt = (dturns[a]["turn_idx"], dturns[b - 1]["turn_idx"], n)
            sys_, dia, txt = render_parts(self.env, turns=dturns[a:b], excerpt=excerpt, **common)
            if sum(self.tokens.count([sys_, join_user(dia, txt, common["ask"].placement)])) <= budget:
                return span
            avail -= max(1, per_turn[a] // 4)  # token merges at line joins: shrink a little and choose again
            span = choose_window(per_turn, focus, avail, mode, settings.prompts.min_window_turns)
        return (f"{full} tokens > budget {budget}; no window of >= {settings.prompts.min_window_turns} turns fits "
                f"beside the {fixed}-token system prompt and ask (window: {mode})")

    def quarantined(self) -> pa.Table:
        return schemas.table(schemas.QUARANTINED, self.quarantine)

    def stats(self) -> PromptStats:
        n = max(self.prompts, 1)
        targets = {"task_family": {f: v.target_share for f, v in self.settings.task_families.items()}}
        stats: PromptStats = {
            "dialogues_in": self.dialogues_in,
            "dialogues_prompted": self.dialogues_prompted,
            "prompts": self.prompts,
            "prompts_sampled": self.sampled,
            "quarantined": self.dialogues_quarantined,
            "quarantined_prompts": self.prompts_quarantined,
            "quarantined_by_reason": dict(Counter(q["reason_code"] for q in self.quarantine)),
            "windowed": self.windowed,
            "token_budget": {"budget": self.tokens.budget, "counted_with": self.tokens.used()},
            "family_share": {f: round(self.family.get(f, 0) / n, 4) for f in self.settings.task_families},
            "family_target": {f: v.target_share for f, v in self.settings.task_families.items()},
            "mix": {"planned": mix_audit(self.observed, self.expected),
                    "target": mix_audit(self.observed, self.design, targets)},
            "design": {k: round(v, 4) for k, v in sorted(self.design.items())},
            "sampler": self.sampler.multipliers.record(),
            "diversity": self.diversity.report(),
        }
        if stats["dialogues_in"] != stats["dialogues_prompted"] + self.dialogues_quarantined:
            raise AssertionError(f"prompt stage lost dialogues: {stats}")
        if self.sampled != self.prompts + self.prompts_quarantined + self.sampled_unfit:
            raise AssertionError(f"prompt stage lost prompts: {stats}")
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

