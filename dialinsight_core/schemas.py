"""Arrow schemas of every table that crosses a stage boundary (docs/architecture.md, "Data contracts").

Column names are the contract between stages, the gates and the published snapshot; each
stage builds its output with ``table(SCHEMA, rows)`` so a missing or mistyped column fails at
the stage that produced it, not three stages later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from dialinsight_core.config import DIMENSIONS

TURNS = pa.schema(
    [
        ("dialogue_id", pa.string()),
        ("source", pa.string()),
        ("turn_idx", pa.int32()),
        ("role", pa.string()),
        ("text", pa.string()),
        ("lang", pa.string()),
        ("scene", pa.string()),
        ("behaviour", pa.string()),  # role behaviour of the turn (taxonomy.behaviours), "other" if none
        ("meta", pa.string()),  # JSON
    ]
)

DIALOGUES = pa.schema(
    [
        ("dialogue_id", pa.string()),
        ("source", pa.string()),
        ("scene", pa.string()),
        ("n_turns", pa.int32()),
        ("lang", pa.string()),
        ("pii_counts", pa.string()),  # JSON {type: count}
        ("content_hash", pa.string()),
        ("source_file", pa.string()),
        ("scene_source", pa.string()),  # source | keywords | default | llm | llm_failed
    ]
)

INSTRUCTIONS = pa.schema(
    [
        ("instruction_id", pa.string()),
        ("task_family", pa.string()),
        ("scene", pa.string()),
        ("role_focus", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("output_schema_id", pa.string()),
        ("origin", pa.string()),
        ("parent_id", pa.string()),
        ("operator", pa.string()),
        ("round", pa.int32()),
        ("status", pa.string()),
        ("reviewer_note", pa.string()),
        ("library_version", pa.string()),
        ("expected_fields", pa.string()),  # JSON list of "alt1|alt2" the answer must cover (coverage check)
    ]
)

# what a published snapshot remembers about its dialogues, for dedup in later runs
DIALOGUE_INDEX = pa.schema(
    [
        ("dialogue_id", pa.string()),
        ("content_hash", pa.string()),
        ("minhash", pa.list_(pa.uint64())),
        ("snapshot_id", pa.string()),
    ]
)

PROMPTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("dialogue_id", pa.string()),
        ("instruction_id", pa.string()),
        ("task_family", pa.string()),
        ("scene", pa.string()),
        ("lang", pa.string()),
        ("role_focus", pa.string()),  # agent | customer | both: whose turns the instruction is about
        ("output_schema_id", pa.string()),
        ("template_id", pa.string()),  # the ask's register template and version, e.g. formal@2
        ("variant", pa.string()),  # the ask's layout and placement, e.g. numbered-after
        ("messages", pa.string()),  # JSON list of OpenAI chat messages
        ("sampling_weight", pa.float64()),
        ("seed", pa.int64()),
        ("library_version", pa.string()),
        ("turn_span", pa.string()),  # "first-last" turn_idx of the turns in the prompt (a window of a long dialogue)
    ]
)

LABELS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("output_text", pa.string()),
        ("output_json", pa.string()),  # parsed JSON re-serialised, null when unparseable
        ("model", pa.string()),
        ("engine", pa.string()),
        ("sampling_params_hash", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("cache_hit", pa.bool_()),
        ("model_fingerprint", pa.string()),  # hash of the labeling model's weights + config (not its path)
    ]
)

# scored = prompt context + labels + one column per dimension + aggregate
SCORE_COLUMNS = [
    *((f"q_{d}", pa.float64()) for d in DIMENSIONS),  # judge dimensions are null when the judge did not run
    ("cheap_score", pa.float64()),  # overall of the rule + grounding layers (what decides who the judge sees)
    ("overall_score", pa.float64()),  # weighted mean of every dimension that ran
    ("judge_reason", pa.string()),  # null | borderline | audit
    ("judge_status", pa.string()),  # null | ok | failed:<reason>
    ("judge_rationale", pa.string()),
    ("judge_tokens", pa.int32()),
    ("judge_model", pa.string()),  # who judged the record; null when the judge did not see it
    ("layers_run", pa.string()),  # e.g. "rules,grounding,judge"
    ("quality_findings", pa.string()),  # JSON evidence per dimension (matched phrase, leaked span, missing fields)
]

PROMPT_CONTEXT_COLUMNS = [
    "dialogue_id",
    "instruction_id",
    "task_family",
    "scene",
    "lang",
    "role_focus",
    "output_schema_id",
    "template_id",
    "variant",
    "sampling_weight",
    "seed",
    "library_version",
    "turn_span",
]

SCORED = pa.schema(
    [LABELS.field("prompt_id")]
    + [PROMPTS.field(c) for c in PROMPT_CONTEXT_COLUMNS]
    + [f for f in LABELS if f.name != "prompt_id"]
    + [pa.field(n, t) for n, t in SCORE_COLUMNS]
)

REASON_COLUMNS = [("stage", pa.string()), ("reason_code", pa.string()), ("reason_detail", pa.string())]

# quarantine rows come from every stage, so the record itself travels as JSON
QUARANTINED = pa.schema(
    [("record_id", pa.string()), ("record", pa.string())] + [pa.field(n, t) for n, t in REASON_COLUMNS]
)

REJECTED = pa.schema(list(SCORED) + [pa.field(n, t) for n, t in REASON_COLUMNS])

LINEAGE_COLUMNS = [
    ("snapshot_id", pa.string()),
    ("gate_suite_version", pa.string()),
    ("config_hash", pa.string()),
    ("code_version", pa.string()),
]

# a chat message, as OpenAI, vLLM and Hugging Face chat templates take it
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

# what makes a published row a training example on its own, with no join (docs/dataset.md)
EXAMPLE_COLUMNS = [
    ("messages", pa.list_(MESSAGE)),  # the chat exactly as sent to the labeling model + the answer as the last message
    ("instruction_text", pa.string()),
    ("instruction_parent_id", pa.string()),  # the instruction chain: seed -> evolved (parent, operator, round)
    ("instruction_operator", pa.string()),
    ("instruction_round", pa.int32()),
    ("instruction_origin", pa.string()),  # seed | evolved
    ("source", pa.string()),
    ("source_file", pa.string()),
    ("sampling_params", pa.string()),  # JSON of the labeling request's sampling parameters
]
FIRST_COLUMNS = ("prompt_id", "messages", "instruction_text", "output_text", "output_json")


def _published(extra: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """SCORED + the example columns (+ ``extra``) + lineage, the training example's columns first."""
    fields = {f.name: f for f in list(SCORED) + [pa.field(n, t) for n, t in EXAMPLE_COLUMNS]}
    first = [fields.pop(n) for n in FIRST_COLUMNS]
    return pa.schema(first + list(fields.values()) + [pa.field(n, t) for n, t in extra + LINEAGE_COLUMNS])


PUBLISHED = _published([])
PUBLISHED_REJECTED = _published(REASON_COLUMNS)


def table(schema: pa.Schema, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a table from row dicts; every schema column must be present in every row."""
    rows = list(rows)
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    for i, row in enumerate(rows):
        missing = [n for n in schema.names if n not in row]
        if missing:
            raise KeyError(f"row {i} lacks columns {missing}")
        for name in schema.names:
            cols[name].append(row[name])
    return pa.table(cols, schema=schema)


def conform(tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``tbl`` to ``schema`` (extra columns dropped, missing ones fail)."""
    missing = [n for n in schema.names if n not in tbl.column_names]
    if missing:
        raise KeyError(f"table lacks columns {missing}")
    return tbl.select(schema.names).cast(schema)


def quarantine_row(record_id: str, record: Any, stage: str, reason_code: str, reason_detail: str) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "record": json.dumps(record, ensure_ascii=False, default=str),
        "stage": stage,
        "reason_code": reason_code,
        "reason_detail": reason_detail,
    }
