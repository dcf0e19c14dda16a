"""What a person is told about a run: a failed task, a published snapshot, a late nightly.

Pure and Airflow-free: ``plugins/dialinsight_airflow/notifiers.py`` gathers the facts from a task's
context and sends the ``Message`` through the configured channels (e-mail, JSON webhook). Every
free-text part (an exception's message) passes ``scrub`` first: known secrets and credential-shaped
strings are masked, personal data is replaced by typed placeholders and the text is cut short, so no
channel carries a password, dialogue text or PII (tests/integration/test_notifications.py scans them).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dialinsight_core.errors import BatchGateFailed, DataVerdict, TooManyFailures

EVENTS = ("task_failed", "run_succeeded", "run_late", "evaluated")

_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I)


def strip_url_credentials(text: str) -> str:
    """``user:password@`` (or ``token@``) dropped from every URL in ``text``."""
    return _URL_USERINFO.sub(r"\1", text)


_SECRET_SHAPES = (
    (re.compile(r"([?&](?:token|key|api[_-]?key|secret|password|passwd|sig|signature|x-amz-signature|"
                r"x-amz-credential|x-amz-security-token)=)[^&\s]+", re.I), r"\1***"),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1***"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),  # AWS access key ids
    (re.compile(r"\b(sk-[A-Za-z0-9_-]{4})[A-Za-z0-9_-]{12,}"), r"\1***"),  # OpenAI-style API keys
    (re.compile(r"((?:password|passwd|secret|api[_-]?key|token|aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?)"
                r"[^\s\"',;}]+", re.I), r"\1***"),
)


def scrub(text: str, secrets: Iterable[str] = (), limit: int = 600) -> str:
    """``text`` safe to send: the given secret values and credential-shaped strings masked, PII
    replaced by typed placeholders (the ingest redactor), cut to ``limit`` characters."""
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, "***")
    out = strip_url_credentials(out)
    for pattern, repl in _SECRET_SHAPES:
        out = pattern.sub(repl, out)
    from dialinsight_core.pii import Redactor  # lazy: jieba and the name lists load only when a message is built

    redactor = Redactor()
    redactor.learn_names([out])
    out = redactor(out)
    return out if len(out) <= limit else out[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Message:
    """One notification: ``subject`` (the verdict in one line), ``lines`` (the body, first line
    first in every channel), ``facts`` (the same as structured fields for a webhook's consumer)."""

    event: str
    severity: str  # error | warning | info
    subject: str
    lines: tuple[str, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join(self.lines)

    def html(self) -> str:
        body = "".join(f"<li>{html.escape(ln.strip().removeprefix('- '))}</li>" if ln.startswith("  ")
                       else f"<p>{html.escape(ln)}</p>" for ln in self.lines)
        return f"<html><body><h3>{html.escape(self.subject)}</h3>{body}</body></html>"

    def payload(self) -> dict[str, Any]:
        """A JSON body that Slack, Mattermost and Teams webhooks show as is (their ``text``), with
        the structured fields beside it for an alerting system."""
        return {"text": f"*{self.subject}*\n{self.text()}", "event": self.event, "severity": self.severity,
                "subject": self.subject, **self.facts}


@dataclass(frozen=True)
class Failure:
    """What failed, why and where to look, read from an exception."""

    kind: str  # data_verdict (not retried) | transient (retried with backoff) | error
    error_type: str
    summary: str
    details: tuple[str, ...]
    next_step: str


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def describe_failure(exc: BaseException | None, secrets: Iterable[str] = (), limit: int = 600) -> Failure:
    """The failure of a task for a person: our own exception wherever it sits in the cause chain
    (Airflow wraps data verdicts in ``AirflowFailException``), else the outermost one."""
    chain = _chain(exc)
    ours = next((e for e in chain if isinstance(e, DataVerdict | TooManyFailures)), None)
    err = ours or (chain[0] if chain else None)
    if err is None:
        return Failure("error", "unknown", "the task failed without an exception (killed, or timed out?)", (),
                       "open the task log; a task killed by the OS (memory) or its execution_timeout leaves no error")
    secrets = tuple(secrets)
    if isinstance(err, BatchGateFailed):
        details = tuple(scrub(f, secrets, 300) for f in err.failures)
        return Failure("data_verdict", "BatchGateFailed",
                       f"batch gate failed: {len(details)} expectation(s) not met, nothing published", details,
                       scrub(err.next_step, secrets, limit))
    first, *rest = (str(err).strip() or type(err).__name__).splitlines() or [""]
    if isinstance(err, TooManyFailures):
        return Failure("transient", "TooManyFailures", scrub(err.summary, secrets, limit), (),
                       scrub(err.hint or "check the LLM engine", secrets, limit))
    details = tuple(scrub(ln.strip(), secrets, 300) for ln in rest[:5] if ln.strip())
    if isinstance(err, DataVerdict):
        return Failure("data_verdict", type(err).__name__, scrub(first, secrets, limit), details,
                       scrub(err.next_step, secrets, limit))
    module = type(err).__module__ or ""
    if module.startswith(("botocore", "boto3", "s3transfer")) or isinstance(err, ConnectionError | TimeoutError):
        nxt = ("the object store or a server did not answer: check storage.uri / storage.s3_endpoint_url and the "
               "aws connection's credentials; the task was retried with backoff")
        return Failure("transient", type(err).__name__, scrub(first, secrets, limit), details, nxt)
    return Failure("error", type(err).__name__, scrub(first, secrets, limit), details,
                   "open the log (link below): the traceback says where it failed; the task was retried")


def failure_message(*, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int, max_tries: int,
                    logical_date: str | None, log_url: str | None, failure: Failure) -> Message:
    """A task failed for good (after its last try, or at once for a data verdict)."""
    task = task_id + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")
    tries = "a data verdict: not retried" if failure.kind == "data_verdict" else f"try {try_number} of {max_tries + 1}"
    lines = [f"FAILED: task {task} of {dag_id}, run {run_id}" + (f" (logical date {logical_date})" if logical_date else "")
             + f"; {tries}.",
             f"Why: {failure.summary}",
             *(f"  - {d}" for d in failure.details),
             f"Next: {failure.next_step}"]
    if log_url:
        lines.append(f"Log: {log_url}")
    return Message("task_failed", "error", f"[dialinsight] FAILED {dag_id}.{task}: {failure.summary}"[:200],
                   tuple(lines), {
                       "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
                       "try_number": try_number, "max_tries": max_tries, "logical_date": logical_date,
                       "kind": failure.kind, "error_type": failure.error_type, "summary": failure.summary,
                       "details": list(failure.details), "next_step": failure.next_step, "log_url": log_url})


def success_message(*, dag_id: str, event: dict[str, Any], run_url: str | None) -> Message:
    """The run summary of a published snapshot, from its asset event's extra (``snapshot_event``)."""
    c = event["counts"]
    reasons = event.get("top_reject_reasons") or {}
    top = ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"
    lines = [f"OK: {dag_id} run {event['run_id']} published snapshot {event['snapshot_id']} for {event['ds']}.",
             f"Accepted {c['accepted']}, rejected {c['rejected']}, quarantined {c['quarantined_prompts']} of {c['prompts']} "
             f"prompts from {c['dialogues_read']} dialogue records, {c['quarantined_dialogues']} of which were "
             f"quarantined (accept rate {event['accept_rate']:.1%}).",
             f"Top reject reasons: {top}.",
             f"Snapshot: {event['uri']}",
             f"Report: {event['report']}"]
    latest = event.get("latest") or {}
    if latest and not latest.get("moved"):
        lines.insert(3, f"latest.json was not moved: {latest.get('why')}.")
    if event.get("already_published"):
        lines.insert(1, "This run had already published this snapshot (a rerun): nothing was rewritten.")
    if run_url:
        lines.append(f"Run: {run_url}")
    return Message("run_succeeded", "info",
                   f"[dialinsight] OK {dag_id} {event['ds']}: {c['accepted']} accepted "
                   f"(accept rate {event['accept_rate']:.1%})", tuple(lines), {
                       "dag_id": dag_id, "run_id": event["run_id"], "ds": event["ds"],
                       "snapshot_id": event["snapshot_id"], "snapshot_uri": event["uri"], "report": event["report"],
                       "counts": dict(c), "accept_rate": event["accept_rate"], "top_reject_reasons": dict(reasons),
                       "run_url": run_url})


def eval_message(*, dag_id: str, event: dict[str, Any], run_url: str | None) -> Message:
    """The evaluation's headline (``dialinsight_evaluate``), from its asset event's extra."""
    pts = event.get("general_delta_points")
    lines = [f"{'WARNING' if event.get('regressed') else 'OK'}: {dag_id} evaluated snapshot {event['snapshot_id']} "
             f"on {event['base_model']}.",
             f"Domain score {event['domain_before']} -> {event['domain_after']} (held-out prompts, fine-tuned on accepted rows); "
             f"ablation with rejected rows: {event.get('domain_after_ablation')}.",
             f"General accuracy {event['general_before']} -> {event['general_after']} "
             f"({'n/a' if pts is None else f'{pts:+.1f}'} points, 95 % CI {event.get('general_delta_ci95')}).",
             f"Report: {event['report']}"]
    if run_url:
        lines.append(f"Run: {run_url}")
    return Message("evaluated", "warning" if event.get("regressed") else "info",
                   f"[dialinsight] {'REGRESSION' if event.get('regressed') else 'OK'} {dag_id} {event['snapshot_id']}: "
                   f"domain {event['domain_before']} -> {event['domain_after']}, general "
                   f"{'n/a' if pts is None else f'{pts:+.1f}'} points", tuple(lines), dict(event, dag_id=dag_id, run_url=run_url))


def created_late(dag_run: dict[str, Any], deadline_time: str) -> bool:
    """A run that was created after its own deadline: a backfill of old dates, or the catch-up slot
    a fresh or unpaused deployment starts. Its lateness is not news, so no alert is sent for it."""
    if dag_run.get("run_type") == "backfill":
        return True
    queued = str(dag_run.get("queued_at") or "")
    return bool(queued) and _instant(queued) > _instant(deadline_time)


def _instant(value: str) -> str:
    """ISO instants compare as text once written the same way (UTC, 'T', no zone suffix)."""
    from datetime import UTC, datetime  # lazy: only late alerts compare times

    t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def late_message(*, dag_run: dict[str, Any], deadline_time: str, hours: float | None, run_url: str | None) -> Message:
    """The nightly is not finished N hours after its slot (from a deadline's callback context)."""
    dag_id, run_id = dag_run.get("dag_id", "?"), dag_run.get("dag_run_id") or dag_run.get("run_id", "?")
    after = f"{hours:g} h after its slot" if hours else "by its deadline"
    lines = [f"LATE: {dag_id} run {run_id} (logical date {dag_run.get('logical_date')}) was not finished {after} "
             f"(deadline {deadline_time}); it is {dag_run.get('state')}, queued at {dag_run.get('queued_at')}, "
             f"started at {dag_run.get('start_date')}.",
             "Next: open the run: which task is running or still queued? A label task waiting for the engine pool or "
             "the gpu queue (is a worker serving it?), a retry waiting its backoff, or a slow LLM server "
             "(its throughput is in the label task's log).",
             "Downstream readers still get the previous snapshot (snapshots/latest.json) until this run publishes."]
    if run_url:
        lines.append(f"Run: {run_url}")
    return Message("run_late", "warning", f"[dialinsight] LATE {dag_id} run {run_id}: not finished {after}",
                   tuple(lines), {"dag_id": dag_id, "run_id": run_id, "logical_date": dag_run.get("logical_date"),
                                  "state": dag_run.get("state"), "deadline": deadline_time, "run_url": run_url})
