"""OpenAICompatModel against real local HTTP servers: raygent's own OpenAI server in front of the offline
model, and small servers that misbehave on purpose (slow, rate limited, broken output, closed port)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from raygent.core.config import Fleet, OfflineModelSpec, OpenAIModelSpec
from raygent.core.fleetfile import load_fleet
from raygent.core.messages import Message, ToolCall, ToolSchema
from raygent.router.errors import ModelResponseError, ModelTimeoutError, ModelUnavailableError
from raygent.router.model import Model, ModelRequest, ModelResponse, StreamDelta, StreamDone
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel, parse_retry_after
from raygent.router.openai_server import build_openai_app

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk"
SECRET = "sk-test-0123456789abcdef"


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its ``/v1`` base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before the server starts, so no other process can take the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        give_up = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(EXAMPLE / "fleet.yaml")


@pytest.fixture(scope="module")
def offline_url(fleet: Fleet) -> Iterator[str]:
    models: dict[str, Model] = {}
    for name, spec in fleet.models.items():
        assert isinstance(spec, OfflineModelSpec)
        models[name] = OfflineModel(name, spec)
    with serve(build_openai_app(models)) as url:
        yield url


def local_offline(fleet: Fleet) -> OfflineModel:
    spec = fleet.models["premium"]
    assert isinstance(spec, OfflineModelSpec)
    return OfflineModel("premium", spec)


def spec_for(url: str, *, model: str = "premium", timeout_s: float = 10.0, **more: Any) -> OpenAIModelSpec:
    return OpenAIModelSpec(kind="openai", base_url=url, model=model, timeout_s=timeout_s, **more)


def tools(fleet: Fleet, *names: str) -> tuple[ToolSchema, ...]:
    return tuple(ToolSchema(n, fleet.tools[n].description, fleet.tools[n].parameters) for n in names)


def same_answer(remote: ModelResponse, local: ModelResponse) -> None:
    """Everything but latency survives the HTTP round trip."""
    assert remote.text == local.text
    assert remote.tool_calls == local.tool_calls
    assert remote.usage == local.usage
    assert remote.finish_reason == local.finish_reason
    assert remote.model == local.model


# --------------------------------------------------------------------------- against the offline server


async def test_plain_text_round_trip(fleet: Fleet, offline_url: str) -> None:
    model = OpenAICompatModel("remote", spec_for(offline_url))
    request = ModelRequest((Message("system", "be brief"), Message("user", "Hello!")))
    try:
        response = await model.complete(request)
    finally:
        await model.aclose()
    assert response.text.startswith("Hello! I can tell you where an order is")
    assert response.finish_reason == "stop"
    same_answer(response, local_offline(fleet).respond(request))
    assert response.latency_s > 0


async def test_refund_flow_with_tool_calls_round_trip(fleet: Fleet, offline_url: str) -> None:
    model = OpenAICompatModel("remote", spec_for(offline_url))
    offered = tools(fleet, "lookup_order", "issue_refund")
    user = Message("user", "Refund order 1042. Customer says: the machine leaks")
    try:
        first = await model.complete(ModelRequest((user,), offered))
        [lookup_call] = first.tool_calls
        assert (lookup_call.name, lookup_call.arguments) == ("lookup_order", {"order_id": "1042"})

        orders = json.loads((EXAMPLE / "orders.json").read_text())
        result = {"found": True, **orders["1042"], "refundable": True}
        history = (
            user,
            Message("assistant", first.text, first.tool_calls),
            # No tool name on purpose: the OpenAI wire has none, the server recovers it from the call id.
            Message(
                "tool", json.dumps(result, separators=(",", ":"), sort_keys=True), tool_call_id=lookup_call.id
            ),
        )
        second = await model.complete(ModelRequest(history, offered))
    finally:
        await model.aclose()
    [refund] = second.tool_calls
    assert refund.name == "issue_refund"
    assert refund.arguments["amount_usd"] == 149.0 and isinstance(refund.arguments["amount_usd"], float)
    assert refund.arguments["order_id"] == "1042"
    assert second.finish_reason == "tool_calls"
    named = (
        *history[:-1],
        Message("tool", history[-1].content, tool_call_id=lookup_call.id, name="lookup_order"),
    )
    same_answer(second, local_offline(fleet).respond(ModelRequest(named, offered)))


async def test_streaming_text_and_tool_calls(fleet: Fleet, offline_url: str) -> None:
    model = OpenAICompatModel("remote", spec_for(offline_url, model="open-small"))
    offered = tools(fleet, "ask_orders", "ask_refunds")
    last: ModelResponse | None = None
    try:
        for text in ("hey, who are you?", "where is my order #1017?"):
            request = ModelRequest((Message("user", text),), offered)
            events = [event async for event in model.stream(request)]
            complete = await model.complete(request)
            done = events[-1]
            assert isinstance(done, StreamDone)
            deltas = [e.text for e in events[:-1] if isinstance(e, StreamDelta)]
            assert len(deltas) == len(events) - 1 and len(deltas) > 1  # really streamed in pieces
            assert "".join(deltas) == done.response.text
            same_answer(done.response, complete)
            last = done.response
    finally:
        await model.aclose()
    assert last is not None
    assert last.tool_calls[0].name == "ask_orders"
    assert last.tool_calls[0].arguments == {"input": "What is the status of order 1017?"}


async def test_usage_comes_from_the_server(fleet: Fleet, offline_url: str) -> None:
    model = OpenAICompatModel("remote", spec_for(offline_url))
    request = ModelRequest((Message("user", "where is order 1042?"),), tools(fleet, "ask_orders"))
    try:
        response = await model.complete(request)
    finally:
        await model.aclose()
    local = local_offline(fleet).respond(request)
    assert response.usage == local.usage
    assert response.usage.input_tokens > 50  # the tool schema is counted


async def test_unknown_model_is_a_non_retryable_error(offline_url: str) -> None:
    model = OpenAICompatModel("remote", spec_for(offline_url, model="gpt-nope"))
    try:
        with pytest.raises(ModelResponseError, match="gpt-nope") as caught:
            await model.complete(ModelRequest((Message("user", "hi"),)))
    finally:
        await model.aclose()
    assert caught.value.retryable is False
    assert caught.value.extra["http_status"] == 404


async def test_models_endpoint_lists_the_fleet(fleet: Fleet, offline_url: str) -> None:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"{offline_url}/models")).json()
    assert [m["id"] for m in body["data"]] == list(fleet.models)


# ---------------------------------------------------------------------------- servers that misbehave


def recording_app(seen: list[dict[str, Any]]) -> FastAPI:
    """Answers a fixed completion and records each request's headers and body."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict[str, Any]:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return {"model": "echo", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}

    return app


async def test_request_wire_format(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setenv("RAYGENT_TEST_KEY", SECRET)
    tool = ToolSchema("lookup_order", "Look up.", {"type": "object", "properties": {"order_id": {}}})
    call = ToolCall("call_7", "lookup_order", {"order_id": "1042"})
    messages = (
        Message("user", "where is 1042"),
        Message("assistant", "", (call,)),
        Message("tool", '{"found":false}', tool_call_id="call_7", name="lookup_order"),
    )
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    with serve(recording_app(seen)) as url:
        spec = spec_for(
            url, model="m-1", api_key_env="RAYGENT_TEST_KEY", max_output_tokens=77, temperature=0.3
        )
        model = OpenAICompatModel("remote", spec)
        try:
            response = await model.complete(ModelRequest(messages, (tool,), json_schema=schema))
            await model.complete(ModelRequest(messages[:1], max_output_tokens=5, temperature=1.0))
        finally:
            await model.aclose()
    assert SECRET not in repr(model)
    assert response.text == "ok" and response.model == "echo"
    # usage was missing: estimated rather than zero
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 1
    first, second = seen[0]["body"], seen[1]["body"]
    assert seen[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert first["model"] == "m-1"
    assert first["max_tokens"] == 77 and first["temperature"] == 0.3
    assert first["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_7",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id":"1042"}'},
            }
        ],
    }
    assert first["messages"][2] == {"role": "tool", "tool_call_id": "call_7", "content": '{"found":false}'}
    assert first["tools"] == [tool.to_openai()]
    assert first["response_format"]["json_schema"]["schema"] == schema
    assert "stream" not in first
    assert (second["max_tokens"], second["temperature"]) == (5, 1.0)
    assert "tools" not in second and "response_format" not in second


def slow_app(delay_s: float) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> dict[str, Any]:
        await asyncio.sleep(delay_s)
        return {"choices": [{"message": {"content": "too late"}}]}

    return app


async def test_slow_server_times_out() -> None:
    with serve(slow_app(3.0)) as url:
        model = OpenAICompatModel("slow", spec_for(url, timeout_s=10))
        started = time.monotonic()
        try:
            with pytest.raises(ModelTimeoutError, match=r"0\.3 s") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),), timeout_s=0.3))
            with pytest.raises(ModelTimeoutError):
                async for _ in model.stream(ModelRequest((Message("user", "hi"),), timeout_s=0.3)):
                    pass
        finally:
            await model.aclose()
    assert time.monotonic() - started < 2.5  # the smaller (request) timeout applied, twice
    assert caught.value.retryable is True


def status_app(status: int, body: Any, headers: dict[str, str] | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> JSONResponse:
        # Echo the credentials back, like a careless server might, to prove they never reach our errors.
        text = json.dumps(body).replace("$AUTH", request.headers.get("authorization", ""))
        return JSONResponse(json.loads(text), status_code=status, headers=headers)

    return app


async def test_rate_limit_is_retryable_with_retry_after() -> None:
    with serve(status_app(429, {"error": {"message": "slow down"}}, {"Retry-After": "3"})) as url:
        model = OpenAICompatModel("limited", spec_for(url))
        try:
            with pytest.raises(ModelUnavailableError, match="429: slow down") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),)))
            with pytest.raises(ModelUnavailableError) as streamed:
                async for _ in model.stream(ModelRequest((Message("user", "hi"),))):
                    pass
        finally:
            await model.aclose()
    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 3.0
    assert streamed.value.retry_after_s == 3.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(status: int) -> None:
    with serve(status_app(status, {"error": {"message": "upstream broke"}})) as url:
        model = OpenAICompatModel("flaky", spec_for(url))
        try:
            with pytest.raises(ModelUnavailableError, match="upstream broke") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),)))
        finally:
            await model.aclose()
    assert caught.value.retryable is True and caught.value.retry_after_s is None


async def test_client_error_is_not_retryable_and_hides_the_key() -> None:
    body = {"error": {"message": "invalid key '$AUTH' for this project " + "x" * 1000}}
    with serve(status_app(401, body)) as url:
        model = OpenAICompatModel("hosted", spec_for(url), api_key=SECRET)
        try:
            with pytest.raises(ModelResponseError, match="401: invalid key") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),)))
        finally:
            await model.aclose()
    error = caught.value
    assert error.retryable is False
    assert SECRET not in error.detail and SECRET not in str(error.to_problem())
    assert len(error.detail) < 500  # the server's message is truncated


def broken_tool_call_app() -> FastAPI:
    app = FastAPI()
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id": 10'},
    }

    @app.post("/v1/chat/completions")
    async def complete() -> dict[str, Any]:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"choices": [{"message": message, "finish_reason": "tool_calls"}]}

    return app


async def test_invalid_tool_arguments_are_a_response_error() -> None:
    with serve(broken_tool_call_app()) as url:
        model = OpenAICompatModel("broken", spec_for(url))
        try:
            with pytest.raises(ModelResponseError, match=r"lookup_order.*not valid JSON") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),)))
        finally:
            await model.aclose()
    assert caught.value.retryable is False


async def test_closed_port_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but never listening: connections are refused
        model = OpenAICompatModel("gone", spec_for(f"http://127.0.0.1:{port}/v1"))
        try:
            with pytest.raises(ModelUnavailableError, match="cannot be reached") as caught:
                await model.complete(ModelRequest((Message("user", "hi"),)))
        finally:
            await model.aclose()
    assert caught.value.retryable is True


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0
