"""Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

A streamed run sends ``start``, then ``step`` and ``delta`` events as they happen, and ends with
``done`` (the whole run, as ``GET /v1/runs/{id}`` shows it) or ``error`` (a problem document). Each
event's ``data`` is one line of JSON.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SSE_HEADERS", "SSE_MEDIA_TYPE", "comment", "encode_event", "parse_events"]

SSE_MEDIA_TYPE = "text/event-stream"
# No caching, and no buffering by reverse proxies (nginx honours X-Accel-Buffering).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def encode_event(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    """One event; ``data`` is serialised as compact JSON (never containing a raw newline)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str = "") -> bytes:
    """A comment line; clients ignore it (used as a keep-alive)."""
    return f": {text}\n\n".encode()


def parse_events(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a complete SSE body (for clients and tests)."""
    events: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data_lines = "message", []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data_lines.append(value)
        if data_lines:
            events.append((name, json.loads("\n".join(data_lines))))
    return events
