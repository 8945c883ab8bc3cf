"""Fixtures of the serving tests: a real local HTTP receiver for callbacks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from serving_helpers import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            recv = state["r"]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            recv.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = recv.statuses.pop(0) if recv.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()
            if status == 200:
                recv.got.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()
