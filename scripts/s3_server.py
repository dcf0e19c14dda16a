"""A local S3-protocol server (moto) whose conditional writes are atomic, as they are on S3.

    python scripts/s3_server.py -H 127.0.0.1 -p 9000

moto checks ``If-Match`` / ``If-None-Match`` and then writes, in two steps, on a threaded server:
two PUTs holding the same ETag can both pass the check and both succeed, so one update is lost
(seen in ``test_concurrent_increments_lose_no_update[s3]``: 39 of 40). S3 documents the check and
the write as one operation (a concurrent loser gets 412 or 409), and ``swap_pointer`` relies on it.
This server runs moto's own WSGI app behind a lock taken by every request that changes state, so
the check and the write can't interleave. Reads are not serialised. Used by the tests' ``moto_s3``
fixture and by ``scripts/prod_stack.py``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterable
from typing import Any

WRITES = frozenset({"PUT", "POST", "DELETE"})


class SerialisedWrites:
    """WSGI middleware: one state-changing request at a time (response body included)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in WRITES:
            return self.app(environ, start_response)
        with self.lock:
            result = self.app(environ, start_response)
            try:
                return [b"".join(result)]  # the write happens while the body is produced
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


class S3Server:
    """moto's S3 on ``host:port`` (0: a free port) in a daemon thread; ``url`` once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from moto.moto_server.werkzeug_app import (  # lazy: moto is a test / dev-stack dependency
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = SerialisedWrites(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> S3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=0)
    args = parser.parse_args()
    server = S3Server(args.host, args.port)
    print(f"S3 server on {server.url}", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
