"""Serve any :class:`~raygent.router.model.Model` over the OpenAI chat completions wire format.

This puts the offline backend (or any other) behind ``POST /v1/chat/completions`` (plain and
server-sent-event streaming, tools, usage) and ``GET /v1/models``, so OpenAI clients, other raygent
deployments and the integration tests can talk to it over real HTTP::

    python -m raygent.router.openai_server --fleet examples/support_desk/fleet.yaml --port 8100
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raygent.core.errors import ModelError
from raygent.core.fleetfile import load_fleet
from raygent.core.messages import Message, ToolCall, ToolSchema, Usage
from raygent.router.model import Model, ModelRequest, ModelResponse, StreamDelta, StreamDone, StreamEvent
from raygent.router.openai_compat import message_to_openai
from raygent.router.router import models_from_fleet

__all__ = ["ChatCompletionRequest", "build_openai_app", "main"]


class _Wire(BaseModel):
    # Clients send many optional OpenAI fields (user, seed, n, …); ignoring them is what servers do.
    model_config = ConfigDict(extra="ignore")


class _FunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] = "{}"


class _WireToolCall(_Wire):
    id: str = ""
    type: str = "function"
    function: _FunctionCall


class _WireMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[_WireToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _ToolFunction(_Wire):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class _WireTool(_Wire):
    type: Literal["function"] = "function"
    function: _ToolFunction


class _StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    """The subset of the OpenAI chat completions request that maps onto :class:`ModelRequest`."""

    model: str
    messages: list[_WireMessage] = Field(min_length=1)
    tools: list[_WireTool] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    response_format: dict[str, Any] | None = None

    def to_model_request(self) -> ModelRequest:
        """The equivalent :class:`ModelRequest`; raises ValueError on undecodable tool call arguments."""
        schema = None
        if self.response_format and self.response_format.get("type") == "json_schema":
            schema = (self.response_format.get("json_schema") or {}).get("schema")
        return ModelRequest(
            messages=_messages(self.messages),
            tools=tuple(
                ToolSchema(t.function.name, t.function.description, t.function.parameters)
                for t in self.tools or []
            ),
            max_output_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            json_schema=schema,
        )


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


def _arguments(raw: str | dict[str, Any]) -> dict[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return value


def _messages(wire: Sequence[_WireMessage]) -> tuple[Message, ...]:
    out: list[Message] = []
    names_by_call_id: dict[str, str] = {}
    for msg in wire:
        calls = tuple(
            ToolCall(c.id, c.function.name, _arguments(c.function.arguments)) for c in msg.tool_calls or []
        )
        names_by_call_id.update((c.id, c.name) for c in calls)
        # OpenAI tool messages carry no tool name; recover it from the assistant call they answer.
        name = msg.name
        if msg.role == "tool" and name is None and msg.tool_call_id is not None:
            name = names_by_call_id.get(msg.tool_call_id)
        role = "system" if msg.role == "developer" else msg.role
        out.append(Message(role, _text(msg.content), calls, msg.tool_call_id, name))
    return tuple(out)


def _error(
    status: int, message: str, *, kind: str, code: str | int | None = None, **headers: str
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _model_error(exc: ModelError) -> JSONResponse:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(0, round(exc.retry_after_s)))
    return _error(exc.status, exc.detail, kind=exc.slug, code=exc.status, **headers)


def _completion(response: ModelResponse, completion_id: str, created: int) -> dict[str, Any]:
    message = message_to_openai(Message("assistant", response.text, response.tool_calls))
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [{"index": 0, "message": message, "finish_reason": response.finish_reason}],
        "usage": _usage(response),
    }


def _usage(response: ModelResponse) -> dict[str, int]:
    usage = response.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


class _Streamer:
    """Turns a model's stream events into OpenAI ``chat.completion.chunk`` server-sent events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
        }
        self._model = model
        self._include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**self._base, "model": self._model, "choices": [choice]})

    def done(self, response: ModelResponse) -> list[bytes]:
        out = []
        if response.tool_calls:
            wire = message_to_openai(Message("assistant", "", response.tool_calls))["tool_calls"]
            out.append(self.chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(wire)]}))
        out.append(self.chunk({}, response.finish_reason))
        if self._include_usage:
            out.append(
                _sse({**self._base, "model": response.model, "choices": [], "usage": _usage(response)})
            )
        out.append(_sse("[DONE]"))
        return out

    def error(self, exc: ModelError) -> bytes:
        return _sse({"error": {"message": exc.detail, "type": exc.slug, "param": None, "code": exc.status}})

    async def events(self, first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        yield self.chunk({"role": "assistant", "content": ""})
        event: StreamEvent | None = first
        try:
            while event is not None:
                if isinstance(event, StreamDelta):
                    yield self.chunk({"content": event.text})
                else:
                    for item in self.done(event.response):
                        yield item
                    return
                event = await anext(rest, None)
        except ModelError as exc:
            # Headers are already sent; OpenAI-style servers report a late failure as an error event.
            yield self.error(exc)
        finally:
            close = getattr(rest, "aclose", None)
            if close is not None:
                await close()


def build_openai_app(models: Mapping[str, Model]) -> FastAPI:
    """A FastAPI app serving ``models`` (by key, the OpenAI ``model`` field) over chat completions.

    Args:
        models: The backends to serve; they are closed when the app shuts down.
    """
    served = dict(models)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for model in served.values():
            await model.aclose()

    app = FastAPI(title="raygent OpenAI-compatible model server", lifespan=lifespan)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "raygent"} for name in served]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(http_request: Request) -> Response:
        try:
            body = ChatCompletionRequest.model_validate_json(await http_request.body())
            request = body.to_model_request()
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            return _error(
                400, f"invalid request at {where or 'body'}: {first['msg']}", kind="invalid_request_error"
            )
        except ValueError as exc:
            return _error(400, f"invalid request: {exc}", kind="invalid_request_error")
        model = served.get(body.model)
        if model is None:
            known = ", ".join(served) or "none"
            return _error(
                404,
                f"model {body.model!r} does not exist (served: {known})",
                kind="invalid_request_error",
                code="model_not_found",
            )
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await _stream(model, request, include_usage)
        try:
            response = await model.complete(request)
        except ModelError as exc:
            return _model_error(exc)
        return JSONResponse(_completion(response, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())))

    return app


async def _stream(model: Model, request: ModelRequest, include_usage: bool) -> Response:
    """Start the stream; a failure before the first event still gets a proper HTTP status."""
    events = model.stream(request)
    try:
        first = await anext(events)
    except ModelError as exc:
        return _model_error(exc)
    except StopAsyncIteration:
        first = StreamDone(ModelResponse("", (), Usage(), model.name, "error"))
    streamer = _Streamer(model.name, include_usage)
    return StreamingResponse(streamer.events(first, events), media_type="text/event-stream")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: serve every model of a fleet file over the OpenAI wire format with uvicorn."""
    import uvicorn  # only the command line needs a server; ray[serve] brings it

    parser = argparse.ArgumentParser(
        prog="python -m raygent.router.openai_server",
        description="Serve a fleet's models over the OpenAI API.",
    )
    parser.add_argument("--fleet", required=True, help="fleet YAML file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    app = build_openai_app(models_from_fleet(load_fleet(args.fleet)))
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
