"""The hub: aggregation, detections turned into actions, signed alerts, and the audit trail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, TelemetrySpec
from raygent.core.obsconfig import DetectorActionsSpec, DetectorSpec, LatencySloSpec, TokenSpikeSpec
from raygent.core.store import SQLiteStore
from raygent.core.store.base import AuditQuery
from raygent.telemetry.hub import DETECTOR_IDENTITY, TelemetryHub
from raygent.telemetry.metrics import MetricEvent

SECRET = "alert-secret"


@pytest.fixture
def webhook() -> Iterator[dict[str, Any]]:
    got: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got["requests"].append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got["url"] = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    yield got
    server.shutdown()
    server.server_close()


def spec(url: str, actions: list[str]) -> TelemetrySpec:
    return TelemetrySpec(
        detector=DetectorSpec(
            token_spike=TokenSpikeSpec(min_samples=20, actions=actions),  # type: ignore[arg-type]
            latency_slo=LatencySloSpec(p99_ms=1000, min_samples=20, actions=["reroute"]),
            actions=DetectorActionsSpec(
                webhook_url=url, throttle_s=60, quarantine_s=120, reroute_tier="cheap"
            ),
        )
    )


def normal(i: int) -> MetricEvent:
    return MetricEvent(
        "model",
        "support",
        "premium",
        0.05,
        float(i),
        session_id="ok",
        run_id=f"r{i}",
        input_tokens=600 + (i % 7) * 10,
        output_tokens=60,
    )


async def test_a_spike_alerts_with_a_signed_webhook_throttles_quarantines_and_is_audited(
    webhook: dict[str, Any], example_fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYGENT_ALERT_SECRET", SECRET)
    store = SQLiteStore(example_fleet.state_path("raygent.db"))
    hub = TelemetryHub(
        spec(webhook["url"], ["alert", "throttle", "quarantine"]), store=store, clock=SystemClock()
    )
    await hub.push([normal(i) for i in range(50)], component="router")
    spike = MetricEvent(
        "model",
        "support",
        "premium",
        0.05,
        100.0,
        session_id="ses-x",
        run_id="run-x",
        input_tokens=9000,
        output_tokens=600,
    )
    controls = await hub.push([spike], component="router")
    now = SystemClock().now()
    assert controls.throttle_left_s("support", now) > 50
    assert (
        controls.quarantined_until("ses-x", now) is not None and controls.quarantined_until("ok", now) is None
    )
    [(headers, body)] = webhook["requests"]
    alert = json.loads(body)
    assert (
        alert["type"] == "raygent.anomaly"
        and alert["detector"] == "token_spike"
        and alert["run_id"] == "run-x"
    )
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["webhook-signature"], expected)
    records = await store.query_audit(AuditQuery(run_id="run-x"))
    assert all(r.identity == DETECTOR_IDENTITY and r.kind == "policy_decision" for r in records)
    stages = [(r.payload["stage"], r.payload.get("action")) for r in records]
    assert stages == [
        ("anomaly", None),
        ("anomaly_action", "alert"),
        ("anomaly_action", "throttle"),
        ("anomaly_action", "quarantine"),
    ]
    assert records[1].payload["delivered"] is True
    [recent] = hub.recent()
    assert [r["action"] for r in recent["results"]] == ["alert", "throttle", "quarantine"]
    text = hub.render()
    assert 'raygent_anomalies_total{detector="token_spike",action="throttle"} 1' in text
    assert (await store.verify_audit()).ok
    assert await hub.lift(agent="support")
    assert hub.snapshot().throttle_left_s("support", SystemClock().now()) == 0
    await store.close()


async def test_alert_is_not_sent_unsigned_and_the_reason_is_audited(
    webhook: dict[str, Any], example_fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYGENT_ALERT_SECRET", raising=False)
    store = SQLiteStore(example_fleet.state_path("raygent.db"))
    hub = TelemetryHub(spec(webhook["url"], ["alert"]), store=store, clock=SystemClock())
    await hub.push([normal(i) for i in range(50)])
    await hub.push([MetricEvent("model", "support", "p", 0.05, 99.0, run_id="run-y", input_tokens=20000)])
    assert webhook["requests"] == []
    [_, action] = await store.query_audit(AuditQuery(run_id="run-y"))
    assert action.payload["delivered"] is False and "RAYGENT_ALERT_SECRET" in action.payload["reason"]
    await store.close()


async def test_a_slow_model_is_rerouted_for_its_agent(example_fleet: Fleet) -> None:
    hub = TelemetryHub(spec("http://127.0.0.1:9/x", ["alert"]), store=None, clock=SystemClock())
    slow = [MetricEvent("model", "orders", "premium", 2.0, float(i)) for i in range(25)]
    controls = await hub.push(slow)
    assert controls.reroute_tier("orders", SystemClock().now()) == "cheap"
    assert controls.reroute_tier("support", SystemClock().now()) is None
