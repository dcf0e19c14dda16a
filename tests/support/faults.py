"""Fault injection for tests/reliability: a process killed in the middle of a stage, a full or
read-only disk, and an S3 endpoint that answers 503 / slow-down, resets connections or is down.

Faults are injected at the object store's write call (``ObjectStore.write_bytes``: every byte a
stage hands on goes through it) or, for S3, in front of the real S3-protocol test server; the
code under test is the platform's own, unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dialinsight_core import storage

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "prompts", "label", "score", "gate", "publish")


@contextmanager
def on_write(pattern: str, nth: int, action: Callable[[str], None], after: bool = False) -> Iterator[dict[str, int]]:
    """Call ``action(key)`` at the ``nth`` object-store write whose key matches ``pattern``, before
    the write (or just after it, ``after=True``). Patches both backends, whole-object writes
    (``write_bytes``) and spooled tables (``put_file``) alike."""
    seen = {"matches": 0}
    classes = (storage.FileObjectStore, storage.S3ObjectStore)
    originals = {(cls, name): getattr(cls, name) for cls in classes for name in ("write_bytes", "put_file")}
    rx = re.compile(pattern)

    def hit_of(key: str) -> bool:
        if rx.search(key):
            seen["matches"] += 1
            return seen["matches"] == nth
        return False

    def make_bytes(orig: Callable[..., None]) -> Callable[..., None]:
        def write_bytes(self: Any, key: str, data: bytes, *, overwrite: bool = True) -> None:
            hit = hit_of(key)
            if hit and not after:
                action(key)
            orig(self, key, data, overwrite=overwrite)
            if hit and after:
                action(key)
        return write_bytes

    def make_file(orig: Callable[..., None]) -> Callable[..., None]:
        def put_file(self: Any, key: str, path: Any) -> None:
            hit = hit_of(key)
            if hit and not after:
                action(key)
            orig(self, key, path)
            if hit and after:
                action(key)
        return put_file

    for (cls, name), orig in originals.items():
        setattr(cls, name, (make_bytes if name == "write_bytes" else make_file)(orig))
    try:
        yield seen
    finally:
        for (cls, name), orig in originals.items():
            setattr(cls, name, orig)


def kill_self(key: str) -> None:
    """``kill -9`` of this process, as the OOM killer or a lost worker would."""
    sys.stderr.write(f"fault: kill -9 at write of {key}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def os_error(code: int) -> Callable[[str], None]:
    def fail(key: str) -> None:
        raise OSError(code, f"{os.strerror(code)} (injected)", key)
    return fail


DISK_FULL = os_error(errno.ENOSPC)
PERMISSION_DENIED = os_error(errno.EACCES)


def run_stage_process(stage: str, env: dict[str, str], ds: str, run_id: str, inputs: dict[str, Any],
                      kill_at: tuple[str, int, bool] | None, workdir: Path, params: dict[str, Any] | None = None,
                      timeout: float = 300) -> tuple[int, Any, str]:
    """Run one stage runner in its own process (as an Airflow task would), optionally killed with
    SIGKILL at the n-th write matching a pattern; returns (exit code, its output or None, stderr)."""
    spec = {"stage": stage, "ds": ds, "run_id": run_id, "inputs": inputs, "params": params or {},
            "kill_at": list(kill_at) if kill_at else None, "out": str(workdir / f"{stage}-{run_id}.out.json")}
    spec_path = workdir / f"{stage}-{run_id}.spec.json"
    spec_path.write_text(json.dumps(spec))
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.support.stage_proc", str(spec_path)], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    out = json.loads(Path(spec["out"]).read_text()) if proc.returncode == 0 else None
    return proc.returncode, out, proc.stderr


class S3FaultProxy:
    """An HTTP proxy in front of the S3-protocol test server that injects, per request, what
    ``plan(method, path, n) -> str`` says: ``forward``, ``503`` (SlowDown), ``reset`` (the
    connection closed after reading part of the request body, no reply) or ``down``
    (connection refused-like: closed at once). Counts what it injected."""

    def __init__(self, upstream: str, plan: Callable[[str, str, int], str] | None = None):
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.plan = plan or (lambda method, path, n: "forward")
        self.injected: dict[str, int] = {}
        self.n = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.n += 1
                    action = proxy.plan(self.command, self.path, proxy.n)
                    proxy.injected[action] = proxy.injected.get(action, 0) + 1
                length = int(self.headers.get("Content-Length") or 0)
                if action in ("down", "reset"):
                    if action == "reset" and length:
                        self.rfile.read(max(1, length // 2))  # half the body arrived, then the line dropped
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                body = self.rfile.read(length) if length else b""
                if action == "503":
                    data = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                            b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer has no body, and its Content-Length is the object's size (S3's, as upstream said)
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
