"""One typed, validated configuration object: a YAML file plus environment overrides.

Why one object: every threshold, path and engine knob lives here, so a run is fully described
by its config hash (recorded in each snapshot manifest) and an invalid value fails before any
work starts, with a message that names the offending key.

Environment overrides use ``DIALINSIGHT__SECTION__KEY=value`` (double underscores separate the
path; values are parsed as YAML scalars, so ``0.5``, ``true`` and ``[a, b]`` work).
``DIALINSIGHT_CONFIG`` points at another YAML file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dialinsight_core.errors import DataVerdict

# what a source's own PII pattern may redact as (pii.PLACEHOLDER_TYPES; a unit test keeps the two equal)
PiiKind = Literal["name", "phone", "email", "id_number", "ssn", "bank_card", "account_id", "username", "street_address",
                  "unit_number"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "dialinsight.yaml"
ENV_PREFIX = "DIALINSIGHT__"
MAX_SHARDS = 256
# Quality dimensions (docs/quality.md), cheapest layer first; every score is in [0, 1], 1 = good.
RULE_DIMENSIONS = ("schema_valid", "non_empty", "not_truncated", "length_ok", "lang_match", "repetition", "copy",
                   "echo", "refusal", "pii_leak", "task_form")
GROUNDING_DIMENSIONS = ("grounding", "coverage")
JUDGE_DIMENSIONS = ("judge_faithfulness", "judge_completeness", "judge_instruction_following", "judge_fluency")
DIMENSIONS = RULE_DIMENSIONS + GROUNDING_DIMENSIONS + JUDGE_DIMENSIONS


class ConfigError(DataVerdict, ValueError):
    """Raised for an unreadable or invalid configuration; the message names the key."""

    next_step = "fix the key named above in config/dialinsight.yaml (or its DIALINSIGHT__ env override)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Model):
    uri: str = "file://var/objectstore"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # objects larger than this go up as a multipart upload (parts of this size, each retried on its
    # own after a reset or a 5xx); smaller ones as one PUT. S3's minimum part size is 5 MiB.
    s3_multipart_mib: int = Field(default=64, ge=5)
    # In Airflow tasks, s3:// credentials (and the endpoint, if s3_endpoint_url is null) come from this
    # Airflow AWS connection when it exists; the CLI and a missing connection use boto3's default chain.
    aws_conn_id: str | None = "aws_default"

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("must start with file:// or s3://")
        return v


class SourceSettings(_Model):
    """One transcript source. Adapters: ``star`` (one STAR JSON file per dialogue), ``jsonl`` (one
    dialogue per line with a list of turns), ``csv`` / ``parquet`` (one turn per row)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    adapter: Literal["star", "jsonl", "csv", "parquet"] = "star"
    uri: str
    # source scene/task label -> scene of the taxonomy
    scene_map: dict[str, str] = Field(default_factory=dict)
    # source role label -> agent | customer (e.g. {usr: customer, sys: agent, 客户: customer, 经纪人: agent})
    roles: dict[str, str] = Field(default_factory=dict)
    # canonical field -> source field name; keys: dialogue_id, turns, role, text, turn_idx, scene
    fields: dict[str, str] = Field(default_factory=dict)
    # text encoding of jsonl / csv exports (e.g. gb18030 for many Chinese CRM exports); text is UTF-8 after ingest
    encoding: str = "utf-8"
    # a source that may hold nothing today; otherwise finding no file of its format stops the run at once
    optional: bool = False
    # this source's own personal ids, redacted before the built-in detectors: type -> regex; a group
    # marks only that part (e.g. {account_id: "客户编号\\s*(\\w{8})", username: "\\bu/[a-z0-9_]+"});
    # types: account_id, username, name, phone, email, id_number, bank_card, street_address, unit_number
    pii_patterns: dict[PiiKind, str] = Field(default_factory=dict)
    # what the conversations are about (a key of `domains`): the system prompt's domain, role names, scenes
    domain: str = "real_estate"

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v

    @field_validator("pii_patterns")
    @classmethod
    def _pii_patterns(cls, v: dict[str, str]) -> dict[str, str]:
        for kind, rx in v.items():
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"pii_patterns.{kind}: not a regular expression ({exc}): {rx!r}") from None
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - {"dialogue_id", "turns", "role", "text", "turn_idx", "scene"})
        if unknown:
            raise ValueError(f"unknown canonical fields {unknown}")
        return v


class IngestSettings(_Model):
    max_dialogues: int = Field(default=0, ge=0)  # 0 = all
    min_turns: int = Field(default=2, ge=1)
    max_turns: int = Field(default=200, ge=2)
    max_turn_chars: int = Field(default=4000, ge=10)
    # near-duplicate dialogues: MinHash over character shingles (works for Chinese), banded LSH
    near_dup_threshold: float = Field(default=0.8, gt=0, le=1)  # estimated Jaccard of shingle sets
    near_dup_shingle: int = Field(default=5, ge=2)
    # also compare with dialogues of earlier published snapshots (other logical dates): the same
    # conversation exported twice must not be labeled twice
    dedup_against_published: bool = True
    # the persistent near-duplicate index of published dialogues (dialinsight_core/dedup_index.py)
    dedup_index_buckets: Literal[1, 16, 256] = 16  # folders per kind; a layout choice: fixed once data is indexed
    dedup_batch: int = Field(default=8192, ge=1)  # dialogues per lookup of the published index (docs/benchmarks.md)
    batch_dialogues: int = Field(default=2048, ge=1)  # kept dialogues per row group written (memory holds one batch)
    # processes that validate, redact and classify ahead of the steps (0 = this machine's cores, max 8), started only
    # once parallel_after records were read (a small run stays in one process); tasks x workers <= the worker's cores
    workers: int = Field(default=0, ge=0)
    parallel_after: int = Field(default=2000, ge=1)
    # ask an LLM (the engine interface) for the scene of dialogues the rules leave at the default
    llm_scene_classifier: bool = False
    llm_classifier_engine: dict[str, Any] = Field(default_factory=lambda: {"max_tokens": 64})


class SceneSettings(_Model):
    description: str = ""
    keywords: list[str] = Field(default_factory=list)


class TaxonomySettings(_Model):
    scenes: dict[str, SceneSettings]
    default_scene: str
    roles: list[str] = Field(default_factory=lambda: ["agent", "customer"])
    # role -> behaviour -> keywords (en + zh); a turn gets the behaviour with most keyword hits
    behaviours: dict[str, dict[str, list[str]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_known(self) -> TaxonomySettings:
        if self.default_scene not in self.scenes:
            raise ValueError(f"default_scene {self.default_scene!r} is not one of scenes {sorted(self.scenes)}")
        unknown = sorted(set(self.behaviours) - set(self.roles))
        if unknown:
            raise ValueError(f"behaviours name roles {unknown} that are not in roles {self.roles}")
        return self


class DomainSettings(_Model):
    """What a source's conversations are about (docs/ingest.md, "Domains"): the words prompts use
    for the domain and the two roles, per prompt language, and optionally the domain's own scene
    taxonomy (else ``taxonomy.scenes``). Real estate is the default, not a constant."""

    name: dict[str, str]  # prompt language -> the domain as the system prompt says it ({en: real-estate, zh: 房地产})
    role_names: dict[str, dict[str, str]]  # prompt language -> role -> name ({zh: {agent: 经纪人, customer: 客户}})
    scenes: dict[str, SceneSettings] = Field(default_factory=dict)
    default_scene: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> DomainSettings:
        for lang in ("en", "zh"):
            if lang not in self.name or set(self.role_names.get(lang, {})) < {"agent", "customer"}:
                raise ValueError(f"a domain needs name.{lang} and role_names.{lang}.agent/.customer")
        if self.scenes and self.default_scene not in self.scenes:
            raise ValueError(f"default_scene {self.default_scene!r} is not one of the domain's scenes {sorted(self.scenes)}")
        return self


def _real_estate() -> dict[str, DomainSettings]:
    return {"real_estate": DomainSettings(name={"en": "real-estate", "zh": "房地产"},
                                          role_names={"en": {"agent": "Agent", "customer": "Customer"},
                                                      "zh": {"agent": "经纪人", "customer": "客户"}})}


class TaskFamilySettings(_Model):
    target_share: float = Field(gt=0, le=1)
    output_schema_id: str
    min_chars: int = Field(default=20, ge=0)
    max_chars: int = Field(default=1500, ge=1)
    # grounding's topic check: the answer's content words must be found in the dialogue. True where the
    # answer restates the dialogue (extraction, summary); a reply or an assessment writes new words, and
    # its facts (numbers, times, places) are still checked one by one
    lexical_support: bool = True
    # the shape an answer of this family takes (the task_form rule, docs/quality.md): phrases (extraction:
    # each value one phrase, nobody addressed), report (summary, analysis: about the dialogue, the reader
    # not addressed as "you"/您), reply (spoken to the customer, who is not "the customer"/客户), any
    form: Literal["any", "phrases", "report", "reply"] = "any"
    # a dialogue longer than the prompt's token budget (docs/architecture.md, "Long dialogues"): whole =
    # the task needs every turn, the prompt is quarantined (prompt_too_long); tail = keep the last turns
    # (a reply follows the last customer turn); focus = the span with most of the instruction's role focus
    window: Literal["whole", "tail", "focus"] = "whole"


class AdaptiveSettings(_Model):
    """Sampling weights re-solved from earlier runs' per-stratum accept rates (docs/architecture.md,
    "Sampling"), so the accepted mix, not only the prompt mix, lands on the targets."""

    enabled: bool = True
    history_runs: int = Field(default=5, ge=1, le=100)  # the latest runs (by logical date) whose gate outcomes count
    decay: float = Field(default=0.5, gt=0, le=1)  # weight of a run one step older than the next
    prior_strength: float = Field(default=20.0, ge=0)  # pseudo-records pulling a stratum's rate to its family's
    max_boost: float = Field(default=4.0, ge=1)  # a multiplier stays in [1/max_boost, max_boost]: no stratum vanishes
    min_rate: float = Field(default=0.02, gt=0, le=1)  # accept rates below this count as this
    prefix: str = "sampler/outcomes"  # object-store prefix of the per-run outcome counts


class PromptSettings(_Model):
    library_path: str = "config/instructions/library.yaml"
    # auto: the latest human-approved version in the object store, else the bundled file
    library_source: Literal["auto", "file"] = "auto"
    output_schema_dir: str = "config/output_schemas"
    instructions_per_dialogue: int = Field(default=2, ge=1, le=20)
    variants: list[str] = Field(default_factory=lambda: ["plain", "numbered"])  # output layout of the ask
    # registers of the ask (templates/ask_<name>.j2) and their sampling weights
    templates: dict[str, float] = Field(default_factory=lambda: {"formal": 2.0, "casual": 1.0, "brief": 1.0})
    # where the ask stands: after the dialogue (prompts about one dialogue share vLLM's prefix) or before it
    placements: dict[str, float] = Field(default_factory=lambda: {"after": 3.0, "before": 1.0})
    # target share of the instructions' role focus; joint targets with task_families.*.target_share by
    # iterative proportional fitting over the cells the library has for a dialogue's scene and language
    role_focus_shares: dict[str, float] = Field(default_factory=lambda: {"agent": 0.4, "customer": 0.3, "both": 0.3})
    adaptive: AdaptiveSettings = Field(default_factory=AdaptiveSettings)
    max_dialogue_chars: int = Field(default=60000, ge=100)  # runaway input: quarantined before any windowing
    # the prompt's token budget: context (engine.max_model_len when null) - engine.max_tokens - token_margin
    context_tokens: int | None = Field(default=None, ge=256)
    token_margin: int = Field(default=32, ge=0)  # the chat template's own tokens
    tokenizer: str | None = None  # tokenizer to count with; null = engine.model if it is a local folder, else bytes
    min_window_turns: int = Field(default=2, ge=1)  # a window shorter than this cannot carry a task
    scene_weight: float = Field(default=2.0, ge=1.0)  # boost for scene-specific instructions
    # turns read at a time: build_prompts makes and writes a part's prompts before reading the next
    batch_turns: int = Field(default=65536, ge=1)

    @model_validator(mode="after")
    def _shares(self) -> PromptSettings:
        for name, shares, allowed in (("templates", self.templates, None), ("placements", self.placements, {"after", "before"}),
                                      ("role_focus_shares", self.role_focus_shares, {"agent", "customer", "both"})):
            if allowed is not None and not set(shares) <= allowed:
                raise ValueError(f"prompts.{name}: keys must be among {sorted(allowed)}, got {sorted(shares)}")
            if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"prompts.{name}: weights must be >= 0 with a positive sum")
        if not self.variants:
            raise ValueError("prompts.variants: at least one")
        return self


class InstructionSettings(_Model):
    """Two-stage instruction library (docs/instructions.md): seeds, controlled evolution, curation."""

    operators_path: str = "config/instructions/operators.yaml"
    operators: list[str] = Field(default_factory=list)  # names to use; empty = all in the file
    rounds: int = Field(default=1, ge=1, le=10)
    seeds_per_cell: int = Field(default=3, ge=1, le=20)
    max_chars: int = Field(default=400, ge=20)  # longer instructions are eliminated (too_long)
    unchanged_threshold: float = Field(default=0.9, gt=0, le=1)  # similarity to the parent = unchanged
    near_dup_threshold: float = Field(default=0.8, gt=0, le=1)  # similarity to another instruction
    library_prefix: str = "library"  # object-store prefix of published library versions
    sample_dialogues: int = Field(default=2, ge=1, le=10)  # context dialogues per seed cell
    seed_families: list[str] = Field(default_factory=list)  # [] = every task family
    seed_role_foci: list[str] = Field(default_factory=lambda: ["both"])
    max_parents: int = Field(default=8, ge=1)  # instructions evolved per round


class EngineSettings(_Model):
    kind: Literal["vllm", "openai"] = "vllm"
    model: str = ".cache/models/smollm2-135m-instruct"
    served_model_name: str | None = None
    base_url: str | None = None
    # the served model's revision (e.g. its Hugging Face commit) for kind=openai: a server does not
    # expose its weights, so new weights behind the same model name need a new revision here
    model_revision: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=256, ge=1)
    repetition_penalty: float = Field(default=1.1, gt=0)
    seed: int = 0
    max_model_len: int = Field(default=2048, ge=256)
    dtype: str = "bfloat16"
    cpu_kvcache_gib: int = Field(default=1, ge=1)
    cpu_threads_bind: str = "auto"
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    max_concurrency: int = Field(default=8, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)  # first retry waits ~backoff_s, doubling (full jitter)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # in-process vLLM on a GPU worker (ignored by kind=openai; the server has its own flags)
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_prefix_caching: bool = True

    @model_validator(mode="after")
    def _server_needs_url(self) -> EngineSettings:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind 'openai' needs base_url")
        return self


class LabelingSettings(_Model):
    shards: int = Field(default=2, ge=1, le=MAX_SHARDS)
    max_failure_rate: float = Field(default=0.5, ge=0, le=1)
    # results are flushed to the shard's checkpoint (= request cache) every this many records,
    # so a killed task loses at most one chunk; the retry resends only what is not cached
    checkpoint_every: int = Field(default=64, ge=1)
    cache: bool = True
    cache_prefix: str = "cache/label"
    # the cache index: rows bucketed by the first hex digits of their key; compaction folds the
    # checkpoint chunks into the buckets once this many have accumulated (docs/labeling.md)
    cache_buckets: Literal[1, 16, 256, 4096] = 16
    cache_compact_chunks: int = Field(default=32, ge=1)
    # prefix: prompts sharing a dialogue prefix run together (vLLM prefix caching); input: as built;
    # shuffled: seeded random order (the benchmark's baseline)
    order: Literal["prefix", "input", "shuffled"] = "prefix"


class JudgeSettings(_Model):
    """LLM judge of the cascade: only for borderline records and a random audit sample."""

    enabled: bool = True
    # a record that passes every row threshold is "in doubt" (and goes to the judge) when its
    # pre-judge overall score lies in [band_low, band_high], or when a graded dimension (one whose
    # threshold is below 1) is less than doubt_margin above its threshold
    band_low: float = Field(default=0.75, ge=0, le=1)
    band_high: float = Field(default=0.9, ge=0, le=1)
    doubt_margin: float = Field(default=0.1, ge=0, le=1)
    audit_fraction: float = Field(default=0.05, ge=0, le=1)  # random sample of all records, seeded
    max_share: float = Field(default=0.3, ge=0, le=1)  # hard cap: judged records / scored records
    max_answer_chars: int = Field(default=2000, ge=100)
    max_dialogue_chars: int = Field(default=6000, ge=100)
    # overrides of the `engine` section for the judge (e.g. a bigger model on a vllm serve endpoint)
    engine: dict[str, Any] = Field(default_factory=lambda: {"max_tokens": 160})

    @model_validator(mode="after")
    def _band(self) -> JudgeSettings:
        if self.band_low > self.band_high:
            raise ValueError(f"band_low {self.band_low} > band_high {self.band_high}")
        unknown = sorted(set(self.engine) - set(EngineSettings.model_fields))
        if unknown:
            raise ValueError(f"engine overrides name unknown engine keys {unknown}")
        return self


class QualitySettings(_Model):
    weights: dict[str, float]
    # row gate: minimum score per dimension; a record below any of them is rejected with that
    # dimension's reason code (dialinsight_core.quality.REASON_CODES)
    thresholds: dict[str, float] = Field(default_factory=dict)
    overall_min: float = Field(default=0.6, ge=0, le=1)
    shingle_size: int = Field(default=8, ge=2)  # copy check: n-gram length (CJK characters count as words)
    echo_shingle_size: int = Field(default=4, ge=2)  # echo check: n-grams of the instruction in the answer
    # grounding: terms that are facts when an answer names them (must occur in the dialogue)
    amenities: list[str] = Field(default_factory=list)
    # families whose answers speak in the agent's voice: chat boilerplate is legitimate there
    boilerplate_exempt_families: list[str] = Field(default_factory=lambda: ["dialogue_generation"])
    # processes for the cheap layers, one label shard each (0 = the cores this process may use, at
    # most 8); used only for runs of at least parallel_min_labels labels in two or more shards.
    # Mind Airflow's worker concurrency: tasks x workers should not exceed the worker's cores
    workers: int = Field(default=0, ge=0)
    parallel_min_labels: int = Field(default=5000, ge=1)
    judge: JudgeSettings = JudgeSettings()

    @field_validator("weights", "thresholds")
    @classmethod
    def _dims(cls, v: dict[str, float], info: Any) -> dict[str, float]:
        unknown = sorted(set(v) - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"unknown dimensions {unknown}; known: {list(DIMENSIONS)}")
        if info.field_name == "weights" and (any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError("weights must be >= 0 and not all zero")
        if info.field_name == "thresholds" and any(not 0 <= t <= 1 for t in v.values()):
            raise ValueError("thresholds must be in [0, 1]")
        return v


class CollapseSettings(_Model):
    """Score-collapse alarm: a score column whose values barely vary is a broken scorer."""

    columns: list[str] = Field(default_factory=lambda: ["overall_score"])
    min_stdev: float = Field(default=0.02, ge=0)
    min_rows: int = Field(default=20, ge=2)  # fewer non-null values: the check is skipped (reported)


class RowCountSettings(_Model):
    """Accepted rows must be plausible against the previous published snapshot."""

    min_ratio: float = Field(default=0.5, ge=0)
    max_ratio: float = Field(default=2.0, ge=0)
    min_previous_rows: int = Field(default=20, ge=1)  # a smaller previous snapshot is no baseline


class GateSettings(_Model):
    min_accept_rate: float = Field(default=0.2, ge=0, le=1)
    min_mean_overall: float = Field(default=0.5, ge=0, le=1)
    # mean of each listed dimension over all scored records must reach the minimum
    min_mean: dict[str, float] = Field(default_factory=dict)
    min_rows: int = Field(default=1, ge=0)
    # share of each task family among accepted records must be within target_share +- tolerance
    task_mix_tolerance: float = Field(default=0.15, ge=0, le=1)
    task_mix_min_rows: int = Field(default=40, ge=1)  # fewer accepted rows: the check is skipped (reported)
    # a family's band is target +- max(task_mix_tolerance, task_mix_z standard errors of a share of n accepted
    # rows): a small run is not failed for the sampling noise a perfect sampler shows (0 = the tolerance alone)
    task_mix_z: float = Field(default=3.0, ge=0)
    max_judge_failure_rate: float = Field(default=0.5, ge=0, le=1)
    judge_failure_min_rows: int = Field(default=10, ge=1)  # fewer judged records: the rate check is skipped (reported)
    collapse: CollapseSettings = CollapseSettings()
    row_count: RowCountSettings = RowCountSettings()
    suite_version: str = "2"
    # the row gate validates the scored table in parts of this many rows (memory holds one part);
    # the batch suites always see every row
    batch_rows: int = Field(default=50_000, ge=1)
    data_docs: bool = True  # render GX Data Docs (HTML) beside each snapshot

    @field_validator("min_mean")
    @classmethod
    def _dims(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DIMENSIONS) - {"overall_score"})
        if unknown:
            raise ValueError(f"unknown dimensions {unknown}; known: {list(DIMENSIONS)}")
        return v


class AirflowSettings(_Model):
    schedule: str = "0 2 * * *"
    instructions_schedule: str | None = "0 3 * * 1"  # the instruction library DAG (weekly); null = manual only
    retries: int = Field(default=2, ge=0)
    retry_delay_s: int = Field(default=60, ge=0)
    max_retry_delay_s: int = Field(default=900, ge=0)
    engine_pool: str = "llm_engine"
    engine_pool_slots: int = Field(default=1, ge=1)
    label_queue: str = "default"  # Celery queue of label tasks ("gpu" in docker-compose)
    task_timeout_s: int = Field(default=3600, ge=60)


class NotificationSettings(_Model):
    """Who hears about a run and how (docs/operations.md). Credentials live in Airflow Connections,
    never here: ``email_conn_id`` is an SMTP connection, ``webhook_conn_id`` an HTTP connection whose
    host is the webhook URL (a bearer token, if any, in its password)."""

    channels: list[Literal["email", "webhook"]] = Field(default_factory=list)  # [] = task log only
    email_conn_id: str = "smtp_default"
    email_to: list[str] = Field(default_factory=list)
    email_from: str | None = None      # default: the SMTP connection's from_email extra
    webhook_conn_id: str = "dialinsight_webhook"
    on_failure: bool = True            # a task failed after its last try
    on_success: bool = True            # a run published its snapshot: the run summary
    # the nightly run is late: not finished this many hours after its slot (Airflow DeadlineAlert); null = off
    deadline_hours: float | None = Field(default=6.0, gt=0)
    max_error_chars: int = Field(default=600, ge=80)  # the error line of a failure message is cut here

    @model_validator(mode="after")
    def _recipients(self) -> NotificationSettings:
        if "email" in self.channels and not self.email_to:
            raise ValueError("notifications.email_to must list recipients when channels has email")
        return self


class MixinSettings(_Model):
    """A general instruction dataset mixed into the exports (the paper's "domain only vs mixed")."""

    uri: str | None = None  # local path (relative to the project) or s3://…: OpenAI chat JSONL
    ratio: float = Field(default=0.0, ge=0.0, le=10.0)  # general rows per accepted domain row
    name: str = Field(default="general", pattern=r"^[A-Za-z0-9_.-]+$")  # provenance recorded on each mixed row


class ExportSettings(_Model):
    formats: list[Literal["openai", "sharegpt", "alpaca"]] = Field(default_factory=lambda: ["openai", "sharegpt", "alpaca"])
    validation_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)  # share of *dialogues* in validation; 0 = no split
    split_seed: int = 0
    mixin: MixinSettings = MixinSettings()


class CardSettings(_Model):
    license: str = "mit"  # the published data's license: it must allow what the sources' licenses allow
    pretty_name: str = "dialinsight instruction-tuning snapshot"
    limitations: list[str] = Field(default_factory=list)  # added to the card's "Known limitations"


class RetentionSettings(_Model):
    """Which committed snapshots to keep (docs/reliability.md). A snapshot is kept when any rule keeps
    it; the one ``latest.json`` points at is always kept. Both null: keep everything."""

    keep_last: int | None = Field(default=None, ge=1)  # the newest N committed snapshots (by ds, then commit time)
    max_age_days: float | None = Field(default=None, gt=0)  # snapshots committed in the last N days
    # a snapshot folder without a manifest (a publish that died and was never rerun) whose newest
    # file is older than this is deleted too (readers never saw it)
    orphans_after_hours: float = Field(default=48.0, gt=0)


class PublishingSettings(_Model):
    # rows completed, redacted and written at a time: publish's memory follows this, not the snapshot
    batch_rows: int = Field(default=8192, ge=1)
    # processes that redact rejected answers (0 = this machine's cores, max 8), for runs with at least
    # parallel_min_rows rejected rows. Airflow: worker concurrency x workers <= the worker's cores
    workers: int = Field(default=0, ge=0)
    parallel_min_rows: int = Field(default=5000, ge=1)
    # Arrow's memory pool for the stage: jemalloc returns freed pages that mimalloc (Arrow's default)
    # kept mapped (1M dialogues: 932 against 1,009 MiB; docs/benchmarks.md). "default": leave Arrow's
    memory_pool: Literal["jemalloc", "mimalloc", "system", "default"] = "jemalloc"
    exports: ExportSettings = ExportSettings()
    card: CardSettings = CardSettings()
    retention: RetentionSettings = RetentionSettings()


class FinetuneSettings(_Model):
    """Chat-template SFT of ``evaluate.base_model`` (docs/evaluation.md): LoRA by default, full
    fine-tuning with ``lora_rank: 0``."""

    max_steps: int = Field(default=16, ge=1)
    batch_size: int = Field(default=2, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    max_length: int = Field(default=1024, ge=32)  # longer examples are skipped and counted, never cut
    lora_rank: int = Field(default=8, ge=0)  # 0 = full fine-tuning
    lora_alpha: int = Field(default=16, ge=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    checkpoint_every: int = Field(default=8, ge=1)  # steps between checkpoints in the object store
    max_rows: int = Field(default=0, ge=0)  # training rows drawn from the export (0 = all)
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    threads: int = Field(default=0, ge=0)  # torch threads on CPU (0 = torch's default)


class GeneralEvalSettings(_Model):
    """Multiple-choice general-ability sets (``root``/<set>/test.jsonl), scored by log-likelihood."""

    root: str = "data/general_eval"
    sets: list[str] = Field(default_factory=lambda: ["mmlu_redux_en", "gaokao_bench_zh", "agieval_gaokao_zh"])
    items_per_set: int = Field(default=24, ge=0)  # stratified by subject; 0 = every item
    seed: int = 0
    max_length: int = Field(default=2048, ge=64)


class RegressionSettings(_Model):
    """What a drop in general accuracy (after - before, in points) does to the evaluation run."""

    max_general_drop_points: float = Field(default=5.0, ge=0)
    action: Literal["warn", "fail"] = "warn"


class EvaluateSettings(_Model):
    """The ``dialinsight_evaluate`` DAG: fine-tune on a snapshot, domain and general before -> after."""

    base_model: str | None = None  # a transformers model folder or hub id; null = engine.model
    prefix: str = "eval"  # folder beside the snapshot's files
    ablation: bool = True  # also fine-tune on an equal-size sample of accepted + rejected rows
    domain_prompts: int = Field(default=16, ge=0)  # held-out prompts answered per model (0 = all)
    max_new_tokens: int = Field(default=256, ge=1)
    finetune: FinetuneSettings = FinetuneSettings()
    general: GeneralEvalSettings = GeneralEvalSettings()
    regression: RegressionSettings = RegressionSettings()
    queue: str = "default"  # Celery queue of the model tasks ("gpu" in docker-compose)

    def variants(self) -> list[str]:
        """The models measured: the base, fine-tuned on accepted rows, and (``ablation``) on a sample with rejected rows."""
        return ["base", "accepted"] + (["ablation"] if self.ablation else [])


class Settings(_Model):
    seed: int = 20240314
    storage: StorageSettings = StorageSettings()
    sources: list[SourceSettings]
    ingest: IngestSettings = IngestSettings()
    taxonomy: TaxonomySettings
    domains: dict[str, DomainSettings] = Field(default_factory=_real_estate)
    task_families: dict[str, TaskFamilySettings]
    prompts: PromptSettings = PromptSettings()
    instructions: InstructionSettings = InstructionSettings()
    engine: EngineSettings = EngineSettings()
    labeling: LabelingSettings = LabelingSettings()
    quality: QualitySettings
    gates: GateSettings = GateSettings()
    publishing: PublishingSettings = PublishingSettings()
    airflow: AirflowSettings = AirflowSettings()
    notifications: NotificationSettings = NotificationSettings()
    evaluate: EvaluateSettings = EvaluateSettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        total = sum(f.target_share for f in self.task_families.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"task_families target_share values must sum to 1 (got {total:.4f})")
        for src in self.sources:
            if src.domain not in self.domains:
                raise ValueError(f"sources[{src.name}].domain {src.domain!r} is not one of domains {sorted(self.domains)}")
            bad = sorted(set(src.scene_map.values()) - set(self.scenes_of(src.domain)[0]))
            if bad:
                raise ValueError(f"sources[{src.name}].scene_map names unknown scenes {bad}")
        if not self.sources:
            raise ValueError("sources must not be empty")
        known_cols = {"overall_score"} | {f"q_{d}" for d in DIMENSIONS}
        bad_cols = sorted(set(self.gates.collapse.columns) - known_cols)
        if bad_cols:
            raise ValueError(f"gates.collapse.columns names unknown columns {bad_cols}; known: {sorted(known_cols)}")
        return self

    def domain_name_of(self, source: str | None) -> str:
        """The domain key of the source named ``source`` (``real_estate`` for any other name)."""
        return next((s.domain for s in self.sources if s.name == source), "real_estate")

    def domain_of(self, source: str | None) -> DomainSettings:
        """The domain of the source named ``source`` (the default domain for any other name)."""
        return self.domains.get(self.domain_name_of(source)) or next(iter(self.domains.values()))

    def scenes_of(self, domain: str | None) -> tuple[dict[str, SceneSettings], str]:
        """(scenes, default scene) of a domain: its own taxonomy, else ``taxonomy.scenes``."""
        d = self.domains.get(domain or "")
        if d is not None and d.scenes:
            return d.scenes, d.default_scene or next(iter(d.scenes))
        return self.taxonomy.scenes, self.taxonomy.default_scene

    def all_scenes(self) -> set[str]:
        """Every scene name of the taxonomy and of every domain (what an instruction may name)."""
        return set(self.taxonomy.scenes).union(*(d.scenes for d in self.domains.values()))

    def with_engine(self, overrides: dict[str, Any]) -> Settings:
        """These settings with ``overrides`` applied over the ``engine`` section (a task's own engine)."""
        return self.with_overrides({f"engine.{k}": v for k, v in overrides.items()})

    def judge_settings(self) -> Settings:
        """These settings with ``quality.judge.engine`` applied over ``engine`` (the judge's engine)."""
        return self.with_engine(self.quality.judge.engine)

    def resolve_path(self, value: str) -> Path:
        """Paths in the config are relative to the project root."""
        p = Path(value)
        return p if p.is_absolute() else PROJECT_ROOT / p

    def config_hash(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """Apply dotted-path overrides (e.g. from Airflow Params) and re-validate."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            _set_path(data, dotted.split("."), value)
        return _validate(data, source="overrides")


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX):
            path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
            if path:
                _set_path(out, path, yaml.safe_load(raw) if raw != "" else None)
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        # an explicit empty mapping ("{}") replaces: it is how an override clears e.g. gates.min_mean
        merged[k] = _deep_merge(merged[k], v) if v and isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _validate(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError(f"invalid dialinsight config ({source}):\n" + "\n".join(lines)) from None


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load the YAML file (default ``config/dialinsight.yaml``) and apply env overrides."""
    env = dict(os.environ if environ is None else environ)
    cfg_path = Path(path or env.get("DIALINSIGHT_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read dialinsight config {cfg_path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"dialinsight config {cfg_path} must be a mapping at the top level")
    return _validate(_deep_merge(data, _env_overrides(env)), source=str(cfg_path))
