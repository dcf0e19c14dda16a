"""Notifications through Airflow's own notifier mechanism (``BaseNotifier``).

``DialinsightNotifier("task_failed")`` is every task's ``on_failure_callback`` (Airflow calls it once,
after the last try, or at once for a data verdict), ``DialinsightNotifier("run_succeeded")`` the
``publish`` task's ``on_success_callback`` (the run summary), and the nightly's ``DeadlineAlert``
awaits ``DialinsightNotifier(event="run_late")`` in the triggerer. The message itself is composed by
``dialinsight_core.notify`` (pure, tested alone); this module only reads the Airflow context and
sends through the channels of ``notifications`` in the config: e-mail with the SMTP provider's hook,
a JSON webhook with the HTTP provider's hook. Credentials come from the Airflow Connections the
config names, never from the config or the code. A channel that fails is logged and the others are
still tried; a notification never fails the task it reports on.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from airflow.sdk import BaseHook, BaseNotifier

log = logging.getLogger("dialinsight.notify")


def _conf_base_url() -> str | None:
    try:
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback=None)
    except Exception:
        return None


def run_url(dag_id: str, run_id: str) -> str | None:
    base = _conf_base_url()
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}" if base else None


def env_secrets(api_key_env: str | None) -> list[str]:
    """Secret values this process can see: connection URIs and their passwords, cloud keys, the
    LLM API key. Masked in every message even where nothing should print them."""
    out = []
    for key, value in os.environ.items():
        if key.startswith("AIRFLOW_CONN_"):
            out.append(value)
            try:
                pw = json.loads(value).get("password") if value.lstrip().startswith("{") else urlsplit(value).password
            except (ValueError, AttributeError):
                pw = None
            if pw:
                out.append(unquote(pw))
        elif key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AIRFLOW__API_AUTH__JWT_SECRET",
                     "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", api_key_env):
            out.append(value)
    return [s for s in out if s]


class DialinsightNotifier(BaseNotifier):
    """Tells the team about a run (docs/operations.md). ``event``: task_failed | run_succeeded | run_late | evaluated."""

    def __init__(self, event: str = "task_failed", context: Any = None) -> None:
        super().__init__(context)
        self.event = event  # checked against notify.EVENTS when a message is built (parse time stays light)

    # -- composing -------------------------------------------------------------------------------
    def build(self, context: Any, settings: Any, channel_secrets: list[str]) -> Any:
        from dialinsight_core import notify  # lazy: only when a message is built (plugins load in every component)

        if self.event not in notify.EVENTS:
            raise ValueError(f"unknown notification event {self.event!r}; one of {notify.EVENTS}")
        n = settings.notifications
        secrets = env_secrets(settings.engine.api_key_env) + channel_secrets
        if self.event == "run_late":
            dag_run = dict(context.get("dag_run") or {})
            deadline = dict(context.get("deadline") or {})
            if notify.created_late(dag_run, str(deadline.get("deadline_time"))):
                log.info("late-run alert not sent: %s (%s) was created after its deadline %s (a backfill or the "
                         "catch-up slot of a new or unpaused deployment)", dag_run.get("dag_run_id"),
                         dag_run.get("run_type"), deadline.get("deadline_time"))
                return None
            return notify.late_message(dag_run=dag_run, deadline_time=str(deadline.get("deadline_time")),
                                       hours=n.deadline_hours,
                                       run_url=run_url(dag_run.get("dag_id", "?"), dag_run.get("dag_run_id", "?")))
        ti, dag_run = context["ti"], context.get("dag_run")
        if self.event in ("run_succeeded", "evaluated"):
            out = ti.xcom_pull(task_ids=ti.task_id) or {}
            event = out.get("asset_extra")
            if not event:
                log.warning("run summary not sent: task %s returned no asset event", ti.task_id)
                return None
            build = notify.success_message if self.event == "run_succeeded" else notify.eval_message
            return build(dag_id=ti.dag_id, event=event, run_url=run_url(ti.dag_id, ti.run_id))
        logical = getattr(dag_run, "logical_date", None)
        try:
            log_url = ti.log_url
        except Exception:
            log_url = None
        return notify.failure_message(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=getattr(ti, "map_index", -1),
            try_number=getattr(ti, "try_number", 1) or 1, max_tries=getattr(ti, "max_tries", 0) or 0,
            logical_date=logical.isoformat() if logical else None, log_url=log_url,
            failure=notify.describe_failure(context.get("exception"), secrets, n.max_error_chars))

    @staticmethod
    def _conn_ids(settings: Any) -> dict[str, str]:
        """channel -> connection id, for the configured channels."""
        n = settings.notifications
        ids = {"email": n.email_conn_id, "webhook": n.webhook_conn_id}
        return {ch: ids[ch] for ch in n.channels}

    @staticmethod
    def _secrets_of(conns: dict[str, Any]) -> list[str]:
        return [s for conn in conns.values() for s in (conn.password, conn.get_uri()) if s]

    def _wanted(self, settings: Any) -> bool:
        n = settings.notifications
        return {"task_failed": n.on_failure, "run_succeeded": n.on_success, "evaluated": n.on_success,
                "run_late": n.deadline_hours is not None}[self.event]

    # -- sending ---------------------------------------------------------------------------------
    def _ready(self, context: Any, settings: Any, secrets: list[str]) -> Any:
        """The message, logged; None when there is nothing to send (disabled event, no snapshot event)."""
        msg = self.build(context, settings, secrets)
        if msg is None:
            return None
        _log(msg)
        return msg if self._wanted(settings) else None

    def notify(self, context: Any) -> None:
        """Task callbacks (worker): compose, log, send through each channel."""
        from dialinsight_core.config import load_settings  # lazy: the settings of the moment the event happens

        settings = load_settings()
        conns: dict[str, Any] = {}
        for channel, conn_id in self._conn_ids(settings).items():
            try:
                conns[channel] = BaseHook.get_connection(conn_id)
            except Exception:  # a missing connection is reported when sending
                continue
        msg = self._ready(context, settings, self._secrets_of(conns))
        for channel in settings.notifications.channels if msg else ():
            try:
                (_send_email if channel == "email" else _send_webhook)(msg, settings.notifications, conns.get(channel))
                _sent(msg, channel, None)
            except Exception as exc:  # one broken channel must not hide the others
                _sent(msg, channel, exc)

    async def async_notify(self, context: Any) -> None:
        """Deadline alerts (triggerer): the same message through the providers' async hooks."""
        from dialinsight_core.config import load_settings  # lazy: the settings of the moment the event happens

        settings = load_settings()
        conns: dict[str, Any] = {}
        for channel, conn_id in self._conn_ids(settings).items():
            try:
                conns[channel] = await BaseHook.aget_connection(conn_id)
            except Exception:  # a missing connection is reported when sending
                continue
        msg = self._ready(context, settings, self._secrets_of(conns))
        for channel in settings.notifications.channels if msg else ():
            try:
                await (_asend_email if channel == "email" else _asend_webhook)(msg, settings.notifications,
                                                                               conns.get(channel))
                _sent(msg, channel, None)
            except Exception as exc:  # one broken channel must not hide the others
                _sent(msg, channel, exc)


def _sent(msg: Any, channel: str, exc: BaseException | None) -> None:
    if exc is None:
        log.info("notification %s sent by %s", msg.event, channel)
    else:
        log.warning("notification %s NOT sent by %s: %s: %s", msg.event, channel, type(exc).__name__, exc)


def _log(msg: Any) -> None:
    level = {"error": logging.ERROR, "warning": logging.WARNING}.get(msg.severity, logging.INFO)
    log.log(level, "%s\n%s", msg.subject, msg.text())


def _send_email(msg: Any, n: Any, conn: Any = None) -> None:  # SmtpHook reads its own connection
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=n.email_conn_id) as hook:
        hook.send_email_smtp(to=n.email_to, subject=msg.subject, html_content=msg.html(), from_email=n.email_from,
                             mime_subtype="alternative")


async def _asend_email(msg: Any, n: Any, conn: Any = None) -> None:  # SmtpHook reads its own connection
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    async with SmtpHook(smtp_conn_id=n.email_conn_id) as hook:
        await hook.asend_email_smtp(to=n.email_to, subject=msg.subject, html_content=msg.html(),
                                    from_email=n.email_from, mime_subtype="alternative")


def _headers(conn: Any) -> dict[str, str]:
    # a token-only webhook (no login): the connection's password is sent as a bearer token
    auth = {"Authorization": f"Bearer {conn.password}"} if conn is not None and conn.password and not conn.login else {}
    return {"Content-Type": "application/json", **auth}


def _send_webhook(msg: Any, n: Any, conn: Any = None) -> None:
    from airflow.providers.http.hooks.http import HttpHook

    HttpHook(method="POST", http_conn_id=n.webhook_conn_id).run(endpoint=None, json=msg.payload(), headers=_headers(conn),
                                                                extra_options={"timeout": 30})


async def _asend_webhook(msg: Any, n: Any, conn: Any = None) -> None:
    from airflow.providers.http.hooks.http import HttpAsyncHook

    await HttpAsyncHook(method="POST", http_conn_id=n.webhook_conn_id, retry_limit=2).run(
        endpoint=None, json=msg.payload(), headers=_headers(conn))
