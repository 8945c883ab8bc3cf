"""The detector's actions take effect on real runs: a throttled agent answers 429 (Retry-After), a
rerouted agent runs on the other tier, a quarantined session's tool calls wait for approval."""

from __future__ import annotations

from conftest import Observed

from raygent.core.clock import SystemClock
from raygent.core.store.base import AuditQuery


async def ask(observed: Observed, text: str, session: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    body = {"input": text, **({"session_id": session} if session else {})}
    response = await observed.http.post("/v1/agents/support/runs", json=body)
    return response.status_code, {**response.json(), "_headers": dict(response.headers)}


async def test_runs_are_measured_and_metrics_served_as_prometheus_text(observed: Observed) -> None:
    status, _ = await ask(observed, "where is order 1042?")
    assert status == 200
    await observed.client.flush()
    text = (await observed.http.get("/metrics")).text
    assert 'raygent_requests_total{agent="support",status="200"} 1' in text
    assert 'raygent_tool_calls_total{agent="support",tool="ask_orders",outcome="ok"} 1' in text
    assert 'raygent_tool_calls_total{agent="orders",tool="lookup_order",outcome="ok"} 1' in text
    assert 'raygent_tokens_total{agent="orders",model="open-small",type="input"}' in text
    assert "raygent_model_duration_seconds_bucket" in text and "raygent_queue_depth" in text
    assert "raygent_approvals_pending 0" in text  # the detector can quarantine, so holds are counted


async def test_a_throttled_agent_answers_429_with_retry_after_and_is_audited(observed: Observed) -> None:
    observed.hub.controls.throttle("support", SystemClock().now() + 600)
    await observed.client.flush()  # the process adopts the hub's controls on its next push
    status, body = await ask(observed, "where is order 1042?")
    assert status == 429
    assert body["type"].endswith("/agent-throttled") and body["_headers"]["retry-after"]
    errors = await observed.store.query_audit(AuditQuery(run_id=body["run_id"], kind="error"))
    assert any(e.payload.get("error_type") == "agent-throttled" for e in errors)
    await observed.client.flush()
    text = (await observed.http.get("/metrics")).text
    assert 'raygent_rejections_total{agent="support",status="429"}' in text
    status, _ = await ask(observed, "hello")  # other agents' calls and lifted throttles run again
    assert status == 429
    observed.hub.controls.lift(agent="support")
    await observed.client.flush()
    assert (await ask(observed, "hello"))[0] == 200


async def test_a_rerouted_agent_runs_on_the_detectors_tier(observed: Observed) -> None:
    observed.hub.controls.reroute("support", "cheap", SystemClock().now() + 600)
    await observed.client.flush()
    status, body = await ask(observed, "hello")
    assert status == 200
    [step] = body["steps"]
    assert step["backend"] == "open-small" and step["route_reason"].startswith(
        "detector reroute premium->cheap"
    )


async def test_a_quarantined_session_needs_approval_for_every_tool_call(observed: Observed) -> None:
    observed.hub.controls.quarantine("ses-bad", SystemClock().now() + 600)
    await observed.client.flush()
    status, body = await ask(observed, "where is order 1042?", session="ses-bad")
    assert status == 202 and body["run_status"] == "needs_approval" and body["approval_id"].startswith("apr_")
    assert body["tool"] == "ask_orders" and body.get("reason") == "quarantine"
    held = await observed.store.query_audit(AuditQuery(run_id=body["run_id"], kind="approval"))
    assert held[0].payload["event"] == "held" and held[0].payload["tool"] == "ask_orders"
    # Another session is not affected.
    assert (await ask(observed, "where is order 1042?", session="ses-good"))[0] == 200
    text = (await observed.http.get("/metrics")).text
    assert "raygent_approvals_pending 1" in text


async def test_a_token_spike_detected_on_live_traffic_quarantines_that_session(observed: Observed) -> None:
    for i in range(12):  # a baseline of normal calls
        assert (await ask(observed, "hello", session=f"s{i}"))[0] == 200
    await observed.client.flush()
    flood = "hello " + "please tell me everything about every order " * 300
    assert (await ask(observed, flood, session="ses-flood"))[0] == 200
    await observed.client.flush()
    [detection] = (await observed.http.get("/v1/telemetry/anomalies")).json()["anomalies"]
    assert detection["detector"] == "token_spike" and detection["session_id"] == "ses-flood"
    controls = (await observed.http.get("/v1/telemetry/controls")).json()
    assert list(controls["quarantined"]) == ["ses-flood"]
    status, body = await ask(observed, "where is order 1042?", session="ses-flood")
    assert status == 202 and body["run_status"] == "needs_approval"
    audited = await observed.store.query_audit(AuditQuery(kind="policy_decision"))
    assert [r.payload["stage"] for r in audited if r.identity == "raygent-detector"] == [
        "anomaly",
        "anomaly_action",
        "anomaly_action",
    ]
