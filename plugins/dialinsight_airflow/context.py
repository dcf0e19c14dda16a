"""Build a ``dialinsight_core.runs.context.RunContext`` from the running task's Airflow context."""

from __future__ import annotations

import os
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


def use_aws_connection(settings: Any) -> str | None:
    """An s3:// store's credentials from the Airflow AWS connection ``storage.aws_conn_id`` (boto3 under
    it): exported to this task process's environment, where every boto3 client of the run (snapshot
    store, S3 sources, mixin) finds them. Returns the connection id used, or None (boto3's own chain)."""
    conn_id = settings.storage.aws_conn_id
    if not conn_id or not settings.storage.uri.startswith("s3://"):
        return None
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    creds, endpoint = hook.get_credentials(), hook.conn_config.endpoint_url
    os.environ.update({"AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key})
    if creds.token:
        os.environ["AWS_SESSION_TOKEN"] = creds.token
    if endpoint and not settings.storage.s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    return conn_id


def run_context(context: Any) -> RunContext:
    # lazy: Airflow imports every file under plugins/ in each component at start-up; pyarrow loads in tasks only
    from dialinsight_core.runs.context import RunContext

    params = dict(context["params"])
    settings = load_settings()
    overrides = settings_overrides(params)
    if overrides:
        settings = settings.with_overrides(overrides)
    use_aws_connection(settings)
    # the run's own params as the stages read them (contracts.run_overrides: which make it an
    # override run; promote: whether it may still move latest.json), plus the settings it overrides
    kept = {"max_dialogues": int(params.get("max_dialogues") or 0), "sources": list(params.get("sources") or []),
            "engine": params.get("engine") or "config", "engine_base_url": params.get("engine_base_url"),
            "promote": bool(params.get("promote")), **overrides}
    return RunContext(settings=settings, ds=logical_ds(context), run_id=context["dag_run"].run_id, params=kept)
