"""JsonlSpanExporter: line format, the jsonl provider, and concurrent appends from several processes."""

from __future__ import annotations

import multiprocessing
import re
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from raygent.core.config import TelemetrySpec
from raygent.core.errors import ConfigError
from raygent.telemetry import JsonlSpanExporter, build_tracer_provider, read_spans, tracer_for

WORKERS = 4
SPANS_PER_WORKER = 200
# Well past any atomic-write size a pipe would guarantee, so interleaving would show if locking failed.
PADDING = "p" * 8192


def _append_spans(path: str, worker: int) -> None:
    """Worker process body: its own provider, as each Ray worker has, writing to the shared file."""
    provider = build_tracer_provider(
        TelemetrySpec(exporter="jsonl", service_name=f"worker-{worker}"), jsonl_path=Path(path)
    )
    tracer = tracer_for(provider, "test")
    for index in range(SPANS_PER_WORKER):
        with tracer.start_as_current_span(f"span {worker}/{index}") as span:
            span.set_attribute("padding", PADDING)
    provider.shutdown()


def test_four_processes_appending_at_once_leave_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_append_spans, args=(str(path), w)) for w in range(WORKERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WORKERS

    lines = path.read_text().splitlines()
    spans = read_spans(path)  # raises on any torn or interleaved line
    assert len(lines) == len(spans) == WORKERS * SPANS_PER_WORKER
    assert len({s["span_id"] for s in spans}) == WORKERS * SPANS_PER_WORKER
    assert all(s["attributes"]["padding"] == PADDING for s in spans)
    per_worker = Counter(s["resource"]["service.name"] for s in spans)
    assert per_worker == {f"worker-{w}": SPANS_PER_WORKER for w in range(WORKERS)}


def test_line_format(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "spans.jsonl"
    provider = build_tracer_provider(
        TelemetrySpec(exporter="jsonl", service_name="raygent-test"),
        jsonl_path=path,
        resource_attributes={"raygent.process": "router"},
    )
    tracer = tracer_for(provider, "test")
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_attribute("gen_ai.response.finish_reasons", ("stop",))
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "ModelError"))
        # SimpleSpanProcessor: the child is on disk as soon as it ends, before any flush.
        (written,) = read_spans(path)
        assert written["name"] == "child"

    child_line, parent_line = read_spans(path)
    assert re.fullmatch(r"[0-9a-f]{32}", child_line["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", child_line["span_id"])
    assert child_line["trace_id"] == parent_line["trace_id"]
    assert child_line["parent_span_id"] == parent_line["span_id"]
    assert parent_line["parent_span_id"] is None
    assert parent_line["span_id"] == f"{parent.get_span_context().span_id:016x}"
    assert child_line["kind"] == "CLIENT"
    assert parent_line["kind"] == "INTERNAL"
    assert child_line["status"] == {"code": "ERROR", "description": "ModelError"}
    assert parent_line["status"]["code"] == "UNSET"
    assert child_line["attributes"] == {"gen_ai.response.finish_reasons": ["stop"]}
    assert child_line["events"][0]["name"] == "retry"
    assert child_line["events"][0]["attributes"] == {"attempt": 2}
    assert child_line["start_ns"] <= child_line["end_ns"]
    assert child_line["resource"]["service.name"] == "raygent-test"
    assert child_line["resource"]["raygent.process"] == "router"
    assert not any(key.startswith("telemetry.sdk.") for key in child_line["resource"])
    provider.shutdown()


def test_sampled_out_spans_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = build_tracer_provider(TelemetrySpec(exporter="jsonl", sample_ratio=0.0), jsonl_path=path)
    with tracer_for(provider, "test").start_as_current_span("dropped"):
        pass
    provider.shutdown()
    assert read_spans(path) == []


def test_jsonl_exporter_needs_a_path() -> None:
    with pytest.raises(ConfigError):
        build_tracer_provider(TelemetrySpec(exporter="jsonl"))


def test_console_provider_flushes_on_shutdown(capsys: pytest.CaptureFixture[str]) -> None:
    provider = build_tracer_provider(TelemetrySpec(exporter="console"))
    with tracer_for(provider, "test").start_as_current_span("printed"):
        pass
    provider.shutdown()
    assert '"name": "printed"' in capsys.readouterr().out


def test_read_spans_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_spans(tmp_path / "absent.jsonl") == []


def test_export_after_shutdown_fails(tmp_path: Path) -> None:
    exporter = JsonlSpanExporter(tmp_path / "spans.jsonl")
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert exporter.force_flush()
