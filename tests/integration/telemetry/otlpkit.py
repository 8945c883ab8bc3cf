"""Test helpers: a real OTLP/HTTP receiver on loopback that decodes ExportTraceServiceRequest protobufs,
and a small fleet whose tool takes a secret (the canary) as an argument and echoes it in its result."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

CANARY = "CANARY-7f3a9c-sk-live-do-not-leak"

CANARY_FLEET = """
name: canary
telemetry: {exporter: otlp, otlp: {endpoint: "ENDPOINT", export_metrics: false}}
models:
  m:
    kind: offline
    tier: standard
    rules:
      - {match: '(?i)unlock (?P<box>\\w+) with (?P<code>\\S+)', call: open_box,
         args: {box: "{box}", password: "{code}"}, reasoning: "Opening box {box} for the customer."}
      - {after_tool: open_box, say: "Box {result.box} is open."}
prompts: {p: {versions: {"1": "You are $agent. You open boxes."}}}
tools:
  open_box:
    kind: python
    entrypoint: canary_tools.py:open_box
    parameters:
      type: object
      properties: {box: {type: string}, password: {type: string}}
      required: [box, password]
agents:
  keeper: {identity: svc-keeper, prompt: p@1, tools: [open_box]}
"""

CANARY_TOOLS = """
def open_box(ctx, box, password):
    # The secret comes back in the result too: results must never reach a span either.
    return {"box": box, "opened_with": password, "note": "used " + password}
"""


def write_canary_fleet(directory: Path, endpoint: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "canary_tools.py").write_text(CANARY_TOOLS)
    path = directory / "fleet.yaml"
    path.write_text(CANARY_FLEET.replace("ENDPOINT", endpoint))
    return path


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class Receiver:
    endpoint: str
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[dict[str, Any]]:
        """Every received span, decoded from the protobuf: ids as hex, attributes and events as dicts."""
        out = []
        with self.lock:
            requests = list(self.requests)
        for req in requests:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex() or None,
                                "kind": s.kind,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "events": [
                                    {
                                        "name": e.name,
                                        "attributes": {a.key: _value(a.value) for a in e.attributes},
                                    }
                                    for e in s.events
                                ],
                                "status": s.status.code,
                                "resource": resource,
                                "raw": s.SerializeToString(),
                            }
                        )
        return out


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            request = ExportTraceServiceRequest.FromString(body)
            with holder["r"].lock:
                holder["r"].requests.append(request)
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()


def assert_one_tree(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One trace id; exactly one root; every other span's parent is a received span. Returns spans by id."""
    assert spans, "no spans received"
    assert len({s["trace_id"] for s in spans}) == 1, {s["name"]: s["trace_id"] for s in spans}
    by_id = {s["span_id"]: s for s in spans}
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == 1, [s["name"] for s in roots]
    for s in spans:
        if s["parent_span_id"] is not None:
            assert s["parent_span_id"] in by_id, f"{s['name']} has a parent that was never exported"
    return by_id


def parent_name(by_id: dict[str, dict[str, Any]], span: dict[str, Any]) -> str:
    return str(by_id[span["parent_span_id"]]["name"])
