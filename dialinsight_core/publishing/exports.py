"""Exports beside each snapshot, in the formats fine-tuning tools read (docs/dataset.md).

``exports/<format>/<split>.jsonl`` for every configured format:

- ``openai``: OpenAI chat fine-tuning JSONL, ``{"messages": [{"role", "content"}, ...]}`` (also
  what TRL's ``SFTTrainer`` and most chat-template scripts read);
- ``sharegpt``: ``{"conversations": [{"from": "system" | "human" | "gpt", "value"}]}``;
- ``alpaca``: ``{"instruction", "input", "output", "system"}``;
- ``provenance``: line by line the origin of each exported row (``id``, ``dialogue_id``, ``origin``
  = domain | mixin, ``mixin_source``), which ShareGPT and Alpaca rows also carry inline.

Rows are the snapshot's accepted examples. The optional train/validation split is by dialogue
(``stable_int`` of seed and dialogue id), so one dialogue never lands on both sides; the optional
mix-in adds rows of a general instruction dataset at a configured ratio, each marked with its
provenance (``origin`` and ``mixin_source``), so "domain only vs mixed" is a config switch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from dialinsight_core.config import ExportSettings, Settings
from dialinsight_core.contracts import ExportManifest
from dialinsight_core.storage import ObjectStore, open_store
from dialinsight_core.text import stable_int

FORMATS = ("openai", "sharegpt", "alpaca")
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass(frozen=True)
class Example:
    """One training example as the exports see it."""

    example_id: str
    dialogue_id: str | None
    messages: list[dict[str, str]]
    origin: str  # "domain" or "mixin"
    mixin_source: str | None = None


def split_of(dialogue_id: str, cfg: ExportSettings) -> str:
    """'validation' for about ``validation_fraction`` of the dialogues, else 'train' (by dialogue)."""
    if cfg.validation_fraction <= 0:
        return "train"
    draw = stable_int(cfg.split_seed, "split", dialogue_id) / float(1 << 63)
    return "validation" if draw < cfg.validation_fraction else "train"


def openai_row(ex: Example) -> dict[str, Any]:
    return {"messages": ex.messages}


def sharegpt_row(ex: Example) -> dict[str, Any]:
    return {"conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in ex.messages]}


def alpaca_row(ex: Example) -> dict[str, Any]:
    system = "\n".join(m["content"] for m in ex.messages if m["role"] == "system")
    user = "\n".join(m["content"] for m in ex.messages if m["role"] == "user")
    answer = next(m["content"] for m in reversed(ex.messages) if m["role"] == "assistant")
    return {"instruction": user, "input": "", "output": answer, "system": system}


ROW_FORMATS = {"openai": openai_row, "sharegpt": sharegpt_row, "alpaca": alpaca_row}


def domain_examples(published: pa.Table) -> list[Example]:
    cols = published.select(["prompt_id", "dialogue_id", "messages"]).to_pylist()
    return [Example(r["prompt_id"], r["dialogue_id"], [dict(m) for m in r["messages"]], "domain") for r in cols]


def parse_mixin(lines: Iterable[bytes], source: str) -> list[Example]:
    """General instruction rows: OpenAI chat JSONL (``messages`` ending with the assistant's answer)."""
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        doc = json.loads(line)
        msgs = doc.get("messages") if isinstance(doc, dict) else None
        if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) and m.get("role") in SHAREGPT_ROLES
                                                         and isinstance(m.get("content"), str) for m in msgs)
                and msgs[-1]["role"] == "assistant"):
            raise ValueError(f"{source} line {n}: expected {{'messages': [...]}} ending with an assistant message")
        out.append(Example(f"mixin:{source}#{n}", None, [{"role": m["role"], "content": m["content"]} for m in msgs],
                           "mixin", source))
    return out


def read_mixin(cfg: ExportSettings, settings: Settings) -> list[Example]:
    """The configured general instruction rows ([] when the mix-in is off)."""
    m = cfg.mixin
    if not m.uri or m.ratio <= 0:
        return []
    if m.uri.startswith("s3://"):
        bucket, _, key = m.uri.removeprefix("s3://").partition("/")
        data = open_store(f"s3://{bucket}", settings).read_bytes(key)
    else:
        data = settings.resolve_path(m.uri.removeprefix("file://")).read_bytes()
    return parse_mixin(data.splitlines(), m.name)


def select_mixin(general: list[Example], n_domain: int, cfg: ExportSettings, seed: int) -> list[Example]:
    """``round(ratio * n_domain)`` general rows, a seeded sample (all of them, repeated, if too few)."""
    want = round(cfg.mixin.ratio * n_domain)
    if not general or want <= 0:
        return []
    ranked = sorted(general, key=lambda ex: stable_int(seed, "mixin", ex.example_id))
    return [ranked[i % len(ranked)] for i in range(want)]


class ExportWriter:
    """``exports/<format>/<split>.jsonl`` under ``prefix``, written as the accepted rows stream past
    (``add`` a part at a time; each file is spooled to local disk, never held in memory); ``close``
    appends the mix-in, which is sized by the domain rows seen, stores the files and returns what was
    written, with counts. Within a split, domain rows come first, then the mix-in."""

    def __init__(self, store: ObjectStore, prefix: str, cfg: ExportSettings, mixin: list[Example], seed: int):
        self.store, self.prefix, self.cfg, self.mixin, self.seed = store, prefix, cfg, mixin, seed
        self._stack = ExitStack()
        self._files: dict[tuple[str, str], BinaryIO] = {}
        self._counts: dict[str, dict[str, int]] = {}
        # each part's distinct dialogue ids per split, as Arrow strings: at 1M dialogues a set of
        # Python strings held 101 MiB until publish returned (docs/benchmarks.md), these about 20 MiB
        self._dialogues: dict[str, list[pa.Array]] = {}
        self._n_domain = 0

    def __enter__(self) -> ExportWriter:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # an exception leaves no export file behind (spools are dropped)

    def _write(self, split: str, ex: Example) -> None:
        for fmt in [*self.cfg.formats, "provenance"]:
            fh = self._files.get((fmt, split))
            if fh is None:
                key = f"{self.prefix}/exports/{fmt}/{split}.jsonl"
                fh = self._files[(fmt, split)] = self._stack.enter_context(self.store.file_writer(key))
            fh.write(json.dumps(_row(fmt, ex), ensure_ascii=False).encode() + b"\n")
        counts = self._counts.setdefault(split, {"domain": 0, "mixin": 0})
        counts[ex.origin] += 1

    def add(self, published: pa.Table) -> None:
        """Export one part of the snapshot's accepted (PUBLISHED) rows."""
        ids: dict[str, list[str]] = {}
        for ex in domain_examples(published):
            split = split_of(ex.dialogue_id or "", self.cfg)
            self._write(split, ex)
            self._n_domain += 1
            if ex.dialogue_id:
                ids.setdefault(split, []).append(ex.dialogue_id)
        for split, found in ids.items():
            self._dialogues.setdefault(split, []).append(pa.array(found, pa.string()).unique())

    def close(self) -> ExportManifest:
        mixed = select_mixin(self.mixin, self._n_domain, self.cfg, self.seed)
        for ex in mixed:  # general rows have no dialogue: split by their own id
            self._write(split_of(ex.example_id, self.cfg), ex)
        files: dict[str, dict[str, str]] = {}
        for fmt in [*self.cfg.formats, "provenance"]:
            for split in sorted(self._counts):
                files.setdefault(fmt, {})[split] = f"exports/{fmt}/{split}.jsonl"
        self._stack.close()  # stores every spooled file
        dialogues = {split: pc.count_distinct(pa.chunked_array(self._dialogues.get(split, []), pa.string())).as_py()
                     for split in self._counts}
        self._dialogues = {}
        cfg = self.cfg
        return {"formats": list(cfg.formats), "files": files,
                "counts": {split: dict(c) for split, c in sorted(self._counts.items())},
                "dialogues": dialogues,
                "validation_fraction": cfg.validation_fraction, "split_seed": cfg.split_seed,
                "mixin": {"name": cfg.mixin.name, "uri": cfg.mixin.uri, "ratio": cfg.mixin.ratio, "rows": len(mixed)}}


def _provenance(ex: Example) -> dict[str, Any]:
    """Where a row came from: its record id, dialogue, and ``origin`` (domain | mixin)."""
    return {"id": ex.example_id, "dialogue_id": ex.dialogue_id, "origin": ex.origin,
            **({"mixin_source": ex.mixin_source} if ex.mixin_source else {})}


def _row(fmt: str, ex: Example) -> dict[str, Any]:
    """One exported line. The ``openai`` rows hold ``messages`` alone (the fine-tuning API takes no other
    key); ``provenance/`` gives their origin line by line. ShareGPT and Alpaca loaders ignore extra keys,
    so those rows carry their provenance inline."""
    if fmt == "provenance":
        return _provenance(ex)
    row = ROW_FORMATS[fmt](ex)
    return row if fmt == "openai" else {**row, **_provenance(ex)}
