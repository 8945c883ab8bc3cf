"""How a tool's JSON arguments become a request body and a reply body becomes the tool's result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from raygent.core.config import FixedWidthCodecSpec, JsonCodecSpec
from raygent.integrations.errors import RecordError, ToolResultError
from raygent.integrations.fixedwidth import RecordLayout, load_layout

__all__ = ["Codec", "FixedWidthCodec", "JsonCodec", "build_codec"]


class Codec(Protocol):
    content_type: str

    def encode(self, arguments: dict[str, Any]) -> bytes: ...

    def decode(self, body: bytes) -> Any: ...


class JsonCodec:
    content_type = "application/json"

    def encode(self, arguments: dict[str, Any]) -> bytes:
        return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ToolResultError(f"the reply is not JSON: {exc}") from None


class FixedWidthCodec:
    """Arguments → the request record, the reply record → JSON (:mod:`raygent.integrations.fixedwidth`)."""

    content_type = "application/octet-stream"

    def __init__(self, request: RecordLayout, reply: RecordLayout) -> None:
        self.request = request
        self.reply = reply

    def encode(self, arguments: dict[str, Any]) -> bytes:
        return self.request.encode(arguments)

    def decode(self, body: bytes) -> Any:
        try:
            return self.reply.decode(body)
        except RecordError as exc:
            raise RecordError(f"malformed reply record: {exc.detail}") from None


def build_codec(spec: JsonCodecSpec | FixedWidthCodecSpec, *, base_dir: Path) -> Codec:
    """Raises :class:`LayoutError` for a layout file that is missing, invalid or lacks a record."""
    if isinstance(spec, JsonCodecSpec):
        return JsonCodec()
    path = Path(spec.layout)
    layout = load_layout(path if path.is_absolute() else base_dir / path, encoding=spec.encoding)
    return FixedWidthCodec(layout.record(spec.request_record), layout.record(spec.reply_record))
