"""A span exporter that appends one JSON object per ended span to a file.

Several Ray worker processes (agents, the router, the tool gateway) may point at the same file. Each line
is written with a single ``os.write`` on an ``O_APPEND`` descriptor while holding an exclusive ``flock``,
so lines from different processes never interleave and every line is a complete JSON document.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonlSpanExporter", "read_spans", "span_to_dict"]

# Resource attributes the SDK adds to every provider; identical on every line, so not worth the bytes.
_SDK_RESOURCE_PREFIX = "telemetry.sdk."


def _json_value(value: Any) -> Any:
    # OTel attribute values are primitives or homogeneous sequences (tuples); JSON wants lists.
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


def _attributes(attributes: Any) -> dict[str, Any]:
    return {str(key): _json_value(value) for key, value in (attributes or {}).items()}


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """Convert an ended span into the JSON-ready dict written on one line.

    Args:
        span: A finished SDK span.

    Returns:
        A dict with ``name``, ``trace_id`` (32 hex), ``span_id`` (16 hex), ``parent_span_id`` (16 hex or
        ``None``), ``kind``, ``start_ns``, ``end_ns``, ``status``, ``attributes``, ``events`` and
        ``resource`` (``service.name`` plus any attributes given to the provider).
    """
    ctx = span.get_span_context()
    parent = span.parent
    resource = {
        key: _json_value(value)
        for key, value in span.resource.attributes.items()
        if not key.startswith(_SDK_RESOURCE_PREFIX)
    }
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": _attributes(span.attributes),
        "events": [
            {"name": event.name, "ts_ns": event.timestamp, "attributes": _attributes(event.attributes)}
            for event in span.events
        ],
        "resource": resource,
    }


def _write_all(fd: int, data: bytes) -> None:
    # A regular-file write normally takes everything at once; the loop only guards against a short
    # write (e.g. a signal), and the flock held by the caller keeps the remainder contiguous.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class JsonlSpanExporter(SpanExporter):
    """Append spans as JSON lines to ``path``; safe for concurrent writers in several processes.

    The file is opened per export rather than held open: a descriptor inherited across ``fork`` or kept
    after the file was rotated or deleted would write to the wrong place.

    Args:
        path: File to append to; its parent directory is created when missing.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._shut_down = False

    @property
    def path(self) -> Path:
        """The file spans are appended to."""
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append one line per span.

        Args:
            spans: Finished spans handed over by a span processor.

        Returns:
            ``SUCCESS`` when every line was written, ``FAILURE`` after shutdown or on an OS error.
        """
        if self._shut_down:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        lines = [
            (json.dumps(span_to_dict(span), separators=(",", ":"), default=str) + "\n").encode()
            for span in spans
        ]
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return SpanExportResult.FAILURE
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                for line in lines:
                    _write_all(fd, line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            return SpanExportResult.FAILURE
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Refuse further exports; nothing is buffered, so there is nothing to flush."""
        self._shut_down = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return ``True``: every export is on disk (in the page cache) when ``export`` returns."""
        return True


def read_spans(path: Path | str) -> list[dict[str, Any]]:
    """Read every span written by :class:`JsonlSpanExporter`.

    Args:
        path: The JSON-lines file.

    Returns:
        One dict per line, in file order; an empty list when the file does not exist.

    Raises:
        ValueError: A line is not valid JSON (``json.JSONDecodeError`` is a ``ValueError``); the exporter
            never writes partial lines, so this means the file was written by something else.
    """
    file = Path(path)
    if not file.exists():
        return []
    with file.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
