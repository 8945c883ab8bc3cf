"""Fleet-file settings of observability: OTLP export, metrics, and the anomaly detector with its actions.

Kept apart from :mod:`raygent.core.config` so the observability vocabulary is one concept in one module;
``config`` imports it, never the other way round. Everything is optional: a fleet without these keys
keeps its old behaviour (metrics on, no export, no detector).

.. code-block:: yaml

    telemetry:
      exporter: otlp
      otlp: {endpoint: "http://127.0.0.1:4318", protocol: http/protobuf}
      metrics: {flush_interval_s: 1.0}
      detector:
        token_spike: {z_threshold: 8, actions: [alert, quarantine]}
        tool_errors: {baseline_rate: 0.01, alert_rate: 0.3, actions: [alert, throttle]}
        latency_slo: {p99_ms: 2000, actions: [alert, reroute]}
        actions: {webhook_url: "https://ops.example/hooks/raygent", reroute_tier: cheap}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ActionName",
    "DetectorActionsSpec",
    "DetectorSpec",
    "LatencySloSpec",
    "MetricsSpec",
    "OtlpSpec",
    "TokenSpikeSpec",
    "ToolErrorSpec",
]

ActionName = Literal["alert", "throttle", "reroute", "quarantine"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OtlpSpec(_Strict):
    """Where OTLP spans (and metrics) go: an OpenTelemetry Collector or any OTLP receiver."""

    endpoint: str = Field(
        default="http://127.0.0.1:4318",
        description="http/protobuf: base URL (/v1/traces and /v1/metrics are appended); grpc: host:port URL.",
    )
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers_env: str | None = Field(
        default=None, description="Variable holding 'k=v,k2=v2' headers (e.g. an API key); never the file."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    insecure: bool = Field(default=True, description="grpc only: plaintext (a local collector).")
    export_metrics: bool = Field(default=True, description="Also export the OTel metrics over OTLP.")
    metric_interval_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return value.rstrip("/")


class MetricsSpec(_Strict):
    """Metrics every process records; batched deltas go to the fleet's telemetry hub actor."""

    enabled: bool = True
    flush_interval_s: float = Field(default=1.0, gt=0, le=300, description="How often a process pushes.")
    max_batch_events: int = Field(default=2048, ge=1, le=1_000_000, description="Push early at this size.")
    max_buffered_events: int = Field(
        default=50_000, ge=1, le=10_000_000, description="Events kept while the hub is unreachable."
    )


class _Rule(_Strict):
    actions: list[ActionName] = Field(default_factory=lambda: list[ActionName](["alert"]))
    cooldown_s: float = Field(default=60.0, ge=0, le=86_400, description="One detection per key per period.")


class TokenSpikeSpec(_Rule):
    """A model call whose tokens are far above its agent's recent calls (robust z-score: median/MAD)."""

    z_threshold: float = Field(default=8.0, gt=0)
    window: int = Field(default=200, ge=10, le=100_000, description="Recent calls per agent kept.")
    min_samples: int = Field(default=30, ge=5, le=100_000)
    min_ratio: float = Field(default=3.0, ge=1, description="And at least this many times the median.")


class ToolErrorSpec(_Rule):
    """A tool's error rate rising from ``baseline_rate`` towards ``alert_rate`` (Bernoulli CUSUM)."""

    baseline_rate: float = Field(default=0.01, gt=0, lt=1)
    alert_rate: float = Field(default=0.30, gt=0, lt=1)
    threshold: float = Field(default=12.0, gt=0, description="CUSUM decision interval (log-likelihood).")

    @model_validator(mode="after")
    def _rising(self) -> ToolErrorSpec:
        if self.alert_rate <= self.baseline_rate:
            raise ValueError("alert_rate must be above baseline_rate")
        return self


class LatencySloSpec(_Rule):
    """p95/p99 latency of a model or tool (over its recent calls) above the SLO."""

    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    window: int = Field(default=200, ge=10, le=100_000)
    min_samples: int = Field(default=50, ge=5, le=100_000)

    @model_validator(mode="after")
    def _some_slo(self) -> LatencySloSpec:
        if self.p95_ms is None and self.p99_ms is None:
            raise ValueError("latency_slo needs p95_ms and/or p99_ms")
        return self


class DetectorActionsSpec(_Strict):
    """How each action is carried out."""

    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_secret_env: str = Field(
        default="RAYGENT_ALERT_SECRET", description="Variable holding the HMAC-SHA256 key of alerts."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=120)
    throttle_s: float = Field(default=300.0, gt=0, le=86_400, description="A throttled agent answers 429.")
    reroute_tier: Literal["premium", "standard", "cheap"] = "cheap"
    reroute_s: float = Field(default=600.0, gt=0, le=86_400)
    quarantine_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)


class DetectorSpec(_Strict):
    """The anomaly detector over the metric stream; a rule left out is off."""

    token_spike: TokenSpikeSpec | None = None
    tool_errors: ToolErrorSpec | None = None
    latency_slo: LatencySloSpec | None = None
    actions: DetectorActionsSpec = Field(default_factory=DetectorActionsSpec)
    max_recent: int = Field(default=200, ge=1, le=100_000, description="Detections kept for the API.")
