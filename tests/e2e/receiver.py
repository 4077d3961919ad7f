"""A webhook receiver on a local port, for the end-to-end tests.

Each request is verified with the `standardwebhooks` package (the library
receivers use, not this project's code) and recorded; `answer` decides
the status code of each request from how many came before it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Delivery:
    webhook_id: str
    body: dict[str, Any]
    status: int
    verified: bool


class Receiver:
    def __init__(self, answer: Callable[[int], int] = lambda n: 204) -> None:
        self.answer = answer
        self.secret: str | None = None
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                with receiver.lock:
                    n = len(receiver.deliveries)
                status = receiver.answer(n)
                verified = False
                if receiver.secret is not None:
                    try:
                        Webhook(receiver.secret).verify(raw, dict(self.headers))
                        verified = True
                    except Exception:  # noqa: BLE001 (recorded as unverified)
                        verified = False
                with receiver.lock:
                    receiver.deliveries.append(
                        Delivery(self.headers.get("webhook-id", ""), json.loads(raw), status, verified)
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def succeeded(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.succeeded()
            if len(done) >= n:
                return done
            time.sleep(0.05)
        raise AssertionError(f"{len(self.succeeded())} of {n} deliveries succeeded: {self.deliveries}")

    def close(self) -> None:
        self.server.shutdown()
