"""Real local receivers for notifications: an SMTP server (aiosmtpd, with AUTH) and an HTTP server
that records JSON posts. Each binds a free loopback port and is stopped by the test that started it."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    body: str  # the text of every part, HTML tags and all
    raw: str


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 that accepts only ``user``/``password`` (AUTH over plain SMTP)."""

    def __init__(self, user: str, password: str) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.mails: list[Mail] = []
        self.logins: list[str] = []
        outer = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
                and auth_data.password.decode() == password
            if ok:
                outer.logins.append(user)
            return AuthResult(success=ok)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                raw = envelope.content.decode("utf-8", "replace")
                msg = email.message_from_string(raw, policy=email.policy.default)
                parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
                outer.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), str(msg["Subject"]),
                                        "\n".join(parts), raw))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                      auth_require_tls=False, auth_required=True)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Records every JSON POST (path, headers, body); answers 200."""

    posts: list[Post] = field(default_factory=list)

    def __enter__(self) -> WebhookReceiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.posts.append(Post(self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def connections_env(smtp: SmtpReceiver, hook: WebhookReceiver, smtp_password: str, token: str) -> dict[str, str]:
    """Airflow Connections (as AIRFLOW_CONN_* JSON) and the notifications config for both receivers."""
    return {
        "AIRFLOW_CONN_DIALINSIGHT_SMTP": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port, "login": "alerts", "password": smtp_password,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "dialinsight@example.com", "timeout": 10,
                      "retry_limit": 0}}),
        "AIRFLOW_CONN_DIALINSIGHT_WEBHOOK": json.dumps({
            "conn_type": "http", "host": f"http://127.0.0.1:{hook.port}/hooks/team-data", "password": token}),
        "DIALINSIGHT__NOTIFICATIONS__CHANNELS": '["email", "webhook"]',
        "DIALINSIGHT__NOTIFICATIONS__EMAIL_CONN_ID": "dialinsight_smtp",
        "DIALINSIGHT__NOTIFICATIONS__EMAIL_TO": '["data-team@example.com"]',
    }
