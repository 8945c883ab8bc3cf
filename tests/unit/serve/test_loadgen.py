"""The load generator against a real local HTTP server: bounded, counts statuses, nearest-rank percentiles."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from raygent.serve.loadgen import ERROR, percentile, run_closed_loop, run_open_loop


@pytest.fixture
def target() -> Iterator[str]:
    """Answers 200, 200, 503, 200, 200, 503, … with the request body echoed."""
    counter = itertools.count()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                n = next(counter)
            self.send_response(503 if n % 3 == 2 else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/runs"
    finally:
        server.shutdown()
        server.server_close()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 1) == 7.0
    assert percentile([], 50) != percentile([], 50)  # NaN


async def test_closed_loop_sends_exactly_the_requested_count(target: str) -> None:
    report = await run_closed_loop(target, clients=4, requests=30, body=lambda i: {"i": i}, keep_bodies=True)
    assert len(report.samples) == 30
    assert report.statuses() == {200: 20, 503: 10}
    assert sorted(s.body["i"] for s in report.samples if s.body) == list(range(30))
    data = report.to_dict()
    assert data["statuses"] == {"200": 20, "503": 10} and data["by_status"]["503"]["count"] == 10
    json.dumps(data)


async def test_open_loop_is_bounded_by_count_and_time(target: str) -> None:
    report = await run_open_loop(target, rate_per_s=200, requests=25, body=lambda i: {}, poisson=False)
    assert len(report.samples) == 25 and sum(report.statuses().values()) == 25
    timed = await run_open_loop(target, rate_per_s=50, duration_s=0.3, body=lambda i: {})
    assert 0 < len(timed.samples) < 60


async def test_unreachable_target_is_counted_not_raised() -> None:
    report = await run_closed_loop(
        "http://127.0.0.1:9/x", clients=2, requests=4, body=lambda i: {}, timeout_s=1
    )
    assert report.statuses() == {ERROR: 4}


async def test_load_must_be_bounded() -> None:
    with pytest.raises(ValueError, match="bounded"):
        await run_closed_loop("http://x", clients=1, body=lambda i: {})
