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

**Where is my snapshot?** `publish` emits the `dialinsight_snapshot` asset event. Its extra holds
the snapshot URI, the report, the card, the counts and the accept rate, and the task log starts
with the same summary. `dialinsight_snapshot_check` runs on each event. A failing batch gate
fails `gate` with the failed expectations and publishes nothing (no event); its evidence stays
under `work/ds=.../run=.../gate/gx/`.

**Params:** `max_dialogues` (0 = all), `sources` (empty = all configured), `engine`
(`config`, `vllm` or `openai`), `engine_base_url` (for `openai`), `shards` (0 = config).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING

from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from dialinsight_airflow.callbacks import on_task_failure

from dialinsight_core.config import load_settings
from dialinsight_core.contracts import GateOut, IngestOut, LabelOut, PromptsOut, PublishOut, ScoreOut, ShardRef

if TYPE_CHECKING:  # the run layer imports pyarrow: not at parse time
    from dialinsight_core.runs.context import RunContext

_cfg = load_settings().airflow  # YAML + env only: no DB, no connections at parse time
# every published snapshot is an event of this asset (extra: snapshot id, uri, counts, accept rate, suites);
# name-only: a URI scheme would make Airflow load every provider's URI handlers at parse time
SNAPSHOT_ASSET = Asset(name="dialinsight_snapshot", group="dialinsight")

default_args = {
    "owner": "dialinsight",
    "retries": _cfg.retries,
    "retry_delay": timedelta(seconds=_cfg.retry_delay_s),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(seconds=_cfg.max_retry_delay_s),
    "execution_timeout": timedelta(seconds=_cfg.task_timeout_s),
    "on_failure_callback": on_task_failure,
}


def _runs() -> ModuleType:
    """The run layer, imported when a task runs, so parsing this file never loads the stages."""
    from dialinsight_core.runs import nightly  # lazy: the stages import pyarrow, pandas, GX; parse time stays light

    return nightly


def _ctx() -> RunContext:
    from dialinsight_airflow.context import run_context  # lazy: builds settings from the running task's context

    return run_context(get_current_context())


@dag(
    dag_id="dialinsight_nightly",
    schedule=_cfg.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
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
    },
)
def dialinsight_nightly() -> None:
    @task
    def ingest() -> IngestOut:
        """A source that gives nothing (missing, empty, another format) fails at once: a config error, no retries."""
        runs = _runs()
        try:
            return runs.run_ingest(_ctx())
        except runs.SourceError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def build_prompts(ingest_out: IngestOut) -> PromptsOut:
        return _runs().run_build_prompts(_ctx(), ingest_out)

    @task
    def plan_shards(prompts_out: PromptsOut) -> list[ShardRef]:
        """The bounded list of label shards (<= labeling.shards) to map over."""
        return prompts_out["shards"]

    @task(pool=_cfg.engine_pool, queue=_cfg.label_queue, max_active_tis_per_dagrun=_cfg.engine_pool_slots)
    def label(shard: ShardRef) -> LabelOut:
        return _runs().run_label_shard(_ctx(), shard)

    @task(pool=_cfg.engine_pool, queue=_cfg.label_queue)
    def score(ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut]) -> ScoreOut:
        """Quality cascade: rules + grounding on every record, the LLM judge (engine pool) on the few in doubt."""
        return _runs().run_score(_ctx(), ingest_out, prompts_out, list(label_outs))

    @task
    def gate(ingest_out: IngestOut, score_out: ScoreOut) -> GateOut:
        """GX suites; a failing batch gate fails at once (a data verdict, not a transient fault: no retries)."""
        runs = _runs()
        try:
            return runs.run_gate(_ctx(), score_out, ingest_out)
        except runs.BatchGateFailed as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[SNAPSHOT_ASSET])
    def publish(ingest_out: IngestOut, prompts_out: PromptsOut, label_outs: list[LabelOut], score_out: ScoreOut,
                gate_out: GateOut) -> PublishOut:
        """Runs only after every gate passed; its asset event is what downstream DAGs wait for."""
        runs = _runs()
        labels = list(label_outs)
        runs.check_conservation(ingest_out, prompts_out, labels, score_out, gate_out)
        out = runs.run_publish(_ctx(), ingest_out, prompts_out, labels, score_out, gate_out)
        get_current_context()["outlet_events"][SNAPSHOT_ASSET].extra = out["asset_extra"]
        print(out["summary_md"])  # in the task log: where the snapshot is and what it holds
        return out

    ing = ingest()
    pr = build_prompts(ing)
    labels = label.expand(shard=plan_shards(pr))
    sc = score(ing, pr, labels)
    gt = gate(ing, sc)
    publish(ing, pr, labels, sc, gt)


dialinsight_nightly()
