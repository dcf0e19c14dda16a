"""Build a ``dialinsight_core.runs.context.RunContext`` from the running task's Airflow context."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dialinsight_core.config import load_settings

if TYPE_CHECKING:
    from dialinsight_core.runs.context import RunContext

# Params of the DAG form -> dotted config keys they override (None / "" / 0 = keep config)
PARAM_OVERRIDES = {
    "engine": "engine.kind",
    "engine_base_url": "engine.base_url",
    "shards": "labeling.shards",
}


def logical_ds(context: Any) -> str:
    """Airflow 3 manual runs may have no logical date: fall back to ``run_after``."""
    dag_run = context["dag_run"]
    when = dag_run.logical_date or dag_run.run_after
    return when.strftime("%Y-%m-%d")


def settings_overrides(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for param, key in PARAM_OVERRIDES.items():
        value = params.get(param)
        if value not in (None, "", 0, "config"):
            out[key] = value
    return out


def run_context(context: Any) -> RunContext:
    # lazy: Airflow imports every file under plugins/ in each component at start-up; pyarrow loads in tasks only
    from dialinsight_core.runs.context import RunContext

    params = dict(context["params"])
    settings = load_settings()
    overrides = settings_overrides(params)
    if overrides:
        settings = settings.with_overrides(overrides)
    kept = {"max_dialogues": int(params.get("max_dialogues") or 0), "sources": list(params.get("sources") or []),
            **overrides}
    return RunContext(settings=settings, ds=logical_ds(context), run_id=context["dag_run"].run_id, params=kept)
