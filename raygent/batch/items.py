"""Batch input lines: the OpenAI Batch format and plain ``{"input": …}`` lines.

Every line is parsed on its own, so one malformed line becomes a :class:`LineError` naming its line
number and never stops the batch. Accepted shapes:

* OpenAI Batch: ``{"custom_id": "a1", "method": "POST", "url": "/v1/chat/completions",
  "body": {"messages": [{"role": "user", "content": "…"}, …]}}`` — the last user message is the input;
  ``/v1/responses`` bodies with ``"input": "…"`` work too.
* Plain: ``{"input": "…"}`` with an optional ``custom_id`` (default ``line-<n>``).

Blank lines are skipped (they are not items). ``custom_id`` must be unique within the file, as the
OpenAI Batch API requires, because results are matched back by it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LINE_BYTES", "BatchItem", "LineError", "parse_line", "parse_lines"]

MAX_LINE_BYTES = 1024 * 1024
_OPENAI_URLS = ("/v1/chat/completions", "/v1/responses", "/v1/completions")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One runnable item; ``line`` is 1-based, as editors count."""

    line: int
    custom_id: str
    input: str


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that cannot run; goes to the errors file with its line number."""

    line: int
    message: str
    custom_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "custom_id": self.custom_id,
            "error": {"type": "invalid-line", "message": self.message},
        }


class _Invalid(Exception):
    pass


def _content_text(content: Any) -> str:
    """Chat content is a string or a list of parts; only text parts can be run."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(str(t) for t in texts)
    raise _Invalid("the last user message has no text content")


def _openai_input(data: dict[str, Any]) -> str:
    url = data.get("url")
    if url is not None and url not in _OPENAI_URLS:
        raise _Invalid(f"url {url!r} is not supported (use one of {', '.join(_OPENAI_URLS)})")
    method = data.get("method", "POST")
    if method != "POST":
        raise _Invalid(f"method {method!r} is not supported (only POST)")
    body = data["body"]
    if not isinstance(body, dict):
        raise _Invalid("body must be a JSON object")
    if isinstance(body.get("input"), str):
        return str(body["input"])
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("body needs 'messages' (a non-empty list) or 'input' (a string)")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise _Invalid("body.messages has no user message")
    return _content_text(users[-1].get("content"))


def _custom_id(data: dict[str, Any], line: int) -> str:
    value = data.get("custom_id", f"line-{line}")
    if not isinstance(value, str) or not value or len(value) > 512:
        raise _Invalid("custom_id must be a non-empty string of at most 512 characters")
    return value


def parse_line(text: str | bytes, line: int, *, max_input_chars: int) -> BatchItem | LineError | None:
    """Parse one line; None for a blank line.

    Args:
        text: The line, without its newline.
        line: Its 1-based number in the file.
        max_input_chars: The agent's input limit; longer inputs are refused here, not mid-run.
    """
    if len(text) > MAX_LINE_BYTES:
        return LineError(line, f"line is longer than {MAX_LINE_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return LineError(line, "line is not UTF-8 text")
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return LineError(line, f"not valid JSON (column {exc.colno}: {exc.msg})")
    if not isinstance(data, dict):
        return LineError(line, 'a line must be a JSON object: {"input": …} or {"custom_id": …, "body": …}')
    custom_id: str | None = None
    try:
        custom_id = _custom_id(data, line)
        if "body" in data:
            value = _openai_input(data)
        elif "input" in data:
            if not isinstance(data["input"], str):
                raise _Invalid("'input' must be a string")
            value = data["input"]
        else:
            raise _Invalid("a line needs 'input' (plain) or 'body' (OpenAI Batch format)")
        if not value.strip():
            raise _Invalid("the input is empty")
        if len(value) > max_input_chars:
            raise _Invalid(f"the input has {len(value)} characters; the agent accepts {max_input_chars}")
    except _Invalid as exc:
        return LineError(line, str(exc), custom_id)
    return BatchItem(line, custom_id, value)


def parse_lines(lines: Iterable[str | bytes], *, max_input_chars: int) -> Iterator[BatchItem | LineError]:
    """Parse a whole file's lines (numbered from 1), flagging repeated ``custom_id`` values."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip(b"\r\n") if isinstance(raw, bytes) else raw.rstrip("\r\n")
        parsed = parse_line(text, number, max_input_chars=max_input_chars)
        if parsed is None:
            continue
        if isinstance(parsed, BatchItem):
            first = seen.setdefault(parsed.custom_id, number)
            if first != number:
                parsed = LineError(number, f"custom_id {parsed.custom_id!r} is already used on line {first}")
        yield parsed
