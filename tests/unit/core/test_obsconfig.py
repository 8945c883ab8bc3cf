"""The telemetry section of the fleet file: OTLP, metrics and detector settings, with clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from raygent.core.config import TelemetrySpec
from raygent.core.errors import ConfigError
from raygent.core.obsconfig import OtlpSpec
from raygent.telemetry.setup import build_tracer_provider, otlp_headers, otlp_span_exporter


def test_defaults_keep_old_fleets_valid() -> None:
    spec = TelemetrySpec()
    assert spec.exporter == "none" and spec.metrics.enabled and spec.detector is None and spec.otlp is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"detector": {"tool_errors": {"baseline_rate": 0.3, "alert_rate": 0.1}}},
            "alert_rate must be above",
        ),
        ({"detector": {"latency_slo": {}}}, "needs p95_ms and/or p99_ms"),
        ({"detector": {"token_spike": {"actions": ["page-someone"]}}}, "alert"),
        ({"otlp": {"endpoint": "collector:4318"}}, "http:// or https://"),
        ({"otlp": {"protocol": "thrift"}}, "http/protobuf"),
        ({"metrics": {"flush_interval_s": 0}}, "greater than 0"),
        ({"detector": {"actions": {"webhok_url": "http://x"}}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TelemetrySpec.model_validate(data)


def test_otlp_headers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = OtlpSpec(headers_env="OTLP_TEST_HEADERS")
    monkeypatch.setenv("OTLP_TEST_HEADERS", "Authorization=Bearer abc, x-tenant=acme")
    assert otlp_headers(spec) == {"authorization": "Bearer abc", "x-tenant": "acme"}
    monkeypatch.setenv("OTLP_TEST_HEADERS", "no-equals-sign")
    with pytest.raises(ConfigError, match="key=value"):
        otlp_headers(spec)


def test_http_and_grpc_exporters_are_built_and_wired() -> None:
    http = otlp_span_exporter(OtlpSpec(endpoint="http://127.0.0.1:4318"))
    grpc = otlp_span_exporter(OtlpSpec(endpoint="http://127.0.0.1:4317", protocol="grpc"))
    assert type(http).__module__.endswith("http.trace_exporter")
    assert type(grpc).__module__.endswith("grpc.trace_exporter")
    provider = build_tracer_provider(TelemetrySpec(exporter="otlp", otlp=OtlpSpec(timeout_s=0.5)))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        assert span.get_span_context().is_valid
    provider.shutdown()
    grpc.shutdown()
    http.shutdown()
