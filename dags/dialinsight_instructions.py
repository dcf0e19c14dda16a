"""
### dialinsight_instructions

Builds the next version of the **instruction library** (Dial-insight's two-stage prompt
construction, docs/instructions.md) and waits for a human to approve it.

**Tasks:** `generate` (stage 1: seed instructions per scene x role focus x task family from
sample dialogues; stage 2: rounds of controlled evolution by the operators in
`config/instructions/operators.yaml`; every candidate screened: unchanged, near-duplicate (MinHash),
not answerable from a dialogue, too long, PII, malformed) → `export_for_review` (a *pending*
version in the object store, with `review.md`) → `review` (**human in the loop**: open the task
in the UI, read the proposed instructions, choose *Approve* or *Reject*; optional `edits`
`{instruction_id: {"status": "rejected" | "approved", "text": "...", "reviewer_note": "..."}}` and
a `note` that guides the next evolution round) → `finalise` (approval publishes the version:
`library/approved.json` moves and the `dialinsight_library` asset is updated; rejection publishes
nothing).

The nightly DAG always uses the latest approved version; its snapshots record it as `library_version`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from dialinsight_airflow.callbacks import default_args, stage

from dialinsight_core.config import load_settings
from dialinsight_core.contracts import GenerateOut, ReviewExport

if TYPE_CHECKING:  # the run layer imports pyarrow: not at parse time
    from dialinsight_core.runs.context import RunContext

_settings = load_settings()  # YAML + env only: no DB, no connections at parse time
_cfg = _settings.airflow
# a name-only asset: a URI scheme would make Airflow load every provider's URI handlers at parse time
LIBRARY_ASSET = Asset(name="dialinsight_library", group="dialinsight")


def _runs() -> ModuleType:
    """The run layer, imported when a task runs, so parsing this file never loads the stages."""
    from dialinsight_core.runs import instructions  # lazy: the stages import pyarrow and the engines; parse stays light

    return instructions


def _ctx() -> RunContext:
    from dialinsight_airflow.context import run_context  # lazy: builds settings from the running task's context

    return run_context(get_current_context())


@dag(
    dag_id="dialinsight_instructions",
    schedule=_cfg.instructions_schedule,  # weekly by default; trigger it from the UI any time
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(_settings),
    doc_md=__doc__,
    tags=["dialinsight", "instructions", "human-in-the-loop"],
    params={
        "max_dialogues": Param(20, type="integer", minimum=1,
                               description="Sample dialogues read per source for the seed prompts."),
        "seeds_per_cell": Param(0, type="integer", minimum=0, maximum=20, description="Seeds per cell; 0 = config."),
    },
)
def dialinsight_instructions() -> None:
    @task(pool=_cfg.engine_pool, queue=_cfg.label_queue)
    def generate() -> GenerateOut:
        with stage():
            return _runs().run_generate(_ctx())

    @task
    def export_for_review(gen_out: GenerateOut) -> ReviewExport:
        with stage():
            return _runs().export_for_review(_ctx(), gen_out)

    review = HITLOperator(
        task_id="review",
        subject="Review instruction library {{ ti.xcom_pull(task_ids='export_for_review')['version'] }}",
        body="{{ ti.xcom_pull(task_ids='export_for_review')['review_md'] }}",
        options=["Approve", "Reject"],
        params={
            "edits": Param({}, type="object", description='{"<instruction_id>": {"status": "rejected"}, ...}'),
            "note": Param("", type="string", description="Guidance for the next evolution round."),
        },
        response_timeout=timedelta(days=7),
        execution_timeout=None,  # the week of review is response_timeout's, not a task timeout
        retries=0,
    )

    @task(outlets=[LIBRARY_ASSET])
    def finalise(export_out: ReviewExport) -> dict[str, Any]:
        context = get_current_context()
        response = context["ti"].xcom_pull(task_ids="review")
        with stage():
            manifest = _runs().finalise(_ctx(), export_out, response)
        if manifest["status"] != "approved":
            raise AirflowSkipException(f"library {export_out['version']} rejected: nothing published")
        context["outlet_events"][LIBRARY_ASSET].extra = {"version": manifest["version"], "counts": manifest["counts"]}
        return manifest

    exported = export_for_review(generate())
    exported >> review
    review >> finalise(exported)


dialinsight_instructions()
