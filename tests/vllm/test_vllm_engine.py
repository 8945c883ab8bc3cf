"""The vLLM engine in this process (``VLLMEngineModel``): exact usage, structured output, tool calls,
streaming, and routing to it with a fallback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest
import pytest_asyncio
from transformers import AutoTokenizer

from raygent.core.clock import SystemClock
from raygent.core.config import OfflineModelSpec, VLLMModelSpec
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message, ToolSchema
from raygent.core.routing import RouterSpec, TierRouteSpec
from raygent.router.model import ModelRequest, StreamDelta, StreamDone
from raygent.router.offline import OfflineModel
from raygent.router.router import Router
from raygent.router.vllm_engine import VLLMEngineModel, tool_call_schema

TOOLS = (
    ToolSchema(
        "lookup_order",
        "Look up an order",
        {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    ),
    ToolSchema(
        "refund",
        "Refund an order",
        {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
        },
    ),
)
SCHEMA = {
    "type": "object",
    "properties": {"status": {"enum": ["shipped", "pending"]}, "eta_days": {"type": "integer"}},
    "required": ["status", "eta_days"],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(model_dir: Path) -> AsyncIterator[VLLMEngineModel]:
    model = VLLMEngineModel("tiny", VLLMModelSpec(kind="vllm", model=str(model_dir), max_num_seqs=8))
    await model.start()
    yield model
    await model.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_plain_chat_with_exact_token_usage(engine: VLLMEngineModel, model_dir: Path) -> None:
    messages = (Message("system", "You help with orders."), Message("user", "Where is my order?"))
    out = await engine.complete(ModelRequest(messages=messages, max_output_tokens=24, temperature=0.0))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(
        [m.to_dict() for m in messages], add_generation_prompt=True, tokenize=False
    )
    assert out.usage.input_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert 0 < out.usage.output_tokens <= 24
    assert out.usage.output_tokens == len(tokenizer.encode(out.text, add_special_tokens=False)) or out.text
    assert out.finish_reason in ("stop", "length") and out.extra["ttft_s"] > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_json_schema_output_always_validates(engine: VLLMEngineModel) -> None:
    for i in range(10):
        request = ModelRequest(
            messages=(Message("user", f"Status of order A{i} as JSON"),),
            json_schema=SCHEMA,
            max_output_tokens=256,
        )
        out = await engine.complete(request)
        jsonschema.validate(json.loads(out.text), SCHEMA)


@pytest.mark.asyncio(loop_scope="module")
async def test_tool_calls_are_structured_and_match_the_tool_schema(engine: VLLMEngineModel) -> None:
    by_name = {t.name: t for t in TOOLS}
    for i in range(10):
        request = ModelRequest(
            messages=(Message("user", f"Please refund order A{i}"),), tools=TOOLS, max_output_tokens=256
        )
        out = await engine.complete(request)
        assert out.finish_reason == "tool_calls" and len(out.tool_calls) == 1
        call = out.tool_calls[0]
        jsonschema.validate(call.arguments, by_name[call.name].parameters)
        assert out.usage.output_tokens > 0
    # After a tool result the model answers in text, so an agent loop ends.
    after = (
        Message("user", "Where is A1?"),
        Message("assistant", "", (out.tool_calls[0],)),
        Message(
            "tool", '{"status":"shipped"}', tool_call_id=out.tool_calls[0].id, name=out.tool_calls[0].name
        ),
    )
    final = await engine.complete(ModelRequest(messages=after, tools=TOOLS, max_output_tokens=32))
    assert final.tool_calls == () and final.finish_reason in ("stop", "length")


def test_tool_call_schema_shape() -> None:
    schema = tool_call_schema(TOOLS)
    jsonschema.validate({"name": "refund", "arguments": {"order_id": "A1", "amount": 3}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "refund", "arguments": {"order_id": "A1"}}, schema)


@pytest.mark.asyncio(loop_scope="module")
async def test_stream_deltas_join_to_the_final_text(engine: VLLMEngineModel) -> None:
    events = [
        e
        async for e in engine.stream(ModelRequest(messages=(Message("user", "hello"),), max_output_tokens=16))
    ]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert "".join(e.text for e in events if isinstance(e, StreamDelta)) == done.response.text


@pytest.mark.asyncio(loop_scope="module")
async def test_router_sends_cheap_calls_to_vllm_and_prices_them(engine: VLLMEngineModel) -> None:
    vllm_spec = VLLMModelSpec(
        kind="vllm", model="unused", tier="cheap", cost_per_1k_input_usd=0.0001, cost_per_1k_output_usd=0.0002
    )
    premium_spec = OfflineModelSpec(
        kind="offline", tier="premium", cost_per_1k_input_usd=0.0025, cost_per_1k_output_usd=0.01
    )
    config = RouterSpec(routes={"cheap": TierRouteSpec(strategy="cost", fallbacks=["premium"])})
    router = Router(
        {"open": engine, "premium": OfflineModel("premium", premium_spec)},
        {"open": vllm_spec, "premium": premium_spec},
        clock=SystemClock(),
        config=config,
        output_cap_tokens=64,
    )
    ctx = CallContext(run_id="r", session_id="s", agent="orders", identity="svc@acme", tier="cheap")
    out = await router.call_model(
        ModelCallInput(ctx=ctx, messages=(Message("user", "status of A7?"),), tools=TOOLS[:1])
    )
    assert out.backend == "open" and out.tool_calls[0].name == "lookup_order"
    expected = (out.usage.input_tokens * 0.0001 + out.usage.output_tokens * 0.0002) / 1000
    assert out.cost_usd == pytest.approx(expected)
    assert router.stats()["open"].calls == 1
