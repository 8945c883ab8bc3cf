"""The mq, soap and terminal tool kinds in the fleet file: typed settings, clear refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from raygent.core.config import MqToolSpec, SoapToolSpec, TerminalToolSpec, ToolSpecConfig

ADAPTER: TypeAdapter[Any] = TypeAdapter(ToolSpecConfig)


def mq(**changes: Any) -> dict[str, Any]:
    return {"kind": "mq", "transport": {"kind": "rabbitmq", "request_queue": "q"}, **changes}


def test_kinds_are_discriminated() -> None:
    assert isinstance(ADAPTER.validate_python(mq()), MqToolSpec)
    assert isinstance(
        ADAPTER.validate_python({"kind": "soap", "wsdl": "x.wsdl", "operation": "Op"}), SoapToolSpec
    )
    terminal = {"kind": "terminal", "command": ["prog"], "steps": [{"key": "pf3"}]}
    assert isinstance(ADAPTER.validate_python(terminal), TerminalToolSpec)
    redis = ADAPTER.validate_python(mq(transport={"kind": "redis_streams", "request_stream": "s"}))
    assert redis.transport.group == "responders" and redis.codec.kind == "json"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (mq(timeout_s=0.5, async_after_ms=500), "async_after_ms must be below timeout_s"),
        (mq(transport={"kind": "rabbitmq", "request_queue": "bad queue"}), "String should match pattern"),
        (mq(transport={"kind": "rabbitmq", "request_queue": "q", "url": "http://x"}), "should match pattern"),
        (mq(codec={"kind": "fixedwidth", "layout": "l.cpy"}), "request_record"),
        (mq(surprise=1), "Extra inputs are not permitted"),
        ({"kind": "terminal", "steps": [{"key": "enter"}]}, "a pty terminal tool needs 'command'"),
        ({"kind": "terminal", "backend": "tn3270", "steps": [{"key": "enter"}]}, "needs 'host'"),
        ({"kind": "terminal", "command": ["p"], "steps": [{"key": "f13"}]}, "should match pattern"),
        ({"kind": "terminal", "command": ["p"], "steps": [{"send": "a", "key": "enter"}]}, "exactly one of"),
        ({"kind": "terminal", "command": ["p"], "steps": [{"send": "a", "row": 1}]}, "only makes sense"),
        ({"kind": "terminal", "command": ["p"], "steps": []}, "at least 1 item"),
        ({"kind": "soap", "wsdl": "x", "operation": "bad op"}, "should match pattern"),
    ],
)
def test_bad_settings_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ADAPTER.validate_python(data)
