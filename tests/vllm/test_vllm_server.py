"""raygent's OpenAI-compatible backend against vLLM's own OpenAI server (tiny trained Llama, CPU)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from raygent.core.config import OpenAIModelSpec
from raygent.core.messages import Message, ToolSchema
from raygent.router.model import ModelRequest, StreamDelta, StreamDone
from raygent.router.openai_compat import OpenAICompatModel

SCHEMA = {
    "type": "object",
    "properties": {"tool": {"enum": ["lookup_order", "refund"]}, "order_id": {"type": "string"}},
    "required": ["tool", "order_id"],
}
TOOL = ToolSchema(
    "lookup_order",
    "Look up an order",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


@pytest.fixture
def model(vllm_server: str) -> OpenAICompatModel:
    spec = OpenAIModelSpec(
        kind="openai",
        base_url=vllm_server,
        model="tiny-llama",
        max_output_tokens=256,
        temperature=1.0,
        timeout_s=60,
    )
    return OpenAICompatModel("vllm", spec)


async def test_chat_reports_the_servers_usage(model: OpenAICompatModel) -> None:
    out = await model.complete(ModelRequest(messages=(Message("user", "hello"),), max_output_tokens=16))
    assert out.model == "tiny-llama" and out.usage.input_tokens > 0 and 0 < out.usage.output_tokens <= 16
    await model.aclose()


async def test_json_schema_response_format(model: OpenAICompatModel) -> None:
    for i in range(5):
        out = await model.complete(
            ModelRequest(messages=(Message("user", f"order A{i} as JSON"),), json_schema=SCHEMA)
        )
        jsonschema.validate(json.loads(out.text), SCHEMA)
    await model.aclose()


async def test_tools_come_back_as_parsed_tool_calls(model: OpenAICompatModel) -> None:
    for i in range(5):
        out = await model.complete(
            ModelRequest(messages=(Message("user", f"Where is order A{i}?"),), tools=(TOOL,))
        )
        assert out.finish_reason == "tool_calls" and out.tool_calls[0].name == "lookup_order"
        jsonschema.validate(out.tool_calls[0].arguments, TOOL.parameters)
    await model.aclose()


async def test_streaming_with_usage(model: OpenAICompatModel) -> None:
    events = [
        e async for e in model.stream(ModelRequest(messages=(Message("user", "hi"),), max_output_tokens=16))
    ]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert "".join(e.text for e in events if isinstance(e, StreamDelta)) == done.response.text
    assert done.response.usage.output_tokens > 0
    await model.aclose()
