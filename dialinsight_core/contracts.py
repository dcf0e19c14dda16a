"""Typed hand-offs (bottom layer): each stage's stats and the run layer's stage summaries.

Stages return Arrow tables plus one of the ``*Stats`` dicts below; the run layer writes the tables
to the object store and hands the next stage a ``*Out`` summary (object keys + stats). In Airflow
these summaries are the XComs (small JSON, never data), so they are ``TypedDict``s: plain dicts
at run time, checked names in the code. Column-level contracts (the tables) are in ``schemas``;
docs/architecture.md shows both. This module imports nothing heavy: DAG files use it at parse time.
"""

from __future__ import annotations

from typing import Any, NamedTuple, NotRequired, TypedDict

# --- stage stats (what each core stage reports about its records) ----------------------------


class StepStats(TypedDict):
    """One composed ingest step: records in, out, and quarantined by it (in == out + quarantined)."""

    records_in: int
    records_out: int
    quarantined: int
    quarantined_by_reason: dict[str, int]


class IngestStats(TypedDict):
    files_read: int  # dialogue records read (a JSONL line, a group of CSV rows, a STAR file)
    dialogues_kept: int
    turns_kept: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    duplicates: dict[str, int]
    published_snapshots_compared: int  # committed snapshots of other dates the dedup index was asked about
    scenes: dict[str, int]
    scene_sources: dict[str, int]
    langs: dict[str, int]
    behaviours: dict[str, dict[str, int]]
    pii_redactions: dict[str, int]
    dialogues_with_pii: int
    steps: dict[str, StepStats]  # read -> validate -> redact -> dedup -> classify
    llm_scene_classifier: NotRequired[dict[str, int]]


class PromptStats(TypedDict):
    dialogues_in: int
    dialogues_prompted: int
    prompts: int
    prompts_sampled: int  # = prompts + quarantined_prompts + the prompts of dialogues quarantined as prompt_too_long
    quarantined: int  # dialogues
    quarantined_prompts: int  # prompts that do not fit the token budget (their dialogue has other prompts)
    quarantined_by_reason: dict[str, int]
    windowed: int  # prompts with a window of their dialogue's turns
    token_budget: dict[str, Any]
    family_share: dict[str, float]
    family_target: dict[str, float]
    mix: dict[str, Any]  # planned / target audits (prompts.sampler.mix_audit)
    design: dict[str, float]  # expected prompts per stratum under the targets alone (the gate's reference)
    sampler: dict[str, Any]  # the adaptive multipliers used and the runs they come from
    diversity: dict[str, Any]


class CacheCounters(TypedDict):
    """What the request cache did: hits, requests sent, checkpoints (docs/labeling.md)."""

    cache_hits: int
    requests_sent: int
    request_attempts: int
    checkpoint_chunks_written: int
    engine_seconds: float
    cache_unreadable_chunks: int
    cache_prefix: str | None
    cache_files_read: int  # chunks + segments a lookup opened (bounded by compaction, not by history)
    order: str


class CacheStats(CacheCounters):
    """One call of ``CachedEngine`` (its ``stats``)."""

    requests: int


class LabelStats(CacheCounters):
    prompts_in: int
    labeled: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: dict[str, int]
    fresh_prompt_tokens: int
    fresh_completion_tokens: int


class ScoreStats(TypedDict):
    labels_in: int
    scored: int
    layers: dict[str, int]
    dimensions: dict[str, list[str]]
    seconds: dict[str, float]
    judge: dict[str, Any]
    audit: dict[str, Any]


class GateStats(TypedDict):
    scored_in: int
    accepted: int
    rejected: int
    accept_rate: float
    rejected_by_reason: dict[str, int]
    accepted_by_family: dict[str, int]
    batch_gate_success: bool
    skipped_checks: list[str]
    failed_batch_expectations: NotRequired[list[str]]  # added by the run layer
    mix: NotRequired[dict[str, Any]]  # the accepted mix vs the targets (prompts.sampler.mix_audit), by the run layer
    outcomes_key: NotRequired[str]  # where this run's per-stratum outcomes are kept for the adaptive sampler


class Baseline(NamedTuple):
    """What the previous published snapshot says about a plausible row count (the batch gate's
    baseline; publishing reads it from ``latest.json``)."""

    snapshot_id: str
    accepted: int
    dialogues_read: int
    params: dict[str, Any]


# --- stage summaries (the run layer's hand-offs; Airflow XComs) -------------------------------


class IngestKeys(TypedDict):
    turns: str
    dialogues: str
    quarantined: str
    index: str


class IngestOut(TypedDict):
    keys: IngestKeys
    stats: IngestStats


class PromptKeys(TypedDict):
    prompts: str
    quarantined: str
    instructions: str


class ShardRef(TypedDict):
    """One label shard: what a mapped ``label`` task receives."""

    shard: int
    key: str
    n: int
    turns_key: NotRequired[str]  # the turns of the shard's dialogues (what scoring the shard reads)


class PromptsOut(TypedDict):
    keys: PromptKeys
    stats: PromptStats
    shards: list[ShardRef]


class LabelKeys(TypedDict):
    labels: str
    quarantined: str


class LabelOut(TypedDict):
    keys: LabelKeys
    stats: LabelStats


class ScoreKeys(TypedDict):
    scored: str


class ScoreOut(TypedDict):
    keys: ScoreKeys
    stats: ScoreStats


class GateKeys(TypedDict):
    accepted: str
    rejected: str
    gx: str  # prefix of this attempt's GX evidence (results JSON, Data Docs)


class GateSummary(TypedDict):
    suites: dict[str, Any]
    batch_gate_success: bool
    failed_batch_expectations: list[str]
    data_docs: str | None


class GateOut(TypedDict):
    keys: GateKeys
    stats: GateStats
    gx: GateSummary


class ExportManifest(TypedDict):
    """What ``exports/`` of a snapshot holds (the manifest's ``exports`` section)."""

    formats: list[str]
    files: dict[str, dict[str, str]]  # format -> split -> key relative to the snapshot
    counts: dict[str, dict[str, int]]  # split -> {domain, mixin} rows
    dialogues: dict[str, int]  # split -> distinct dialogues
    validation_fraction: float
    split_seed: int
    mixin: dict[str, Any]


class LatestMove(TypedDict):
    """What publishing did with ``latest.json``: moved to this snapshot, or why not."""

    moved: bool
    why: str
    latest: str | None  # the snapshot id latest.json points at afterwards


class PublishOut(TypedDict):
    snapshot_uri: str
    counts: dict[str, Any]
    latest: NotRequired[LatestMove]
    retention: NotRequired[dict[str, Any]]
    already_published: NotRequired[bool]
    asset_extra: NotRequired[dict[str, Any]]  # the snapshot asset event's extra (run layer)
    summary_md: NotRequired[str]  # headline figures in Markdown (run layer)


class GenerateOut(TypedDict):
    """The instructions DAG's ``generate``: where the candidates are, and how many."""

    key: str
    stats: dict[str, Any]


class ReviewExport(TypedDict):
    """The instructions DAG's ``export_for_review``: the pending version a person reviews."""

    version: str
    counts: dict[str, int]
    review_uri: str
    review_md: str


# Run params that change what a run reads or how it labels (their defaults: the deployment's config).
# A run with any of them set publishes its snapshot but does not move ``latest.json`` unless
# ``promote`` is set: what downstream readers get never depends on someone's test trigger.
OVERRIDE_PARAMS: dict[str, Any] = {"max_dialogues": 0, "sources": None, "engine": "config", "engine_base_url": None}


def run_overrides(params: dict[str, Any] | None) -> list[str]:
    """Names of the override params this run sets (``[]`` for a nightly / full run)."""
    params = params or {}
    return [k for k, default in OVERRIDE_PARAMS.items() if params.get(k) not in (default, None, [], "", 0)]


def promoted(params: dict[str, Any] | None) -> bool:
    """``promote``: move ``latest.json`` to this run's snapshot even if it is an override run or an
    older logical date than the current one (docs/reliability.md)."""
    return bool((params or {}).get("promote"))
