"""
### dialinsight_nightly

Turns the configured dialogue sources into quality-gated instruction-tuning data
(Dial-insight, arXiv 2403.09167) and publishes a versioned Parquet snapshot.

**Tasks:** `ingest` (STAR / JSONL / CSV / Parquet sources, validation + quarantine, PII
redaction with typed placeholders, exact + near-duplicate removal, scenes and role behaviours)
→ `build_prompts` → `plan_shards` → `label` (mapped over a bounded number of shards, serialised
by the `llm_engine` pool so engines never exhaust memory; results are checkpointed into the
request cache while a shard runs, so a retried or cleared `label` task resends only what is not
cached and a rerun of a finished run loads no model: docs/labeling.md) → `score` (quality cascade: rule and
grounding checks on every record, an LLM judge only for records in doubt plus an audit sample;
also in the engine pool) → `gate` (Great Expectations row suite + batch suites: accept rate,
dimension means, task mix, score collapse, row count vs the previous snapshot) → `publish`.

**Outputs** (object store from `config/dialinsight.yaml`, `storage.uri`): a snapshot
`snapshots/ds=YYYY-MM-DD/run=<run_id>/` with `data/` (complete chat examples with lineage),
`rejected/` and `quarantined/` Parquet, `exports/` (OpenAI / ShareGPT / Alpaca JSONL),
`README.md` (a dataset card `datasets.load_dataset` reads), `report.html` (the run report, offline),
`manifest.json`, `gx/` (GX results and Data Docs). See docs/dataset.md. `snapshots/latest.json`
moves only when every gate passed.

**Who is told:** a task that fails after its last try (at once for a data verdict: a failed gate,
an invalid config, an empty source) sends what failed, why and where to look; `publish` sends the
run summary; a run not finished `notifications.deadline_hours` after its slot sends a late alert.
Channels (e-mail, JSON webhook) and their Airflow Connections: `notifications` in the config,
docs/operations.md. Each task's log opens with its verdict line (counts, where the output is).

**Where is my snapshot?** `publish` emits the `dialinsight_snapshot` asset event. Its extra holds
the snapshot URI, the report, the card, the counts and the accept rate, and the task log starts
with the same summary. `dialinsight_snapshot_check` runs on each event. A failing batch gate
fails `gate` with the failed expectations and publishes nothing (no event); its evidence stays
under `work/ds=.../run=.../gate/gx/`.

**Params:** `max_dialogues` (0 = all), `sources` (empty = all configured), `engine`
(`config`, `vllm` or `openai`), `engine_base_url` (for `openai`), `shards` (0 = config),
`promote`. A run that sets `max_dialogues`, `sources` or `engine` publishes its snapshot but does
not move `snapshots/latest.json` (what downstream readers load) unless `promote` is on; nor does a
run whose logical date is older than latest's (docs/reliability.md).
"""

from __future__ import annotations

import logging
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING

from airflow.sdk import Asset, Param, dag, get_current_context, task
from dialinsight_airflow.callbacks import default_args, nightly_deadline, on_run_success, stage

from dialinsight_core.config import load_settings
from dialinsight_core.contracts import GateOut, IngestOut, LabelOut, PromptsOut, PublishOut, ScoreOut, ShardRef

if TYPE_CHECKING:  # the run layer imports pyarrow: not at parse time
    from dialinsight_core.runs.context import RunContext

_settings = load_settings()  # YAML + env only: no DB, no connections at parse time
_cfg = _settings.airflow
# every published snapshot is an event of this asset (extra: snapshot id, uri, counts, accept rate, suites);
# name-only: a URI scheme would make Airflow load every provider's URI handlers at parse time
SNAPSHOT_ASSET = Asset(name="dialinsight_snapshot", group="dialinsight")
log = logging.getLogger("dialinsight")


def _runs() -> ModuleType:
    """The run layer, imported when a task runs, so parsing this file never loads the stages."""
    from dialinsight_core.runs import nightly  # lazy: the stages import pyarrow, pandas, GX; parse time stays light

    return nightly


def _ctx() -> RunContext:
    from dialinsight_airflow.context import run_context  # lazy: builds settings from the running task's context

    return run_context(get_current_context())


def _done(ctx: RunContext, name: str, out):
    log.info(_runs().verdict_line(ctx, name, out))
    return out


@dag(
    dag_id="dialinsight_nightly",
    schedule=_cfg.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(_settings),
    deadline=nightly_deadline(_settings),
    doc_md=__doc__,
    tags=["dialinsight", "nightly", "llm-labeling"],
    params={
        "max_dialogues": Param(0, type="integer", minimum=0, description="Dialogues to read per source; 0 = all."),
        "sources": Param(None, type=["null", "array"], items={"type": "string"},
                         description="Source names from the config, one per line; empty = all."),
        "engine": Param("config", type="string", enum=["config", "vllm", "openai"],
                        description="LLM engine; 'config' keeps engine.kind from the config file."),
        "engine_base_url": Param(None, type=["null", "string"],
                                 description="OpenAI-compatible base URL when engine=openai (e.g. http://vllm:8000/v1)."),
        "shards": Param(0, type="integer", minimum=0, maximum=256, description="Label shards; 0 = config."),
        "promote": Param(False, type="boolean",
                         description="Move latest.json to this run's snapshot even if the run sets max_dialogues, "
                                     "sources or engine, or its date is older than latest's (docs/reliability.md)."),
    },
)
def dialinsight_nightly() -> None:
    @task
    def ingest() -> IngestOut:
        """A source that gives nothing (missing, empty, another format) fails at once: a config error, no retries."""
        with stage():
            ctx = _ctx()
            return _done(ctx, "ingest", _runs().run_ingest(ctx))

    @task
    def build_prompts(ingest_out: IngestOut) -> PromptsOut:
        with stage():
            ctx = _ctx()
            return _done(ctx, "build_prompts", _runs().run_build_prompts(ctx, ingest_out))

    @task
    def plan_shards(prompts_out: PromptsOut) -> list[ShardRef]:
        """The bounded list of label shards (<= labeling.shards) to map over."""
        return prompts_out["shards"]

    @task(pool=_cfg.engine_pool, queue=_cfg.label_queue, max_active_tis_per_dagrun=_cfg.engine_pool_slots)
    def label(shard: ShardRef) -> LabelOut:
        """An engine or server that does not answer is retried with backoff; a retry resends only what is not cached."""
        with stage():
            ctx = _ctx()
            return _done(ctx, "label", _runs().run_label_shard(ctx, shard))

    @task(pool=_cfg.engine_pool, queue=_cfg.label_queue)
    def score(ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut]) -> ScoreOut:
        """Quality cascade: rules + grounding on every record, the LLM judge (engine pool) on the few in doubt."""
        with stage():
            ctx = _ctx()
            return _done(ctx, "score", _runs().run_score(ctx, ingest_out, prompts_out, list(label_outs)))

    @task
    def gate(ingest_out: IngestOut, score_out: ScoreOut) -> GateOut:
        """GX suites; a failing batch gate fails at once (a data verdict, not a transient fault: no retries)."""
        with stage():
            ctx = _ctx()
            return _done(ctx, "gate", _runs().run_gate(ctx, score_out, ingest_out))

    @task(outlets=[SNAPSHOT_ASSET], on_success_callback=on_run_success())
    def publish(ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut], score_out: ScoreOut,
                gate_out: GateOut) -> PublishOut:
        """Runs only after every gate passed; its asset event is what downstream DAGs wait for."""
        with stage():
            runs = _runs()
            labels = list(label_outs)
            runs.check_conservation(ingest_out, prompts_out, labels, score_out, gate_out)
            out = runs.run_publish(_ctx(), ingest_out, prompts_out, labels, score_out, gate_out)
            get_current_context()["outlet_events"][SNAPSHOT_ASSET].extra = out["asset_extra"]
            log.info("publish OK\n%s", out["summary_md"])  # in the task log: where the snapshot is and what it holds
            return out

    ing = ingest()
    pr = build_prompts(ing)
    labels = label.expand(shard=plan_shards(pr))
    sc = score(ing, pr, labels)
    gt = gate(ing, sc)
    publish(ing, pr, labels, sc, gt)


dialinsight_nightly()
