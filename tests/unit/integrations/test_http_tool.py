"""The http tool kind: request planning from the arguments, credentials added in the gateway, response
mapping, and every failure turned into a clear tool error (no network: ASGI transports)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, HttpToolSpec
from raygent.integrations.context import ToolContext
from raygent.integrations.credentials import Credentials
from raygent.integrations.errors import (
    CredentialRevokedError,
    HttpRequestError,
    HttpStatusError,
    ToolResultError,
    ToolTimeoutError,
)
from raygent.integrations.http_tool import HttpToolExecutor, plan_request
from raygent.integrations.oauth2 import token_http

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "credentials"


def _services() -> ModuleType:
    name = "cred_example_services"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE / "services.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


services = _services()
SECRET = "client-secret-for-unit-tests"
API_KEY = "api-key-UNIT-CANARY-0042"


def tool(**fields: Any) -> HttpToolSpec:
    return HttpToolSpec.model_validate(
        {"kind": "http", "method": "GET", "url": "http://api.test/x", **fields}
    )


def test_plan_encodes_path_arguments_as_one_segment() -> None:
    spec = tool(url="http://api.test/tickets/{ticket_id}/notes", query={"q": "{q}"})
    planned = plan_request(spec, {"ticket_id": "1/../../admin", "q": "a b", "extra": 5})
    assert planned.url.raw_path == b"/tickets/1%2F..%2F..%2Fadmin/notes?q=a+b&extra=5"
    assert planned.method == "GET" and not planned.has_body


def test_plan_sends_the_remaining_arguments_as_json_for_post() -> None:
    spec = tool(method="POST", url="http://api.test/orders/{order_id}/refunds")
    planned = plan_request(spec, {"order_id": 7, "amount_usd": 12.5, "reason": "late"})
    assert planned.url.path == "/orders/7/refunds"
    assert planned.has_body and planned.json_body == {"amount_usd": 12.5, "reason": "late"}
    assert not plan_request(tool(method="POST", body="none"), {"a": 1}).has_body


@pytest.mark.parametrize(
    ("fields", "arguments", "message"),
    [
        ({"url": "http://api.test/{id}"}, {}, "argument 'id' is needed"),
        (
            {"method": "{m}", "egress": [{"hosts": ["a"], "methods": ["GET"], "paths": ["/"]}]},
            {"m": "TRACE"},
            "not an HTTP method",
        ),
        (
            {"url": "{url}", "egress": [{"hosts": ["a"], "methods": ["GET"], "paths": ["/"]}]},
            {"url": "file:///etc/passwd"},
            "absolute http",
        ),
    ],
)
def test_plan_refuses_arguments_that_make_no_valid_request(
    fields: dict[str, Any], arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(HttpRequestError, match=message):
        plan_request(tool(**fields), arguments)


# --------------------------------------------------------------------------------------- execution


class Upstream:
    """An API with the awkward answers a real one gives."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.flaky = True

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            self.tokens.append(request.headers.get("authorization", ""))
            body = await request.body()
            return JSONResponse(
                {
                    "data": {"id": 9, "tags": ["a", "b"]},
                    "key": request.headers.get("x-api-key"),
                    "body": body.decode(),
                    "idem": request.headers.get("idempotency-key"),
                }
            )

        async def flaky(request: Request) -> Response:
            self.tokens.append(request.headers.get("authorization", ""))
            if self.flaky:
                self.flaky = False
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            return JSONResponse({"ok": True})

        async def slow(request: Request) -> Response:
            await asyncio.sleep(5)
            return JSONResponse({})

        return Starlette(
            routes=[
                Route("/echo", echo, methods=["GET", "POST"]),
                Route("/flaky", flaky),
                Route("/slow", slow),
                Route("/redirect", lambda r: RedirectResponse("http://elsewhere.test/")),
                Route("/big", lambda r: PlainTextResponse("x" * 5000)),
                Route("/text", lambda r: PlainTextResponse("plain words")),
                Route(
                    "/busy",
                    lambda r: JSONResponse({"detail": "busy"}, status_code=503, headers={"Retry-After": "3"}),
                ),
                Route(
                    "/leaky",
                    lambda r: JSONResponse(
                        {"detail": f"bad key {r.headers.get('x-api-key')}"}, status_code=400
                    ),
                ),
            ]
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client").write_text(SECRET + "\n")
    (tmp_path / "secrets" / "api.json").write_text(json.dumps({"key": API_KEY}))
    return Fleet.model_validate(
        {
            "name": "h",
            "base_dir": str(tmp_path),
            "models": {"m": {"kind": "offline"}},
            "secrets": {"providers": {"files": {"kind": "file", "dir": "secrets"}}},
            "credentials": {
                "clients": {
                    "svc-a": {
                        "token_url": "http://auth.test/oauth/token",
                        "client_id": "agent-a",
                        "client_secret": "files:client",
                        "expiry_skew_s": 0.5,
                    }
                }
            },
            "agents": {"a": {"identity": "svc-a", "prompt": "p@1"}},
        }
    )


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def credentials(fleet: Fleet) -> Any:
    auth = services.AuthServer(
        clients={"agent-a": services.Client(SECRET, frozenset({"r", "w"}))},
        users={},
        signing_key="k" * 32,
        assertion_key="a" * 32,
        ttl_s=60,
    )
    # The token endpoint is reached through authlib's HTTP library (httpx2 where installed).
    transport = token_http.ASGITransport(app=services.auth_app(auth))
    creds = Credentials(fleet, clock=SystemClock(), transport=transport)
    yield creds
    await creds.aclose()


def ctx() -> ToolContext:
    return ToolContext("c1", "run_1:s1:c0", "run_1", "s", "a", "svc-a", Path("."), time.time() + 30)


def executor(spec: HttpToolSpec, credentials: Credentials, upstream: Upstream) -> HttpToolExecutor:
    transport = httpx.ASGITransport(app=upstream.app())
    return HttpToolExecutor(
        "t", spec, credentials=credentials, guard=None, clock=SystemClock(), transport=transport
    )


async def test_call_adds_token_and_secret_header_and_maps_the_response(
    credentials: Credentials, upstream: Upstream
) -> None:
    spec = tool(
        method="POST",
        url="http://api.test/echo",
        scopes=["w"],
        auth={"kind": "oauth2"},
        secret_headers={"X-Api-Key": "files:api.json#key"},
        response={"id": "/data/id", "tag": "/data/tags/1", "none": "/nope"},
    )
    result = await executor(spec, credentials, upstream).call(ctx(), {"title": "t"}, timeout_s=5)
    assert result == {"id": 9, "tag": "b", "none": None}
    assert upstream.tokens[0].startswith("Bearer ey")
    # The secret and the token are registered for masking wherever text leaves the gateway.
    assert API_KEY in credentials.known and upstream.tokens[0][7:] in credentials.known
    raw = await executor(
        tool(method="POST", url="http://api.test/echo", secret_headers={"X-Api-Key": "files:api.json#key"}),
        credentials,
        upstream,
    ).call(ctx(), {"a": 1}, timeout_s=5)
    assert raw["key"] == API_KEY and raw["body"] == '{"a":1}' and raw["idem"] == "run_1:s1:c0"


async def test_a_token_the_api_refuses_is_replaced_once(credentials: Credentials, upstream: Upstream) -> None:
    spec = tool(url="http://api.test/flaky", scopes=["r"], auth={"kind": "oauth2"})
    assert await executor(spec, credentials, upstream).call(ctx(), {}, timeout_s=5) == {"ok": True}
    assert len(upstream.tokens) == 2 and upstream.tokens[0] != upstream.tokens[1]
    assert credentials.tokens.fetches == 2


@pytest.mark.parametrize(
    ("path", "error", "message", "retryable"),
    [
        ("/redirect", HttpStatusError, "does not follow", False),
        ("/busy", HttpStatusError, "503 Service Unavailable: busy", True),
        ("/leaky", HttpStatusError, "bad key [REDACTED:secret]", False),
        ("/big", ToolResultError, "larger than 1024 bytes", False),
        ("/slow", ToolTimeoutError, "took longer than 0.3 s", True),
    ],
)
async def test_failures_are_clear_tool_errors(
    credentials: Credentials,
    upstream: Upstream,
    path: str,
    error: type[Exception],
    message: str,
    retryable: bool,
) -> None:
    spec = tool(
        url=f"http://api.test{path}",
        max_response_bytes=1024,
        secret_headers={"X-Api-Key": "files:api.json#key"},
    )
    with pytest.raises(error) as info:
        await executor(spec, credentials, upstream).call(ctx(), {}, timeout_s=0.3)
    assert message in str(info.value)
    assert getattr(info.value, "retryable", None) is retryable
    assert API_KEY not in str(info.value)


async def test_text_answers_and_revoked_identities(credentials: Credentials, upstream: Upstream) -> None:
    assert await executor(tool(url="http://api.test/text"), credentials, upstream).call(
        ctx(), {}, timeout_s=5
    ) == {
        "status": 200,
        "text": "plain words",
    }
    await credentials.revoke("svc-a", reason="test")
    with pytest.raises(CredentialRevokedError, match="revoked: test"):
        await executor(tool(url="http://api.test/text"), credentials, upstream).call(ctx(), {}, timeout_s=5)


async def test_guard_runs_before_anything_is_sent(credentials: Credentials, upstream: Upstream) -> None:
    refused: list[str] = []

    def guard(name: str, method: str, url: httpx.URL) -> None:
        refused.append(f"{method} {url.path}")
        raise HttpRequestError("no")

    transport = httpx.ASGITransport(app=upstream.app())
    ex = HttpToolExecutor(
        "t",
        tool(url="http://api.test/echo", auth={"kind": "oauth2"}),
        credentials=credentials,
        guard=guard,
        clock=SystemClock(),
        transport=transport,
    )
    with pytest.raises(HttpRequestError):
        await ex.call(ctx(), {}, timeout_s=5)
    assert refused == ["GET /echo"] and upstream.tokens == [] and credentials.tokens.fetches == 0
