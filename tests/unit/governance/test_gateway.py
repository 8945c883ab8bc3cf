"""The ToolGateway refuses what an agent may not do and turns tool failures into clear error results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.interceptors import CallContext, ToolCallInput, ToolCallOutput
from raygent.core.messages import ToolCall
from raygent.governance.gateway import ToolGateway

TOOLS_PY = """
import asyncio, time

def ok(ctx, *, x):
    return {"x": x, "agent": ctx.agent, "key": ctx.idempotency_key}

def boom(ctx, **kw):
    raise ValueError("the backend said no")

def not_json(ctx, **kw):
    return {"when": object()}

def huge(ctx, **kw):
    return {"blob": "x" * 300_000}

def sleepy(ctx, **kw):
    time.sleep(2)
    return {}

async def async_ok(ctx, **kw):
    await asyncio.sleep(0)
    return [1, 2, 3]
"""


@pytest.fixture
def gateway(tmp_path: Path) -> ToolGateway:
    (tmp_path / "t.py").write_text(TOOLS_PY)
    obj = {"type": "object"}

    def tool(entry: str, **extra: Any) -> dict[str, Any]:
        return {"kind": "python", "entrypoint": entry, "parameters": obj, **extra}

    fleet = Fleet.model_validate(
        {
            "name": "g",
            "models": {"m": {"kind": "offline"}},
            "prompts": {"p": {"versions": {"1": "x"}}},
            "tools": {
                "ok": tool(
                    "t.py:ok",
                    parameters={
                        "type": "object",
                        "properties": {"x": {"type": "integer", "maximum": 10}},
                        "required": ["x"],
                        "additionalProperties": False,
                    },
                ),
                "boom": tool("t.py:boom"),
                "not_json": tool("t.py:not_json"),
                "huge": tool("t.py:huge"),
                "sleepy": tool("t.py:sleepy", timeout_s=0.2),
                "async_ok": tool("t.py:async_ok"),
                "missing_fn": tool("t.py:nope"),
                "missing_file": tool("gone.py:f"),
                "secret": tool("t.py:ok"),
                "ask": {"kind": "agent", "agent": "a"},
            },
            "agents": {
                "a": {
                    "identity": "svc-a",
                    "prompt": "p@1",
                    "tools": [
                        "ok",
                        "boom",
                        "not_json",
                        "huge",
                        "sleepy",
                        "async_ok",
                        "missing_fn",
                        "missing_file",
                        "ask",
                    ],
                }
            },
            "base_dir": str(tmp_path),
            "state_dir": str(tmp_path / "state"),
        }
    )
    return ToolGateway(fleet, invoker=None, clock=SystemClock())


def call(
    name: str, args: dict[str, Any] | None = None, *, identity: str = "svc-a", deadline_s: float = 10
) -> ToolCallInput:
    ctx = CallContext(
        run_id="r", session_id="s", agent="a", identity=identity, step=1, deadline_ts=time.time() + deadline_s
    )
    return ToolCallInput(ctx=ctx, call=ToolCall(id="r:s1:c0", name=name, arguments=args or {}))


async def test_granted_tool_runs_with_its_context(gateway: ToolGateway) -> None:
    out = await gateway.call_tool(call("ok", {"x": 3}))
    assert not out.is_error
    assert out.result == {"x": 3, "agent": "a", "key": "r:s1:c0"}
    assert (await gateway.call_tool(call("async_ok"))).result == [1, 2, 3]


async def test_tool_not_granted_is_refused(gateway: ToolGateway) -> None:
    out = await gateway.call_tool(call("secret", {"x": 1}))
    assert out.is_error and out.result["error_type"] == "tool-not-granted"


async def test_unknown_tool_is_refused(gateway: ToolGateway) -> None:
    out = await gateway.call_tool(call("drop_tables"))
    assert out.is_error and out.result["error_type"] == "unknown-tool"


async def test_spoofed_identity_is_refused(gateway: ToolGateway) -> None:
    out = await gateway.call_tool(call("ok", {"x": 1}, identity="svc-admin"))
    assert out.is_error and out.result["error_type"] == "forbidden"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "'x' is a required property"),
        ({"x": "3"}, "at x"),
        ({"x": 11}, "at x"),
        ({"x": 1, "y": 2}, "'y' was unexpected"),
    ],
)
async def test_arguments_are_checked_against_the_schema(
    gateway: ToolGateway, args: dict[str, Any], fragment: str
) -> None:
    out = await gateway.call_tool(call("ok", args))
    assert out.is_error and out.result["error_type"] == "tool-arguments-invalid"
    assert fragment in out.result["error"]


@pytest.mark.parametrize(
    ("name", "error_type", "fragment"),
    [
        ("boom", "tool-failed", "ValueError: the backend said no"),
        ("not_json", "tool-result-invalid", "not JSON"),
        ("huge", "tool-result-invalid", "larger than"),
        ("sleepy", "tool-timeout", "within 0.2 s"),
        ("missing_fn", "tool-load-failed", "no function 'nope'"),
        ("missing_file", "tool-load-failed", "does not exist"),
        ("ask", "tool-failed", "delegation is not available"),
    ],
)
async def test_tool_failures_become_error_results(
    gateway: ToolGateway, name: str, error_type: str, fragment: str
) -> None:
    out: ToolCallOutput = await gateway.call_tool(call(name, {"input": "hi"}))
    assert out.is_error
    assert out.result["error_type"] == error_type
    assert fragment in out.result["error"]
    assert "Traceback" not in out.result["error"]


async def test_past_deadline_refuses_to_start_the_tool(gateway: ToolGateway) -> None:
    out = await gateway.call_tool(call("ok", {"x": 1}, deadline_s=-1))
    assert out.is_error and out.result["error_type"] == "deadline-exceeded"
