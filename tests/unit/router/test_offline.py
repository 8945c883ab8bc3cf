"""The offline model against the support-desk script, plus the template and streaming rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygent.core.config import Fleet, OfflineModelSpec, OfflineRule
from raygent.core.fleetfile import load_fleet
from raygent.core.messages import Message, ToolCall, ToolSchema
from raygent.router.errors import ModelResponseError, ModelTimeoutError
from raygent.router.model import Model, ModelRequest, StreamDelta, StreamDone
from raygent.router.offline import OfflineModel
from raygent.router.tokens import count_request_tokens, count_tokens

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "support_desk"


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(EXAMPLE / "fleet.yaml")


@pytest.fixture
def premium(fleet: Fleet) -> OfflineModel:
    spec = fleet.models["premium"]
    assert isinstance(spec, OfflineModelSpec)
    return OfflineModel("premium", spec)


def tools(fleet: Fleet, *names: str) -> tuple[ToolSchema, ...]:
    """The schemas an agent would offer, built from the fleet's own tool definitions."""
    return tuple(ToolSchema(n, fleet.tools[n].description, fleet.tools[n].parameters) for n in names)


def lookup(order_id: str) -> dict[str, Any]:
    """What the example's lookup_order tool returns, from the example's own data."""
    orders = json.loads((EXAMPLE / "orders.json").read_text())
    order = orders.get(order_id)
    if order is None:
        return {"found": False, "order_id": order_id}
    return {"found": True, **order, "refundable": order["status"] == "delivered"}


def canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def after_tool(user: str, name: str, args: dict[str, Any], result: Any) -> tuple[Message, ...]:
    call = ToolCall("c1", name, args)
    return (
        Message("system", "You are an agent."),
        Message("user", user),
        Message("assistant", "", (call,)),
        Message("tool", canonical(result), tool_call_id="c1", name=name),
    )


async def test_is_a_model(premium: OfflineModel) -> None:
    assert isinstance(premium, Model)
    assert premium.name == "premium"


async def test_support_agent_asks_the_orders_agent(fleet: Fleet, premium: OfflineModel) -> None:
    request = ModelRequest(
        (Message("user", "where is order 1042?"),), tools(fleet, "ask_orders", "ask_refunds")
    )
    response = await premium.complete(request)
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "ask_orders"
    assert call.arguments == {"input": "What is the status of order 1042?"}
    assert "1042" in response.text
    assert response.model == "premium"


async def test_support_agent_asks_the_refunds_agent(fleet: Fleet, premium: OfflineModel) -> None:
    user = "I want a refund for order #1042, it arrived broken"
    request = ModelRequest((Message("user", user),), tools(fleet, "ask_orders", "ask_refunds"))
    [call] = (await premium.complete(request)).tool_calls
    assert call.name == "ask_refunds"
    assert call.arguments == {"input": f"Refund order 1042. Customer says: {user}"}


async def test_orders_agent_looks_the_order_up(fleet: Fleet, premium: OfflineModel) -> None:
    request = ModelRequest(
        (Message("user", "What is the status of order 1042?"),), tools(fleet, "lookup_order")
    )
    response = await premium.complete(request)
    [call] = response.tool_calls
    assert call.name == "lookup_order"
    assert call.arguments == {"order_id": "1042"}  # a string, as the tool's schema requires
    assert call.id == "call_0"


async def test_orders_agent_describes_the_looked_up_order(fleet: Fleet, premium: OfflineModel) -> None:
    messages = after_tool(
        "What is the status of order 1001?", "lookup_order", {"order_id": "1001"}, lookup("1001")
    )
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order")))
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()
    assert response.text == "Order 1001 (backpack) is shipped. In transit, expected 2026-11-28."


async def test_orders_agent_does_not_refund_without_the_refund_tool(
    fleet: Fleet, premium: OfflineModel
) -> None:
    messages = after_tool("status of order 1042?", "lookup_order", {"order_id": "1042"}, lookup("1042"))
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order")))
    assert response.tool_calls == ()
    assert response.text.startswith("Order 1042 (espresso machine) is delivered.")


async def test_refunds_agent_refunds_the_amount_paid_as_a_number(fleet: Fleet, premium: OfflineModel) -> None:
    user = "Refund order 1042. Customer says: it is broken"
    result = lookup("1042")
    assert result["refundable"] is True and result["total_usd"] == 149.0
    messages = after_tool(user, "lookup_order", {"order_id": "1042"}, result)
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order", "issue_refund")))
    [call] = response.tool_calls
    assert call.name == "issue_refund"
    assert call.arguments == {"order_id": "1042", "amount_usd": 149.0, "reason": user}
    assert isinstance(call.arguments["amount_usd"], float)
    assert call.id == "call_1"  # one assistant message before this turn
    assert "149.0 USD" in response.text


async def test_refunds_agent_confirms_the_refund(fleet: Fleet, premium: OfflineModel) -> None:
    refund = {"refund_id": "rf_abc", "order_id": "1042", "amount_usd": 149.0, "status": "issued"}
    messages = after_tool(
        "Refund order 1042", "issue_refund", {"order_id": "1042", "amount_usd": 149.0}, refund
    )
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order", "issue_refund")))
    assert response.text == "Refund rf_abc of $149.0 for order 1042 has been issued."


async def test_unknown_order_is_reported(fleet: Fleet, premium: OfflineModel) -> None:
    messages = after_tool("where is order 7", "lookup_order", {"order_id": "7"}, lookup("7"))
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order", "issue_refund")))
    assert response.text == "I could not find order 7. Please check the number."


async def test_support_agent_relays_the_delegate_answer(fleet: Fleet, premium: OfflineModel) -> None:
    answer = {"answer": "Order 1042 (espresso machine) is delivered."}
    messages = after_tool("where is order 1042?", "ask_orders", {"input": "..."}, answer)
    response = await premium.complete(ModelRequest(messages, tools(fleet, "ask_orders", "ask_refunds")))
    assert response.text == answer["answer"]


async def test_tool_name_is_recovered_from_the_call_id(fleet: Fleet, premium: OfflineModel) -> None:
    messages = after_tool("where is order 1001", "lookup_order", {"order_id": "1001"}, lookup("1001"))
    unnamed = (*messages[:-1], Message("tool", messages[-1].content, tool_call_id="c1"))
    response = await premium.complete(ModelRequest(unnamed, tools(fleet, "lookup_order")))
    assert response.text.startswith("Order 1001 (backpack) is shipped.")


async def test_tool_result_spacing_does_not_defeat_the_match(fleet: Fleet, premium: OfflineModel) -> None:
    messages = after_tool("refund order 1042", "lookup_order", {"order_id": "1042"}, lookup("1042"))
    spaced = json.dumps(lookup("1042"), indent=2)  # not compact, keys unsorted
    messages = (*messages[:-1], Message("tool", spaced, tool_call_id="c1", name="lookup_order"))
    response = await premium.complete(ModelRequest(messages, tools(fleet, "lookup_order", "issue_refund")))
    assert [c.name for c in response.tool_calls] == ["issue_refund"]


async def test_greeting_and_fallback(fleet: Fleet, premium: OfflineModel) -> None:
    hello = await premium.complete(ModelRequest((Message("user", "Hello there"),)))
    assert hello.text.startswith("Hello!")
    other = await premium.complete(ModelRequest((Message("user", "Tell me a joke"),)))
    assert other.text == fleet.models["premium"].fallback_say  # type: ignore[union-attr]
    assert other.finish_reason == "stop"
    assert other.extra["offline_rule"] is None


async def test_a_call_rule_needs_its_tool_offered(fleet: Fleet, premium: OfflineModel) -> None:
    # Both the ask_orders and the lookup_order rules match, but neither tool is offered.
    response = await premium.complete(ModelRequest((Message("user", "where is order 1042?"),)))
    assert response.tool_calls == ()
    assert response.text == fleet.models["premium"].fallback_say  # type: ignore[union-attr]


async def test_user_rules_do_not_answer_tool_results() -> None:
    spec = OfflineModelSpec(kind="offline", rules=[OfflineRule(say="user rule")], fallback_say="fallback")
    model = OfflineModel("m", spec)
    assert (await model.complete(ModelRequest((Message("user", "x"),)))).text == "user rule"
    messages = after_tool("x", "t", {}, {"a": 1})
    assert (await model.complete(ModelRequest(messages))).text == "fallback"
    assert (await model.complete(ModelRequest(()))).text == "fallback"


def _spec(*rules: OfflineRule) -> OfflineModelSpec:
    return OfflineModelSpec(kind="offline", rules=list(rules))


async def test_argument_templates_keep_the_type_of_a_single_field() -> None:
    rule = OfflineRule(
        after_tool="t",
        call="next",
        args={
            "count": "{result.count}",
            "label": "n={result.count}",
            "flag": "{result.ok}",
            "nested": {"inner": "{result.obj.inner}", "items": ["{result.items[1]}"]},
            "literal": 5,
            "user": "{user}",
        },
    )
    result = {"count": 3, "ok": True, "obj": {"inner": [1, 2]}, "items": ["a", "b"]}
    messages = after_tool("go", "t", {}, result)
    response = await OfflineModel("m", _spec(rule)).complete(
        ModelRequest(messages, (ToolSchema("next", ""),))
    )
    assert response.tool_calls[0].arguments == {
        "count": 3,
        "label": "n=3",
        "flag": True,
        "nested": {"inner": [1, 2], "items": ["b"]},
        "literal": 5,
        "user": "go",
    }


async def test_say_templates_render_json_values_and_format_specs() -> None:
    rule = OfflineRule(after_tool="t", say="{result.ok} {result.none} {result.obj} {result.total:.2f}")
    messages = after_tool("go", "t", {}, {"ok": True, "none": None, "obj": {"b": 1}, "total": 1.5})
    response = await OfflineModel("m", _spec(rule)).complete(ModelRequest(messages))
    assert response.text == 'true null {"b":1} 1.50'


async def test_named_groups_and_plain_text_results() -> None:
    rules = (
        OfflineRule(match=r"(?P<who>\w+) says hi", say="Hi {who}, you said: {user}"),
        OfflineRule(after_tool="t", say="tool said {result}"),
    )
    model = OfflineModel("m", _spec(*rules))
    assert (await model.complete(ModelRequest((Message("user", "bob says hi"),)))).text == (
        "Hi bob, you said: bob says hi"
    )
    messages = (
        *after_tool("x", "t", {}, {})[:-1],
        Message("tool", "plain text", tool_call_id="c1", name="t"),
    )
    assert (await model.complete(ModelRequest(messages))).text == "tool said plain text"


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("{result.missing}", "result.missing"),
        ("{result.obj.deeper}", "result.obj.deeper"),
        ("{order}", "order"),
    ],
)
async def test_missing_field_is_a_located_model_response_error(template: str, field: str) -> None:
    rules = (OfflineRule(match="nomatch", say="unused"), OfflineRule(after_tool="t", say=template))
    messages = after_tool("x", "t", {}, {"obj": {"a": 1}, "present": 1})
    with pytest.raises(ModelResponseError) as caught:
        await OfflineModel("m", _spec(*rules)).complete(ModelRequest(messages))
    error = caught.value
    assert "rules[1]" in error.detail and "{" + field + "}" in error.detail
    assert error.retryable is False
    assert error.extra["rule"] == 1


async def test_missing_field_in_a_single_field_argument() -> None:
    rule = OfflineRule(after_tool="t", call="next", args={"x": "{result.nope}"})
    messages = after_tool("x", "t", {}, {"yes": 1})
    with pytest.raises(ModelResponseError, match=r"rules\[0\].*\{result\.nope\}.*available: yes"):
        await OfflineModel("m", _spec(rule)).complete(ModelRequest(messages, (ToolSchema("next", ""),)))


async def test_attribute_of_a_string_is_reported_not_crashed() -> None:
    rule = OfflineRule(after_tool="t", say="{result.name.first}")
    messages = after_tool("x", "t", {}, {"name": "bob"})
    with pytest.raises(ModelResponseError, match="rules\\[0\\]"):
        await OfflineModel("m", _spec(rule)).complete(ModelRequest(messages))


async def test_usage_counts_the_request_and_the_answer(fleet: Fleet, premium: OfflineModel) -> None:
    offered = tools(fleet, "ask_orders", "ask_refunds")
    messages = (Message("system", "be brief"), Message("user", "where is order 1042?"))
    response = await premium.complete(ModelRequest(messages, offered))
    assert response.usage.input_tokens == count_request_tokens(messages, offered)
    [call] = response.tool_calls
    arguments = json.dumps(call.arguments, separators=(",", ":"))
    expected = count_tokens(response.text) + count_tokens(call.name) + count_tokens(arguments)
    assert response.usage.output_tokens == expected
    bare = await premium.complete(ModelRequest(messages))
    assert bare.usage.input_tokens < response.usage.input_tokens


async def test_same_request_same_answer(fleet: Fleet) -> None:
    spec = fleet.models["premium"]
    assert isinstance(spec, OfflineModelSpec)
    request = ModelRequest((Message("user", "where is order 1042?"),), tools(fleet, "ask_orders"))
    first = await OfflineModel("premium", spec).complete(request)
    second = await OfflineModel("premium", spec).complete(request)
    assert first == second


async def test_latency_is_simulated_through_the_injected_sleep() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    spec = OfflineModelSpec(kind="offline", latency_ms=250)
    model = OfflineModel("m", spec, sleep=sleep)
    response = await model.complete(ModelRequest((Message("user", "x"),), timeout_s=1.0))
    assert slept == [0.25]
    assert response.latency_s == 0.25
    with pytest.raises(ModelTimeoutError) as caught:
        await model.complete(ModelRequest((Message("user", "x"),), timeout_s=0.1))
    assert slept == [0.25, 0.1]  # waited out the timeout, like a slow server
    assert caught.value.retryable is True


async def test_stream_yields_the_same_response_in_chunks(fleet: Fleet, premium: OfflineModel) -> None:
    messages = after_tool("status of order 1005", "lookup_order", {"order_id": "1005"}, lookup("1005"))
    request = ModelRequest(messages, tools(fleet, "lookup_order"))
    events = [event async for event in premium.stream(request)]
    deltas = [e.text for e in events if isinstance(e, StreamDelta)]
    assert isinstance(events[-1], StreamDone)
    assert sum(isinstance(e, StreamDone) for e in events) == 1
    complete = await premium.complete(request)
    assert events[-1].response == complete
    assert "".join(deltas) == complete.text
    words = len(complete.text.split())
    size = fleet.models["premium"].stream_chunk_tokens  # type: ignore[union-attr]
    assert len(deltas) == -(-words // size)
    assert all(len(d.split()) <= size for d in deltas)


async def test_stream_of_a_tool_call_streams_the_reasoning(fleet: Fleet, premium: OfflineModel) -> None:
    request = ModelRequest((Message("user", "where is order 1042?"),), tools(fleet, "lookup_order"))
    events = [event async for event in premium.stream(request)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.response.tool_calls[0].name == "lookup_order"
    assert "".join(e.text for e in events if isinstance(e, StreamDelta)) == done.response.text


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=120), chunk=st.integers(min_value=1, max_value=5))
async def test_stream_chunks_join_back_exactly(text: str, chunk: int) -> None:
    spec = OfflineModelSpec(kind="offline", rules=[OfflineRule(say="{user}")], stream_chunk_tokens=chunk)
    events = [e async for e in OfflineModel("m", spec).stream(ModelRequest((Message("user", text),)))]
    deltas = [e.text for e in events if isinstance(e, StreamDelta)]
    assert "".join(deltas) == text
    assert all(d for d in deltas)
