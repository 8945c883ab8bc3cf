"""Metric events fold into Prometheus text that a real Prometheus parser reads back."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from raygent.telemetry.metrics import Gauge, MetricEvent, MetricsAggregate, OtelInstruments


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def events() -> list[MetricEvent]:
    return [
        MetricEvent(
            "model", "support", "premium", 0.2, 1.0, input_tokens=100, output_tokens=20, cost_usd=0.01
        ),
        MetricEvent(
            "model", "support", "premium", 0.4, 2.0, input_tokens=300, output_tokens=30, cost_usd=0.02
        ),
        MetricEvent(
            "model", "support", "tier:premium", 0.0, 3.0, error=True, error_type="agent-throttled", status=429
        ),
        MetricEvent("tool", "orders", "lookup_order", 0.01, 4.0),
        MetricEvent("tool", "orders", "lookup_order", 0.02, 5.0, error=True),
        MetricEvent("http", "support", "runs", 0.5, 6.0, status=200),
        MetricEvent("http", "support", "runs", 0.001, 7.0, status=503),
    ]


def test_aggregate_renders_valid_prometheus_text_with_every_family() -> None:
    agg = MetricsAggregate()
    for e in events():
        agg.add(e)
    agg.note_anomaly("token_spike", "quarantine")
    agg.set_gauges([Gauge("raygent_queue_depth", (("agent", "support"), ("replica", "r1")), 3, "depth")])
    text = agg.render([Gauge("raygent_approvals_pending", (), 2, "pending")])
    fam = families(text)
    tokens = {(s[1]["type"]): s[2] for s in fam["raygent_tokens"] if s[1]["agent"] == "support"}
    assert tokens == {"input": 400, "output": 50}
    assert [s[2] for s in fam["raygent_cost_usd"]] == [0.03]
    outcomes = {s[1]["outcome"]: s[2] for s in fam["raygent_model_calls"]}
    assert outcomes == {"ok": 2, "agent-throttled": 1}
    rejections = {s[1]["status"]: s[2] for s in fam["raygent_rejections"]}
    assert rejections == {"429": 1, "503": 1}
    tools = {s[1]["outcome"]: s[2] for s in fam["raygent_tool_calls"]}
    assert tools == {"ok": 1, "error": 1}
    assert [s[2] for s in fam["raygent_tool_error_ratio"]] == [0.5]
    hist = {
        s[0]: s for s in fam["raygent_model_duration_seconds"] if s[1].get("le") in (None, "0.25", "+Inf")
    }
    assert hist["raygent_model_duration_seconds_count"][2] == 2
    buckets = {s[1]["le"]: s[2] for s in fam["raygent_model_duration_seconds"] if "le" in s[1]}
    assert buckets["0.25"] == 1 and buckets["0.5"] == 2 and buckets["+Inf"] == 2
    assert [s[2] for s in fam["raygent_queue_depth"]] == [3]
    assert [s[2] for s in fam["raygent_approvals_pending"]] == [2]
    assert [s[1] for s in fam["raygent_anomalies"]] == [{"detector": "token_spike", "action": "quarantine"}]
    assert "# TYPE raygent_request_duration_seconds histogram" in text


def test_label_values_are_escaped() -> None:
    agg = MetricsAggregate()
    agg.add(MetricEvent("tool", 'a"b\\c\nd', "t", 0.1, 1.0))
    fam = families(agg.render())
    assert fam["raygent_tool_calls"][0][1]["agent"] == 'a"b\\c\nd'


def test_otel_instruments_record_genai_metrics() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = OtelInstruments(provider.get_meter("test"))
    for e in events():
        instruments.record(e)
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "raygent.cost",
        "raygent.tool.duration",
        "raygent.tool.calls",
        "http.server.request.duration",
        "raygent.rejections",
    } <= names
    provider.shutdown()
