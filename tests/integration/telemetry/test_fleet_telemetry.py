"""The deployed graph on real Ray Serve (a fleet beside the session's example fleet, its own route prefix):

- one trace per run across the ingress, agent, router and gateway processes, exported over OTLP/HTTP to a
  receiver in this process that decodes the protobuf;
- ``/metrics`` aggregates what every process recorded (through the telemetry hub actor);
- a token spike detected on live traffic throttles the agent (its runs answer 429 with Retry-After) and
  quarantines the session (its tool calls need approval), all audited.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from otlpkit import Receiver, assert_one_tree, otlp_receiver, parent_name

from raygent.core.fleetfile import load_fleet
from raygent.core.obsconfig import DetectorActionsSpec, DetectorSpec, MetricsSpec, OtlpSpec, TokenSpikeSpec
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery

pytestmark = pytest.mark.integration

PREFIX = "/observed"
T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], *, attempts: int = 120, pause_s: float = 0.5, what: str = ""
) -> T:
    """Poll a condition that another process makes true (no timing is asserted, only the outcome)."""
    for _ in range(attempts):
        value = probe()
        if value:
            return value
        time.sleep(pause_s)
    raise AssertionError(f"the condition never held: {what}")


@pytest.fixture(scope="module")
def observed(
    served_fleet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str, Receiver]]:
    import ray
    from ray import serve

    from raygent.serve.app import build_app
    from raygent.telemetry.client import RayHubPort, hub_actor_name

    with otlp_receiver() as receiver:
        fleet = load_fleet(
            served_fleet.fleet.base_dir + "/fleet.yaml", state_dir=tmp_path_factory.mktemp("obs")
        )
        lean = {"num_cpus": 0.02}
        fleet = fleet.model_copy(
            update={
                "name": "observed",
                "server": fleet.server.model_copy(
                    update={"num_cpus": 0.02, "router_num_cpus": 0.02, "gateway_num_cpus": 0.02}
                ),
                "agents": {k: a.model_copy(update=lean) for k, a in fleet.agents.items()},
                "telemetry": fleet.telemetry.model_copy(
                    update={
                        "exporter": "otlp",
                        "otlp": OtlpSpec(endpoint=receiver.endpoint, export_metrics=False),
                        "metrics": MetricsSpec(flush_interval_s=0.2),
                        "detector": DetectorSpec(
                            token_spike=TokenSpikeSpec(min_samples=8, actions=["throttle", "quarantine"]),
                            actions=DetectorActionsSpec(throttle_s=600, quarantine_s=600),
                        ),
                    }
                ),
            }
        )
        serve.run(build_app(fleet), name=fleet.name, route_prefix=PREFIX)
        try:
            yield fleet, served_fleet.base_url + PREFIX, receiver
        finally:
            serve.delete(fleet.name)
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(hub_actor_name(fleet), namespace=RayHubPort.NAMESPACE))


def post(base: str, agent: str, text: str, session: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/agents/{agent}/runs", json={"input": text, "session_id": session}, timeout=60
    )


def test_one_trace_across_processes_and_metrics_from_every_process(
    observed: tuple[Any, str, Receiver],
) -> None:
    _, base, receiver = observed
    response = post(base, "support", "where is order 1042?", "ses-trace")
    assert response.status_code == 200, response.text
    trace_id = response.json()["trace_id"]

    def trace() -> list[dict[str, Any]] | None:
        spans = [s for s in receiver.spans() if s["trace_id"] == trace_id]
        return spans if len(spans) >= 9 else None  # batched exporters flush every few seconds

    spans = eventually(trace, what="spans")
    assert sorted(s["name"] for s in spans) == sorted(
        [
            "POST /v1/agents/{agent}/runs",
            "invoke_agent support",
            "invoke_agent orders",
            "execute_tool ask_orders",
            "execute_tool lookup_order",
            "chat premium",
            "chat premium",
            "chat open-small",
            "chat open-small",
        ]
    )
    by_id = assert_one_tree(spans)
    components = {s["resource"]["raygent.component"] for s in spans}
    assert components == {"ingress", "agent.support", "agent.orders", "router", "gateway"}
    named = {s["name"]: s for s in spans}
    assert parent_name(by_id, named["invoke_agent support"]) == "POST /v1/agents/{agent}/runs"
    assert parent_name(by_id, named["invoke_agent orders"]) == "execute_tool ask_orders"
    assert parent_name(by_id, named["execute_tool lookup_order"]) == "invoke_agent orders"

    def metrics() -> str | None:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        wanted = (
            'raygent_requests_total{agent="support",status="200"}',
            'tool="lookup_order",outcome="ok"',
            'raygent_tokens_total{agent="support",model="premium",type="input"}',
        )
        return text if all(w in text for w in wanted) else None

    text = eventually(metrics, what="metrics")
    assert text.startswith("# HELP") and "raygent_queue_depth" in text


def test_a_token_spike_throttles_the_agent_and_quarantines_the_session(
    observed: tuple[Any, str, Receiver],
) -> None:
    fleet, base, _ = observed
    for i in range(10):
        assert post(base, "support", "hello", f"ses-{i}").status_code == 200
    time.sleep(0.5)  # let the router push the baseline before the spike (order of events at the hub)
    flood = "hello " + "please tell me everything about every order " * 300
    assert post(base, "support", flood, "ses-flood").status_code == 200

    def throttled() -> httpx.Response | None:
        r = post(base, "support", "hello", "ses-later")
        return r if r.status_code == 429 else None

    refused = eventually(throttled, what="throttle")
    assert refused.headers["retry-after"] and refused.json()["type"].endswith("/agent-throttled")
    controls = httpx.get(f"{base}/v1/telemetry/controls", timeout=30).json()
    assert "support" in controls["throttled"] and "ses-flood" in controls["quarantined"]

    def held() -> httpx.Response | None:
        r = post(base, "orders", "where is order 1042?", "ses-flood")
        return r if r.status_code == 202 else None

    body = eventually(held, what="quarantine").json()
    assert body["run_status"] == "needs_approval" and body["tool"] == "lookup_order"
    assert post(base, "orders", "where is order 1042?", "ses-fine").status_code == 200
    anomalies = httpx.get(f"{base}/v1/telemetry/anomalies", timeout=30).json()["anomalies"]
    assert [a["session_id"] for a in anomalies] == ["ses-flood"]
    import asyncio

    async def audited() -> list[str]:
        store = SQLiteStore(fleet.state_path("raygent.db"))
        records = await store.query_audit(AuditQuery(kind="policy_decision"))
        await store.close()
        return [
            r.payload.get("action", r.payload["stage"]) for r in records if r.identity == "raygent-detector"
        ]

    assert asyncio.run(audited()) == ["anomaly", "throttle", "quarantine"]
    text = httpx.get(f"{base}/metrics", timeout=30).text
    assert 'raygent_rejections_total{agent="support",status="429"}' in text
    assert "raygent_approvals_pending 1" in text
