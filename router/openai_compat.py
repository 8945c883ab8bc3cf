"""A backend for any server speaking the OpenAI chat completions API (hosted APIs, vLLM, raygent's own).

``spec.base_url`` follows the OpenAI SDK convention and includes the version prefix
(``https://api.openai.com/v1``, ``http://localhost:8000/v1``); requests go to ``{base_url}/chat/completions``.
Every failure becomes a :mod:`raygent.router.errors` exception with the right ``retryable`` flag; the
API key never appears in an error, a log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from raygent.core.config import OpenAIModelSpec
from raygent.core.errors import ModelError
from raygent.core.messages import Message, ToolCall, Usage
from raygent.router.errors import ModelResponseError, ModelTimeoutError, ModelUnavailableError
from raygent.router.model import (
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamDelta,
    StreamDone,
    StreamEvent,
)
from raygent.router.tokens import count_request_tokens, count_tokens

__all__ = ["OpenAICompatModel", "message_to_openai", "parse_retry_after"]

_MAX_ERROR_CHARS = 300
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "error",
}


def message_to_openai(message: Message) -> dict[str, Any]:
    """One message in the OpenAI wire format (tool call arguments as JSON strings)."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        # OpenAI wants null content beside tool calls, not an empty string.
        data["content"] = message.content or None
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments, separators=(",", ":")),
                },
            }
            for call in message.tool_calls
        ]
    return data


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def _parse_arguments(raw: Any, tool: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        raise ModelResponseError(
            f"the model called {tool!r} with arguments that are not valid JSON: "
            f"{str(raw)[:_MAX_ERROR_CHARS]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise ModelResponseError(f"the model called {tool!r} with arguments that are not a JSON object")
    return parsed


@dataclass
class _CallBuilder:
    """A tool call assembled from streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _StreamState:
    text: list[str] = field(default_factory=list)
    calls: dict[int, _CallBuilder] = field(default_factory=dict)
    finish: str | None = None
    model: str = ""
    usage: dict[str, Any] | None = None


class OpenAICompatModel:
    """A :class:`~raygent.router.model.Model` over ``POST {base_url}/chat/completions``.

    Args:
        name: The model's key in the fleet.
        spec: Where the server is, which model to ask for, defaults and timeout.
        transport: httpx transport seam (tests, proxies, custom TLS); None uses the network.
        api_key: Bearer token; defaults to the environment variable ``spec.api_key_env`` when set.
    """

    def __init__(
        self,
        name: str,
        spec: OpenAIModelSpec,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        self._name = name
        self._spec = spec
        if api_key is None and spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env)
        self._api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=spec.base_url, transport=transport, headers=headers)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        spec = self._spec
        return f"OpenAICompatModel(name={self._name!r}, base_url={spec.base_url!r}, model={spec.model!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one chat completion and parse the answer.

        Raises:
            ModelTimeoutError: No answer within ``min(request.timeout_s, spec.timeout_s)``.
            ModelUnavailableError: Connection failed, 5xx or 429 (``retry_after_s`` from ``Retry-After``).
            ModelResponseError: A 4xx, or a body that is not a valid chat completion.
        """
        timeout_s = self._timeout_s(request)
        started = time.monotonic()
        try:
            # httpx's timeout bounds each network operation; asyncio's bounds the whole exchange.
            async with asyncio.timeout(timeout_s):
                response = await self._client.post(
                    "/chat/completions", json=self._body(request, stream=False), timeout=timeout_s
                )
        except (httpx.TimeoutException, TimeoutError):
            raise self._timeout_error(timeout_s) from None
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.headers, response.text)
        try:
            data = response.json()
        except ValueError:
            raise ModelResponseError(self._where("answered with a body that is not JSON")) from None
        return self._parse(data, request, time.monotonic() - started)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Stream a chat completion over server-sent events; ends with the complete response."""
        timeout_s = self._timeout_s(request)
        started = time.monotonic()
        state = _StreamState()
        body = self._body(request, stream=True)
        try:
            async with self._client.stream("POST", "/chat/completions", json=body, timeout=timeout_s) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    raise self._status_error(resp.status_code, resp.headers, text)
                async for line in resp.aiter_lines():
                    # httpx's timeout bounds each read; this bounds the whole answer, like complete().
                    if time.monotonic() - started > timeout_s:
                        raise self._timeout_error(timeout_s)
                    delta = self._on_sse_line(line, state)
                    if delta:
                        yield StreamDelta(delta)
        except httpx.TimeoutException:
            raise self._timeout_error(timeout_s) from None
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from None
        yield StreamDone(self._stream_response(state, request, time.monotonic() - started))

    # ------------------------------------------------------------------------------------ request side

    def _timeout_s(self, request: ModelRequest) -> float:
        spec_timeout: float = self._spec.timeout_s
        return spec_timeout if request.timeout_s is None else min(request.timeout_s, spec_timeout)

    def _body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._spec.model,
            "messages": [message_to_openai(m) for m in request.messages],
            "max_tokens": request.max_output_tokens or self._spec.max_output_tokens,
            "temperature": self._spec.temperature if request.temperature is None else request.temperature,
        }
        if request.tools:
            body["tools"] = [tool.to_openai() for tool in request.tools]
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema},
            }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    # ----------------------------------------------------------------------------------- response side

    def _parse(self, data: Any, request: ModelRequest, latency_s: float) -> ModelResponse:
        if isinstance(data, dict) and "error" in data:
            raise ModelResponseError(self._where(f"returned an error: {self._error_message(data)}"))
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise ModelResponseError(self._where("answered without choices[0].message")) from None
        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise ModelResponseError(self._where("answered with tool_calls that are not a list"))
        calls = tuple(self._tool_call(index, raw) for index, raw in enumerate(raw_calls))
        text = message.get("content") or ""
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=self._usage(data.get("usage"), request, text, calls),
            model=str(data.get("model") or self._spec.model),
            finish_reason=self._finish(choice.get("finish_reason"), calls),
            latency_s=latency_s,
        )

    def _tool_call(self, index: int, raw: Any) -> ToolCall:
        try:
            function = raw["function"]
            name = str(function["name"])
        except (KeyError, TypeError):
            raise ModelResponseError(
                self._where(f"answered with a malformed tool call at index {index}")
            ) from None
        return ToolCall(
            id=str(raw.get("id") or f"call_{index}"),
            name=name,
            arguments=_parse_arguments(function.get("arguments"), name),
        )

    def _on_sse_line(self, line: str, state: _StreamState) -> str:
        """Fold one SSE line into ``state``; returns the text delta it carried, if any."""
        if not line.startswith("data:"):
            return ""  # blank separators, comments and other SSE fields
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return ""
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise ModelResponseError(self._where("streamed an event that is not JSON")) from None
        if not isinstance(chunk, dict):
            raise ModelResponseError(self._where("streamed an event that is not a JSON object"))
        if "error" in chunk:
            raise self._stream_error(chunk)
        state.model = chunk.get("model") or state.model
        if chunk.get("usage"):
            state.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for part in delta.get("tool_calls") or []:
                builder = state.calls.setdefault(int(part.get("index", 0)), _CallBuilder())
                builder.id = part.get("id") or builder.id
                function = part.get("function") or {}
                builder.name += function.get("name") or ""
                builder.arguments += function.get("arguments") or ""
            state.finish = choice.get("finish_reason") or state.finish
        state.text.append(text)
        return text

    def _stream_response(self, state: _StreamState, request: ModelRequest, latency_s: float) -> ModelResponse:
        calls = tuple(
            ToolCall(id=b.id or f"call_{i}", name=b.name, arguments=_parse_arguments(b.arguments, b.name))
            for i, b in sorted(state.calls.items())
        )
        text = "".join(state.text)
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=self._usage(state.usage, request, text, calls),
            model=state.model or self._spec.model,
            finish_reason=self._finish(state.finish, calls),
            latency_s=latency_s,
        )

    @staticmethod
    def _finish(raw: Any, calls: tuple[ToolCall, ...]) -> FinishReason:
        if isinstance(raw, str) and raw in _FINISH:
            return _FINISH[raw]
        return "tool_calls" if calls else "stop"

    @staticmethod
    def _usage(raw: Any, request: ModelRequest, text: str, calls: tuple[ToolCall, ...]) -> Usage:
        if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
            return Usage(int(raw["prompt_tokens"]), int(raw.get("completion_tokens") or 0))
        # Some servers omit usage; an estimate keeps cost accounting and budgets meaningful.
        output = count_tokens(text) + sum(
            count_tokens(c.name) + count_tokens(json.dumps(c.arguments, separators=(",", ":"))) for c in calls
        )
        return Usage(count_request_tokens(request.messages, request.tools), output)

    # ------------------------------------------------------------------------------------------ errors

    def _where(self, what: str) -> str:
        return f"model backend {self._name!r} ({self._spec.base_url}) {what}"

    def _redact(self, text: str) -> str:
        text = text[:_MAX_ERROR_CHARS]
        return text.replace(self._api_key, "***") if self._api_key else text

    def _error_message(self, data: Any) -> str:
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        return self._redact(str(message if message is not None else data))

    def _timeout_error(self, timeout_s: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            self._where(f"did not answer within {timeout_s:g} s"), extra={"backend": self._name}
        )

    def _connection_error(self, exc: httpx.TransportError) -> ModelUnavailableError:
        reason = self._redact(str(exc) or type(exc).__name__)
        return ModelUnavailableError(
            self._where(f"cannot be reached: {reason}"), extra={"backend": self._name}
        )

    def _status_error(self, status: int, headers: httpx.Headers, body: str) -> ModelError:
        try:
            message = self._error_message(json.loads(body))
        except ValueError:
            message = self._redact(body.strip()) or "no message"
        extra = {"backend": self._name, "http_status": status}
        detail = self._where(f"answered HTTP {status}: {message}")
        if status == 408:
            return ModelTimeoutError(detail, extra=extra)
        if status == 429 or status >= 500:
            return ModelUnavailableError(
                detail, retry_after_s=parse_retry_after(headers.get("retry-after")), extra=extra
            )
        return ModelResponseError(detail, extra=extra)

    def _stream_error(self, chunk: dict[str, Any]) -> ModelError:
        error = chunk.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) else 502
        return self._status_error(status, httpx.Headers(), json.dumps(chunk))
