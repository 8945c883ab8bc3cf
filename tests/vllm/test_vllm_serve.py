"""The in-cluster vLLM backend: the fleet's ``kind: vllm`` model as a Ray Serve deployment running the
vLLM engine (CPU resources from the fleet), called by the router through its handle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, VLLMModelSpec
from raygent.core.interceptors import CallContext, ModelCallInput
from raygent.core.messages import Message, ToolSchema
from raygent.router.model import ModelRequest, StreamDelta, StreamDone
from raygent.router.router import Router
from raygent.router.vllm_engine import VLLMServeModel, build_vllm_deployments

TOOL = ToolSchema(
    "lookup_order",
    "Look up an order",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


def fleet(model_dir: Path) -> Fleet:
    return Fleet.model_validate(
        {
            "name": "vllm-test",
            "models": {
                "open": {
                    "kind": "vllm",
                    "model": str(model_dir),
                    "tier": "cheap",
                    "num_cpus": 0.5,
                    "num_gpus": 0,
                    "cost_per_1k_input_usd": 0.0001,
                    "cost_per_1k_output_usd": 0.0002,
                    "max_output_tokens": 128,
                }
            },
            "prompts": {"p": {"versions": {"v1": "You help."}}},
            "agents": {"orders": {"identity": "svc-orders@acme", "prompt": "p@v1", "tier": "cheap"}},
        }
    )


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[tuple[Fleet, Any]]:
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        the_fleet = fleet(model_dir)
        apps = build_vllm_deployments(the_fleet)
        assert set(apps) == {"open"}
        handle = serve.run(apps["open"], name="vllm-open", route_prefix=None)
        yield the_fleet, handle
    finally:
        serve.shutdown()
        ray.shutdown()


async def test_router_calls_the_vllm_deployment_with_tools(served: tuple[Fleet, Any]) -> None:
    the_fleet, handle = served
    spec = the_fleet.models["open"]
    assert isinstance(spec, VLLMModelSpec)
    router = Router.from_fleet(
        the_fleet, clock=SystemClock(), models={"open": VLLMServeModel("open", handle)}
    )
    ctx = CallContext(run_id="r", session_id="s", agent="orders", identity="svc-orders@acme", tier="cheap")
    for i in range(3):
        out = await router.call_model(
            ModelCallInput(ctx=ctx, messages=(Message("user", f"Where is order A{i}?"),), tools=(TOOL,))
        )
        assert out.backend == "open" and out.tool_calls[0].name == "lookup_order"
        jsonschema.validate(out.tool_calls[0].arguments, TOOL.parameters)
        assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0
        assert out.cost_usd > 0


async def test_streaming_through_the_handle(served: tuple[Fleet, Any]) -> None:
    _, handle = served
    model = VLLMServeModel("open", handle)
    events = [
        e async for e in model.stream(ModelRequest(messages=(Message("user", "hi"),), max_output_tokens=16))
    ]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert "".join(e.text for e in events if isinstance(e, StreamDelta)) == done.response.text
