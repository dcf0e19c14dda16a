"""
### dialinsight_evaluate

What this snapshot's data does to a model fine-tuned on it (Dial-insight's claim: domain skill up,
general ability kept). Scheduled on the **`dialinsight_snapshot`** asset, so it runs after every
published snapshot; trigger it from the UI to evaluate another one (Param `snapshot_uri`).

**Tasks:** `plan` picks the training rows (the export's `train` split), an equal-size ablation sample
that includes rejected rows, the held-out prompts (the export's `validation` dialogues, never trained
on) and a subject-stratified subset of the general multiple-choice sets → `model`, mapped over
`base`, `accepted`, `ablation` (in the `llm_engine` pool, queue `evaluate.queue`): fine-tune with
LoRA (checkpoints in the object store; a killed try resumes from the last one), then general
accuracy by log-likelihood and domain answers scored by the platform's quality cascade and against
the labeling model's answers → `report`: before → after, the ablation, the regression rule
(`evaluate.regression`), `eval/report.html` and `eval/eval-summary.json` beside the snapshot.

**Outputs:** `<snapshot>/eval/` (report, summary, per-model metrics, answers, adapters), the
`dialinsight_evaluation` asset event with the headline figures, a notification line. With the
embedded default (SmolLM2-135M on CPU, 16 steps, 24 items per general set) the numbers are a
working loop, not evidence: see docs/evaluation.md for what they mean and how to point the DAG at
a real base model on the GPU worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task
from dialinsight_airflow.callbacks import default_args, stage
from dialinsight_airflow.notifiers import DialinsightNotifier

from dialinsight_core.config import load_settings

_settings = load_settings()  # YAML + env only: no DB, no connections at parse time
_cfg = _settings.airflow
SNAPSHOT_ASSET = Asset(name="dialinsight_snapshot", group="dialinsight")
EVAL_ASSET = Asset(name="dialinsight_evaluation", group="dialinsight")


def _runs() -> ModuleType:
    from dialinsight_core.runs import evaluate  # lazy: torch and transformers load only when a task runs

    return evaluate


def _ctx() -> Any:
    from dialinsight_airflow.context import run_context  # lazy: builds settings from the running task's context

    return run_context(get_current_context())


@dag(
    dag_id="dialinsight_evaluate",
    schedule=[SNAPSHOT_ASSET],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(_settings),
    doc_md=__doc__,
    tags=["dialinsight", "evaluation", "fine-tuning"],
    params={
        "snapshot_uri": Param(None, type=["null", "string"],
                              description="Snapshot to evaluate (its URI); empty = the triggering asset event, "
                                          "else the one latest.json points at."),
    },
)
def dialinsight_evaluate() -> None:
    @task
    def plan() -> dict[str, Any]:
        """Which rows train each model and which prompts and items test them."""
        with stage():
            context = get_current_context()
            events = context["triggering_asset_events"].get(SNAPSHOT_ASSET) or []
            uri = context["params"].get("snapshot_uri") or (events[-1].extra.get("uri") if events else None)
            out = _runs().run_plan(_ctx(), uri)
            print(f"evaluating {out['snapshot_uri']}: {out['stats']['accepted']['rows']} training rows, "
                  f"{out['stats']['domain_prompts']} held-out prompts, general items {out['general_items']}")
            return out

    @task(pool=_cfg.engine_pool, queue=_settings.evaluate.queue, execution_timeout=timedelta(seconds=_cfg.task_timeout_s))
    def model(plan: dict[str, Any], variant: str) -> dict[str, Any]:
        """Fine-tune (unless base) and measure; a retry resumes from the stored checkpoint."""
        with stage():
            return _runs().run_model(_ctx(), plan, variant)

    @task(outlets=[EVAL_ASSET], on_success_callback=[DialinsightNotifier("evaluated")])
    def report(plan: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
        """Before -> after and the ablation; a broken regression rule warns or fails (config)."""
        with stage():
            summ = _runs().run_report(_ctx(), plan, list(results))
            get_current_context()["outlet_events"][EVAL_ASSET].extra = summ["asset_extra"]
            print(summ["headline_md"])
            return {"asset_extra": summ["asset_extra"], "headline_md": summ["headline_md"]}

    p = plan()
    results = model.partial(plan=p).expand(variant=_settings.evaluate.variants())  # the plan's "variants" too
    report(p, results)


dialinsight_evaluate()
