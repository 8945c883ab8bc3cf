"""TracingModelInterceptor / TracingToolInterceptor over tiny real terminal stages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, Tracer

from raygent.core.config import TelemetrySpec
from raygent.core.errors import ModelError, ToolError
from raygent.core.interceptors import (
    CallContext,
    ModelCallInput,
    ModelCallOutput,
    ModelStage,
    ToolCallInput,
    ToolCallOutput,
    ToolStage,
    chain_model,
    chain_tool,
)
from raygent.core.messages import Message, ToolCall, Usage
from raygent.telemetry import (
    TracingModelInterceptor,
    TracingToolInterceptor,
    build_tracer_provider,
    span_to_dict,
    traceparent_of,
    tracer_for,
)

SECRET = "hunter2-do-not-trace"


@dataclass
class Telemetry:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def one(self, name_prefix: str) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.name.startswith(name_prefix)]
        return span


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    provider = build_tracer_provider(TelemetrySpec(exporter="none"))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Telemetry(provider, exporter, tracer_for(provider, "test"))
    provider.shutdown()


@dataclass
class FakeModel(ModelStage):
    """Terminal model stage: records what reached it and answers like the offline backend."""

    error: BaseException | None = None
    seen: list[ModelCallInput] = field(default_factory=list)

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        self.seen.append(inp)
        if self.error is not None:
            raise self.error
        return ModelCallOutput(
            text=f"echo {SECRET}",
            tool_calls=(ToolCall(id="c1", name="lookup", arguments={"q": SECRET}),),
            usage=Usage(input_tokens=12, output_tokens=5),
            backend="offline",
            model="echo-1",
            finish_reason="tool_calls",
            cost_usd=0.25,
            latency_s=0.01,
            route_reason="cheapest",
        )


@dataclass
class FakeTool(ToolStage):
    """Terminal tool stage; ``delegate`` stands in for an agent-as-tool calling a model below it."""

    error: BaseException | None = None
    is_error: bool = False
    delegate: ModelStage | None = None
    seen: list[ToolCallInput] = field(default_factory=list)

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        self.seen.append(inp)
        if self.error is not None:
            raise self.error
        if self.delegate is not None:
            await self.delegate.call_model(ModelCallInput(ctx=inp.ctx.child(agent="helper"), messages=()))
        return ToolCallOutput(
            call_id=inp.call.id, name=inp.call.name, result={"secret": SECRET}, is_error=self.is_error
        )


def make_ctx(traceparent: str | None) -> CallContext:
    return CallContext(
        run_id="run-1",
        session_id="sess-1",
        agent="planner",
        identity="svc-planner",
        step=3,
        traceparent=traceparent,
        caller_chain=("root", "planner"),
        prompt_id="plan",
        prompt_version="2",
        prompt_sha256="ab" * 32,
    )


def model_input(ctx: CallContext) -> ModelCallInput:
    return ModelCallInput(ctx=ctx, messages=(Message(role="user", content=SECRET),))


def tool_input(ctx: CallContext) -> ToolCallInput:
    return ToolCallInput(ctx=ctx, call=ToolCall(id="c1", name="lookup", arguments={"password": SECRET}))


def ids(span: ReadableSpan) -> SpanContext:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx


def tp_of(span: ReadableSpan) -> str:
    ctx = ids(span)
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_model_and_tool_spans_share_the_parent_trace(telemetry: Telemetry) -> None:
    model = chain_model(FakeModel(), [TracingModelInterceptor(telemetry.tracer)])
    tool = chain_tool(FakeTool(), [TracingToolInterceptor(telemetry.tracer)])
    with telemetry.tracer.start_as_current_span("invoke_agent planner") as root:
        ctx = make_ctx(traceparent_of(root))
    await model.call_model(model_input(ctx))
    await tool.call_tool(tool_input(ctx))

    root_ctx = root.get_span_context()
    chat, execute = telemetry.one("chat"), telemetry.one("execute_tool")
    for span in (chat, execute):
        assert ids(span).trace_id == root_ctx.trace_id
        assert span.parent is not None
        assert span.parent.span_id == root_ctx.span_id
        assert span.parent.is_remote  # rebuilt from the traceparent string, as in another process


async def test_model_span_attributes(telemetry: Telemetry) -> None:
    model = chain_model(FakeModel(), [TracingModelInterceptor(telemetry.tracer)])
    await model.call_model(model_input(make_ctx(None)))

    span = telemetry.one("chat")
    assert span.name == "chat echo-1"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "echo-1"
    assert attrs["gen_ai.response.model"] == "echo-1"
    assert attrs["gen_ai.provider.name"] == "raygent.offline"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs["raygent.agent"] == "planner"
    assert attrs["raygent.run_id"] == "run-1"
    assert attrs["raygent.session_id"] == "sess-1"
    assert attrs["raygent.step"] == 3
    assert attrs["raygent.identity"] == "svc-planner"
    assert attrs["raygent.prompt.id"] == "plan"
    assert attrs["raygent.prompt.version"] == "2"
    assert attrs["raygent.prompt.sha256"] == "ab" * 32
    assert attrs["raygent.route.reason"] == "cheapest"
    assert attrs["raygent.cost.usd"] == 0.25
    assert attrs["raygent.caller_chain"] == "root,planner"


async def test_tool_span_attributes(telemetry: Telemetry) -> None:
    tool = chain_tool(FakeTool(), [TracingToolInterceptor(telemetry.tracer)])
    await tool.call_tool(tool_input(make_ctx(None)))

    span = telemetry.one("execute_tool")
    assert span.name == "execute_tool lookup"
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "lookup"
    assert attrs["gen_ai.tool.call.id"] == "c1"
    assert attrs["raygent.tool.is_error"] is False
    assert attrs["raygent.cost.usd"] == 0.0
    assert attrs["raygent.run_id"] == "run-1"
    assert attrs["raygent.step"] == 3


async def test_no_argument_message_or_result_values_on_spans(telemetry: Telemetry) -> None:
    model = chain_model(FakeModel(), [TracingModelInterceptor(telemetry.tracer)])
    tool = chain_tool(FakeTool(), [TracingToolInterceptor(telemetry.tracer)])
    await model.call_model(model_input(make_ctx(None)))
    await tool.call_tool(tool_input(make_ctx(None)))

    dumped = json.dumps([span_to_dict(s) for s in telemetry.spans()])
    assert SECRET not in dumped


async def test_terminal_stage_sees_the_new_spans_traceparent(telemetry: Telemetry) -> None:
    fake_model, fake_tool = FakeModel(), FakeTool()
    model = chain_model(fake_model, [TracingModelInterceptor(telemetry.tracer)])
    tool = chain_tool(fake_tool, [TracingToolInterceptor(telemetry.tracer)])
    caller_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await model.call_model(model_input(make_ctx(caller_tp)))
    await tool.call_tool(tool_input(make_ctx(caller_tp)))

    (model_seen,) = fake_model.seen
    (tool_seen,) = fake_tool.seen
    assert model_seen.ctx.traceparent == tp_of(telemetry.one("chat"))
    assert tool_seen.ctx.traceparent == tp_of(telemetry.one("execute_tool"))
    # Only the traceparent changes; the rest of the input travels untouched.
    assert model_seen.ctx.run_id == "run-1"
    assert model_seen.messages == model_input(make_ctx(None)).messages
    assert tool_seen.call.arguments == {"password": SECRET}


async def test_delegated_model_call_is_parented_under_the_tool_span(telemetry: Telemetry) -> None:
    inner = chain_model(FakeModel(), [TracingModelInterceptor(telemetry.tracer)])
    tool = chain_tool(FakeTool(delegate=inner), [TracingToolInterceptor(telemetry.tracer)])
    await tool.call_tool(tool_input(make_ctx("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")))

    chat, execute = telemetry.one("chat"), telemetry.one("execute_tool")
    assert chat.parent is not None
    assert chat.parent.span_id == ids(execute).span_id
    assert ids(chat).trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert (chat.attributes or {})["raygent.agent"] == "helper"


@pytest.mark.parametrize("bad", ["garbage", "00-xyz-abc-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", ""])
async def test_malformed_traceparent_starts_a_new_root(telemetry: Telemetry, bad: str) -> None:
    fake = FakeModel()
    model = chain_model(fake, [TracingModelInterceptor(telemetry.tracer)])
    out = await model.call_model(model_input(make_ctx(bad)))

    assert out.model == "echo-1"
    span = telemetry.one("chat")
    assert span.parent is None
    assert fake.seen[0].ctx.traceparent == tp_of(span)


async def test_model_error_sets_status_and_reraises_the_same_exception(telemetry: Telemetry) -> None:
    error = ModelError("backend down", retryable=True)
    model = chain_model(FakeModel(error=error), [TracingModelInterceptor(telemetry.tracer)])
    with pytest.raises(ModelError) as raised:
        await model.call_model(model_input(make_ctx(None)))

    assert raised.value is error
    span = telemetry.one("chat")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ModelError"
    assert (span.attributes or {})["error.type"] == "ModelError"
    assert [e.name for e in span.events] == ["exception"]
    assert span.end_time is not None


async def test_tool_exception_sets_status_and_reraises(telemetry: Telemetry) -> None:
    error = ToolError("tool crashed")
    tool = chain_tool(FakeTool(error=error), [TracingToolInterceptor(telemetry.tracer)])
    with pytest.raises(ToolError) as raised:
        await tool.call_tool(tool_input(make_ctx(None)))

    assert raised.value is error
    span = telemetry.one("execute_tool")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ToolError"


async def test_tool_result_marked_error_sets_error_status(telemetry: Telemetry) -> None:
    tool = chain_tool(FakeTool(is_error=True), [TracingToolInterceptor(telemetry.tracer)])
    out = await tool.call_tool(tool_input(make_ctx(None)))

    assert out.is_error
    span = telemetry.one("execute_tool")
    assert span.status.status_code is StatusCode.ERROR
    attrs = dict(span.attributes or {})
    assert attrs["raygent.tool.is_error"] is True
    assert attrs["error.type"] == "tool_error"


async def test_cancellation_is_recorded_and_propagates(telemetry: Telemetry) -> None:
    model = chain_model(
        FakeModel(error=asyncio.CancelledError()), [TracingModelInterceptor(telemetry.tracer)]
    )
    with pytest.raises(asyncio.CancelledError):
        await model.call_model(model_input(make_ctx(None)))

    span = telemetry.one("chat")
    assert (span.attributes or {})["error.type"] == "CancelledError"


async def test_concurrent_calls_keep_their_own_parents(telemetry: Telemetry) -> None:
    inner = chain_model(FakeModel(), [TracingModelInterceptor(telemetry.tracer)])
    tool = chain_tool(FakeTool(delegate=inner), [TracingToolInterceptor(telemetry.tracer)])
    roots = [f"00-{run + 1:032x}-{run + 1:016x}-01" for run in range(20)]
    await asyncio.gather(*(tool.call_tool(tool_input(make_ctx(tp))) for tp in roots))

    tool_spans = {ids(s).span_id: s for s in telemetry.spans() if s.name.startswith("execute_tool")}
    chats = [s for s in telemetry.spans() if s.name.startswith("chat")]
    assert len(tool_spans) == len(chats) == 20
    for chat in chats:
        assert chat.parent is not None
        parent = tool_spans[chat.parent.span_id]
        assert ids(parent).trace_id == ids(chat).trace_id
