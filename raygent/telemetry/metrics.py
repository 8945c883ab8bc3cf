"""Metrics: one event per model call, tool call and HTTP request; OTel instruments; Prometheus text.

Every process records :class:`MetricEvent` values at one site per stage (the model chain in the router,
the tool chain in the gateway, the HTTP layer in the ingress). Each event goes to this process's OTel
meter (GenAI semantic-convention instruments, exported over OTLP when configured) and, batched, to the
fleet's telemetry hub, which folds them into a :class:`MetricsAggregate` and serves Prometheus text at
``/metrics`` for the whole fleet, whatever process recorded them.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from raygent.core.obsconfig import OtlpSpec

__all__ = [
    "LATENCY_BUCKETS_S",
    "EventKind",
    "Gauge",
    "MetricEvent",
    "MetricsAggregate",
    "OtelInstruments",
    "build_meter_provider",
]

EventKind = Literal["model", "tool", "http"]
# Seconds; spans a cached tool (1 ms) to a slow model (60 s).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_ERROR_WINDOW = 100  # recent calls per tool behind raygent_tool_error_ratio


@dataclass(frozen=True, slots=True)
class MetricEvent:
    """One observed call. ``name`` is the model backend, the tool, or the HTTP route's agent action.

    ``status`` is the HTTP status of a request, or of a refusal (429 throttled/over budget) elsewhere.
    """

    kind: EventKind
    agent: str
    name: str
    latency_s: float
    ts: float
    session_id: str = ""
    run_id: str = ""
    error: bool = False
    error_type: str = ""
    status: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Gauge:
    """A point-in-time value a process reports (queue depth, approvals pending, budget remaining)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    help: str = ""


Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, value)] += 1
        self.total += value
        self.count += 1


_HELP = {
    "raygent_requests_total": ("counter", "HTTP requests to start a run, by agent and status."),
    "raygent_request_duration_seconds": ("histogram", "HTTP run requests' latency, by agent."),
    "raygent_rejections_total": ("counter", "Refused calls: 503 backpressure, 429 throttled or over budget."),
    "raygent_model_calls_total": ("counter", "Model calls by agent, model and outcome."),
    "raygent_model_duration_seconds": ("histogram", "Model call latency by agent and model."),
    "raygent_tokens_total": ("counter", "Tokens by agent, model and type (input/output)."),
    "raygent_cost_usd_total": ("counter", "Model cost in USD by agent and model."),
    "raygent_tool_calls_total": ("counter", "Tool calls by agent, tool and outcome."),
    "raygent_tool_duration_seconds": ("histogram", "Tool call latency by agent and tool."),
    "raygent_tool_error_ratio": ("gauge", f"Share of the last {_ERROR_WINDOW} calls of a tool that failed."),
    "raygent_anomalies_total": ("counter", "Anomalies detected, by detector and action taken."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class MetricsAggregate:
    """The fleet's metrics, folded from events of every process; renders Prometheus text (v0.0.4)."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], _Histogram] = {}
        self._gauges: dict[tuple[str, Labels], tuple[float, str]] = {}
        self._tool_errors: dict[Labels, deque[bool]] = {}
        self.events_seen = 0

    def _inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        key = (name, labels)
        self._counters[key] = self._counters.get(key, 0.0) + value

    def _observe(self, name: str, labels: Labels, value: float) -> None:
        self._histograms.setdefault((name, labels), _Histogram()).observe(value)

    def count(self, name: str, **labels: str) -> float:
        """A counter's value (tests and the runs page read single series)."""
        return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def add(self, event: MetricEvent) -> None:
        """Fold one event into the counters and histograms."""
        self.events_seen += 1
        if event.kind == "model":
            self._add_model(event)
        elif event.kind == "tool":
            self._add_tool(event)
        else:
            self._add_http(event)
        if event.status in (429, 503):
            self._inc("raygent_rejections_total", (("agent", event.agent), ("status", str(event.status))))

    def _add_model(self, e: MetricEvent) -> None:
        base: Labels = (("agent", e.agent), ("model", e.name))
        outcome = "ok" if not e.error else (e.error_type or "error")
        self._inc("raygent_model_calls_total", (*base, ("outcome", outcome)))
        if e.error:
            return
        self._observe("raygent_model_duration_seconds", base, e.latency_s)
        self._inc("raygent_tokens_total", (*base, ("type", "input")), e.input_tokens)
        self._inc("raygent_tokens_total", (*base, ("type", "output")), e.output_tokens)
        self._inc("raygent_cost_usd_total", base, e.cost_usd)

    def _add_tool(self, e: MetricEvent) -> None:
        base: Labels = (("agent", e.agent), ("tool", e.name))
        self._inc("raygent_tool_calls_total", (*base, ("outcome", "error" if e.error else "ok")))
        self._observe("raygent_tool_duration_seconds", base, e.latency_s)
        window = self._tool_errors.setdefault((("tool", e.name),), deque(maxlen=_ERROR_WINDOW))
        window.append(e.error)

    def _add_http(self, e: MetricEvent) -> None:
        self._inc("raygent_requests_total", (("agent", e.agent), ("status", str(e.status))))
        self._observe("raygent_request_duration_seconds", (("agent", e.agent),), e.latency_s)

    def note_anomaly(self, detector: str, action: str) -> None:
        self._inc("raygent_anomalies_total", (("detector", detector), ("action", action)))

    def set_gauges(self, gauges: Iterable[Gauge]) -> None:
        """Replace the gauges named in ``gauges`` (the latest report of each series wins)."""
        for gauge in gauges:
            self._gauges[(gauge.name, gauge.labels)] = (gauge.value, gauge.help)

    def render(self, extra_gauges: Iterable[Gauge] = ()) -> str:
        """Prometheus text exposition of everything, plus ``extra_gauges`` computed by the caller."""
        lines: list[str] = []
        by_name: dict[str, list[str]] = {}

        def family(name: str) -> list[str]:
            return by_name.setdefault(name, [])

        for (name, labels), value in sorted(self._counters.items()):
            family(name).append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
        for (name, labels), hist in sorted(self._histograms.items(), key=lambda kv: kv[0]):
            rows = family(name)
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS_S, math.inf), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if math.isinf(bound) else repr(bound)
                rows.append(f"{name}_bucket{_fmt_labels(labels, (('le', le),))} {cumulative}")
            rows.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_value(hist.total)}")
            rows.append(f"{name}_count{_fmt_labels(labels)} {hist.count}")
        for labels, window in sorted(self._tool_errors.items()):
            ratio = sum(window) / len(window) if window else 0.0
            family("raygent_tool_error_ratio").append(
                f"raygent_tool_error_ratio{_fmt_labels(labels)} {_fmt_value(ratio)}"
            )
        helps: dict[str, str] = {}
        gauges = {**{k: v for k, v in self._gauges.items()}}
        for gauge in extra_gauges:
            gauges[(gauge.name, gauge.labels)] = (gauge.value, gauge.help)
        for (name, labels), (value, help_text) in sorted(gauges.items()):
            family(name).append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
            helps.setdefault(name, help_text)
        for name in sorted(by_name):
            kind, help_text = _HELP.get(name, ("gauge", helps.get(name, "")))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(by_name[name])
        return "\n".join(lines) + "\n"


class OtelInstruments:
    """The OTel instruments of one process (GenAI semantic conventions where they exist).

    Args:
        meter: This process's meter (see :func:`build_meter_provider`).
    """

    def __init__(self, meter: Meter) -> None:
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration."
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per call."
        )
        self._cost = meter.create_counter("raygent.cost", unit="USD", description="Model cost.")
        self._tool_duration = meter.create_histogram(
            "raygent.tool.duration", unit="s", description="Tool call duration."
        )
        self._tool_calls = meter.create_counter("raygent.tool.calls", description="Tool calls.")
        self._http = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Run request duration."
        )
        self._rejections = meter.create_counter("raygent.rejections", description="429/503 refusals.")

    def record(self, e: MetricEvent) -> None:
        """Record one event on the instruments."""
        if e.status in (429, 503):
            self._rejections.add(1, {"raygent.agent": e.agent, "http.response.status_code": e.status})
        if e.kind == "model":
            attrs: dict[str, str] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": e.name,
                "raygent.agent": e.agent,
            }
            if e.error:
                attrs["error.type"] = e.error_type or "error"
            self._duration.record(e.latency_s, attrs)
            if not e.error:
                self._tokens.record(e.input_tokens, {**attrs, "gen_ai.token.type": "input"})
                self._tokens.record(e.output_tokens, {**attrs, "gen_ai.token.type": "output"})
                self._cost.add(e.cost_usd, attrs)
        elif e.kind == "tool":
            tool_attrs: dict[str, str | bool] = {
                "gen_ai.tool.name": e.name,
                "raygent.agent": e.agent,
                "raygent.tool.is_error": e.error,
            }
            self._tool_duration.record(e.latency_s, tool_attrs)
            self._tool_calls.add(1, tool_attrs)
        else:
            self._http.record(
                e.latency_s,
                {
                    "raygent.agent": e.agent,
                    "http.response.status_code": e.status,
                    "http.request.method": "POST",
                },
            )


def build_meter_provider(
    *, otlp: OtlpSpec | None, resource_attributes: Mapping[str, str] | None = None
) -> MeterProvider:
    """A meter provider for this process; it exports over OTLP when ``otlp`` asks for metrics.

    Never global (see :mod:`raygent.telemetry.setup`); call ``shutdown()`` before the process exits.
    """
    readers: list[MetricReader] = []
    if otlp is not None and otlp.export_metrics:
        interval_ms = otlp.metric_interval_s * 1000
        if otlp.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

            from raygent.telemetry.setup import otlp_headers

            exporter: object = Grpc(
                endpoint=otlp.endpoint.split("://", 1)[1], insecure=otlp.insecure, headers=otlp_headers(otlp)
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

            from raygent.telemetry.setup import otlp_headers

            exporter = Http(endpoint=f"{otlp.endpoint}/v1/metrics", headers=otlp_headers(otlp))
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms))  # type: ignore[arg-type]
    return MeterProvider(metric_readers=readers, resource=Resource.create(dict(resource_attributes or {})))
