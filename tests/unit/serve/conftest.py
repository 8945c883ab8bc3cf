"""Fixtures of the serving tests: the example fleet's HTTP API in process, and a real local HTTP
receiver for callbacks."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import Receiver, api_client

from raygent.actors.inprocess import InProcessFleet
from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore


@pytest.fixture
async def client(
    example_fleet: Fleet, store: SQLiteStore, inproc: InProcessFleet, tracer_provider: TracerProvider
) -> AsyncIterator[httpx.AsyncClient]:
    """The example fleet's API (no Ray); a test file may define its own ``client``."""
    async with api_client(example_fleet, store, inproc, tracer_provider) as c:
        yield c


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
