"""The runs page: ``/ui/runs`` (every run with status, cost, latency) and ``/ui/runs/{id}`` (a waterfall).

Server-rendered HTML, no JavaScript. The waterfall of a run is built from its spans when the fleet
writes them to a JSONL file (exact start and duration of every model call, tool call, delegated agent
and MQ hop, across processes, by trace id), and otherwise from the audit trail (each step between the
record that opened it and the one that closed it). Approvals, policy refusals and anomaly detections
come from the audit trail either way. Tool arguments are shown redacted, as on spans.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from raygent.core.config import AgentToolSpec, Fleet
from raygent.core.errors import NotFoundError, RaygentError
from raygent.core.store.base import AuditQuery, AuditRecord, RunRecord, Store
from raygent.governance.auth import Principal
from raygent.governance.errors import TokenInvalidError
from raygent.governance.gateway import delegated_run_id
from raygent.serve.approvals import _SESSION_COOKIE
from raygent.serve.auth import governed_api
from raygent.serve.ownership import RunAccess
from raygent.telemetry.jsonl import read_spans
from raygent.telemetry.runtime import tool_redactor

if TYPE_CHECKING:
    from raygent.serve.api import ApiService

__all__ = ["Bar", "audit_bars", "runs_ui_router", "span_bars"]

_MAX_DELEGATION = 4
_SPAN_KEYS = (
    "gen_ai.request.model",
    "gen_ai.provider.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.tool.name",
    "gen_ai.tool.call.arguments",
    "raygent.route.reason",
    "raygent.cost.usd",
    "raygent.status",
    "raygent.agent",
    "raygent.prompt.version",
    "raygent.prompt.sha256",
    "raygent.policy.decision",
    "raygent.tool.is_error",
    "error.type",
    "messaging.system",
    "messaging.destination.name",
    "http.response.status_code",
)


@dataclass(slots=True)
class Bar:
    """One row of the waterfall: ``start_s`` and ``duration_s`` relative to the run's start."""

    label: str
    kind: str  # model | tool | agent | approval | mq | policy | anomaly | http | other
    start_s: float
    duration_s: float
    depth: int = 0
    error: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)


def _kind_of_span(name: str, attributes: dict[str, Any]) -> str:
    op = str(attributes.get("gen_ai.operation.name", ""))
    if op == "chat" or name.startswith("chat"):
        return "model"
    if op == "execute_tool":
        return "tool"
    if op == "invoke_agent":
        return "agent"
    if "messaging.system" in attributes or name.startswith(("process ", "send ", "publish ")):
        return "mq"
    if name.startswith(("POST", "GET")):
        return "http"
    return "other"


def span_bars(spans: list[dict[str, Any]]) -> list[Bar]:
    """Waterfall rows from the spans of one trace, depth-first in start order."""
    if not spans:
        return []
    t0 = min(s["start_ns"] for s in spans)
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)
    bars: list[Bar] = []

    def visit(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x["start_ns"]):
            attrs = s.get("attributes", {})
            shown = {k: attrs[k] for k in _SPAN_KEYS if k in attrs}
            shown["span_id"] = s["span_id"]
            bars.append(
                Bar(
                    label=s["name"],
                    kind=_kind_of_span(s["name"], attrs),
                    start_s=(s["start_ns"] - t0) / 1e9,
                    duration_s=max(0.0, (s["end_ns"] - s["start_ns"]) / 1e9),
                    depth=depth,
                    error=s.get("status", {}).get("code") == "ERROR",
                    attributes=shown,
                )
            )
            visit(s["span_id"], depth + 1)

    visit(None, 0)
    return bars


def audit_bars(records: list[AuditRecord], t0: float, fleet: Fleet, *, depth: int = 0) -> list[Bar]:
    """Waterfall rows from audit records: a step spans from the record that opened it to its result."""
    redactor = tool_redactor(fleet)
    bars: list[Bar] = []
    last_ts = t0
    open_tools: dict[str, AuditRecord] = {}
    for r in records:
        p = r.payload
        if r.kind == "model_call":
            attrs = {
                k: p.get(k)
                for k in (
                    "backend",
                    "model",
                    "route_reason",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "finish_reason",
                    "prompt_version",
                    "tool_calls",
                )
            }
            bars.append(
                Bar(
                    f"chat {p.get('backend', '')}",
                    "model",
                    last_ts - t0,
                    r.ts - last_ts,
                    depth,
                    attributes=attrs,
                )
            )
        elif r.kind == "tool_call":
            open_tools[p.get("call_id", "")] = r
            continue  # closed by its backend_response
        elif r.kind == "backend_response":
            opened = open_tools.pop(p.get("call_id", ""), None)
            start = opened.ts if opened is not None else last_ts
            args = opened.payload.get("arguments") if opened is not None else None
            attrs = {
                "call_id": p.get("call_id"),
                "latency_ms": p.get("latency_ms"),
                "is_error": p.get("is_error"),
            }
            if isinstance(args, dict):
                attrs["arguments"] = redactor.attribute(str(p.get("tool", "")), args)
            bars.append(
                Bar(
                    f"execute_tool {p.get('tool', '')}",
                    "tool",
                    start - t0,
                    r.ts - start,
                    depth,
                    error=bool(p.get("is_error")),
                    attributes=attrs,
                )
            )
        elif r.kind == "approval":
            attrs = {k: p.get(k) for k in ("event", "approval_id", "tool", "status", "approver", "decision")}
            bars.append(
                Bar(f"approval {p.get('event', '')}", "approval", r.ts - t0, 0.0, depth, attributes=attrs)
            )
        elif r.kind == "policy_decision":
            kind = "anomaly" if str(p.get("stage", "")).startswith("anomaly") else "policy"
            label = f"{p.get('stage', 'policy')} {p.get('detector') or p.get('tool') or ''}".strip()
            attrs = {k: v for k, v in p.items() if k not in ("arguments",) and not isinstance(v, dict | list)}
            bars.append(
                Bar(label, kind, r.ts - t0, 0.0, depth, error=p.get("outcome") == "deny", attributes=attrs)
            )
        elif r.kind == "error":
            bars.append(
                Bar(
                    f"error {p.get('stage', '')}",
                    "other",
                    r.ts - t0,
                    0.0,
                    depth,
                    error=True,
                    attributes={k: p.get(k) for k in ("stage", "error_type", "detail")},
                )
            )
        last_ts = r.ts
    return bars


async def _audit_tree(store: Store, fleet: Fleet, run_id: str, depth: int = 0) -> list[AuditRecord]:
    """The run's audit records followed, at each delegation, by the delegated run's (recursively)."""
    records = await store.query_audit(AuditQuery(run_id=run_id, limit=100_000))
    if depth >= _MAX_DELEGATION:
        return records
    out: list[AuditRecord] = []
    for r in records:
        out.append(r)
        tool = fleet.tools.get(str(r.payload.get("tool", "")))
        if r.kind == "tool_call" and isinstance(tool, AgentToolSpec):
            out.extend(
                await _audit_tree(store, fleet, delegated_run_id(run_id, r.payload["call_id"]), depth + 1)
            )
    out.sort(key=lambda rec: rec.seq)
    return out


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px}table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
th{background:#f5f6f8}.num{text-align:right;font-variant-numeric:tabular-nums}
.st{padding:1px 6px;border-radius:8px;font-size:12px}.completed{background:#d9f2e0}
.failed,.timed_out{background:#fbdada}
.running,.queued{background:#e4ecfb}.needs_approval,.waiting{background:#fdf0cf}.cancelled{background:#eee}
.wf{position:relative;height:18px;background:#f5f6f8;min-width:420px}
.bar{position:absolute;top:2px;height:14px;border-radius:3px;min-width:3px}
.model{background:#5b8def}.tool{background:#43a36b}.agent{background:#9b7be0}.approval{background:#e0a030}
.mq{background:#e07b39}.policy{background:#999}.anomaly{background:#d43f3f}.http{background:#556}.other{background:#aaa}
.err{outline:2px solid #d43f3f}details summary{cursor:pointer}code{font-size:12px}.muted{color:#667}
"""


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status)


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _status(value: str) -> str:
    return f"<span class='st {html.escape(value)}'>{html.escape(value)}</span>"


def _runs_table(runs: list[RunRecord]) -> str:
    rows = []
    for run in runs:
        latency_ms = max(0.0, run.updated_at - run.created_at) * 1000
        rid = html.escape(run.run_id)
        rows.append(
            f"<tr data-run='{rid}'><td><a href='/ui/runs/{rid}'>{rid}</a></td>"
            f"<td>{html.escape(run.agent)}</td>"
            f"<td>{_status(run.status)}</td><td>{_ts(run.created_at)}</td>"
            f"<td class='num'>{latency_ms:.0f} ms</td><td class='num'>{len(run.steps)}</td>"
            f"<td class='num'>{run.input_tokens + run.output_tokens}</td>"
            f"<td class='num'>${run.cost_usd:.6f}</td></tr>"
        )
    head = (
        "<tr><th>run</th><th>agent</th><th>status</th><th>started</th><th class='num'>latency</th>"
        "<th class='num'>steps</th><th class='num'>tokens</th><th class='num'>cost</th></tr>"
    )
    return f"<table id='runs'>{head}{''.join(rows)}</table>"


def _attrs_html(attributes: dict[str, Any]) -> str:
    items = "".join(
        f"<tr><td><code>{html.escape(str(k))}</code></td><td><code>{html.escape(json.dumps(v, default=str))}"
        "</code></td></tr>"
        for k, v in attributes.items()
        if v is not None
    )
    return f"<details><summary>attributes</summary><table>{items}</table></details>" if items else ""


def _waterfall(bars: list[Bar]) -> str:
    total = max((b.start_s + b.duration_s for b in bars), default=0.0) or 1.0
    rows = []
    for b in bars:
        left, width = 100 * b.start_s / total, max(0.4, 100 * b.duration_s / total)
        err = " err" if b.error else ""
        indent = "&nbsp;" * 4 * b.depth
        rows.append(
            f"<tr class='step' data-kind='{b.kind}'><td>{indent}{html.escape(b.label)}"
            f"{_attrs_html(b.attributes)}"
            f"</td><td class='num'>{b.start_s * 1000:.1f}</td><td class='num'>{b.duration_s * 1000:.1f}</td>"
            f"<td><div class='wf'><div class='bar {b.kind}{err}' style='left:{left:.2f}%;width:{width:.2f}%'>"
            "</div></div></td></tr>"
        )
    head = "<tr><th>step</th><th class='num'>start ms</th><th class='num'>ms</th><th>timeline</th></tr>"
    return f"<table id='waterfall'>{head}{''.join(rows)}</table>"


def _spans_for(fleet: Fleet, trace_id: str | None) -> list[dict[str, Any]]:
    if trace_id is None or fleet.telemetry.exporter != "jsonl":
        return []
    try:
        return [
            s for s in read_spans(fleet.state_path(fleet.telemetry.jsonl_path)) if s["trace_id"] == trace_id
        ]
    except (OSError, ValueError):  # an unreadable span file falls back to the audit trail
        return []


def runs_ui_router(service: ApiService) -> APIRouter:
    """``GET /ui/runs`` and ``GET /ui/runs/{run_id}``."""
    router = APIRouter(tags=["ui"])
    gov = governed_api(service)
    access = RunAccess(service)

    async def signed_in(request: Request) -> Principal | Response | None:
        """Governed fleets: the approvals page's session (or a bearer token) with ``runs:read``; the
        caller, or the page to answer instead. None: an ungoverned fleet (no callers)."""
        if gov is None:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(_SESSION_COOKIE)
        try:
            principal = await gov.authenticate(token)
            gov.governance.rbac.require(principal.roles, "runs:read", who=repr(principal.subject))
        except RaygentError as err:
            await gov.audit_refusal(request.scope, err, token=token)
            if isinstance(err, TokenInvalidError):
                root = str(request.scope.get("root_path", ""))
                return RedirectResponse(f"{root}/ui/approvals/login", status_code=303)
            return _page("Not allowed", f"<p>{html.escape(err.detail)}</p>", status=err.status)
        return principal

    @router.get("/ui/runs", response_class=HTMLResponse)
    async def runs_page(
        request: Request, agent: str | None = None, limit: int = Query(default=100, ge=1, le=1000)
    ) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        # Without runs:read_all a caller sees only their own runs: the store filters by owner (requester
        # or end user), and the ownership check stays as the last word.
        owner = access.owner_filter(principal)
        runs = [
            r
            for r in await service.store.list_runs(agent=agent, limit=limit, owner=owner)
            if access.shows(principal, r)
        ]
        title = f"Runs of {service.fleet.name}" + (f" — {agent}" if agent else "")
        body = f"<h1>{html.escape(title)}</h1><p class='muted'>{len(runs)} most recent</p>{_runs_table(runs)}"
        return _page(title, body)

    @router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(run_id: str, request: Request) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        run = await service.store.get_run(run_id)
        if run is None or not access.shows(principal, run):  # someone else's run: as if it did not exist
            raise NotFoundError(f"there is no run {run_id!r}")
        fleet = service.fleet
        records = await _audit_tree(service.store, fleet, run_id)
        spans = _spans_for(fleet, run.trace_id)
        source = "spans" if spans else "audit trail"
        bars = span_bars(spans) if spans else audit_bars(records, run.created_at, fleet)
        if spans:  # approvals, refusals and anomalies live only in the audit trail
            t0 = min(s["start_ns"] for s in spans) / 1e9
            bars += [b for b in audit_bars(records, t0, fleet) if b.kind in ("approval", "policy", "anomaly")]
        latency_ms = max(0.0, run.updated_at - run.created_at) * 1000
        summary = (
            f"<h1>Run <code>{html.escape(run.run_id)}</code></h1>"
            f"<p>agent <b>{html.escape(run.agent)}</b> · {_status(run.status)} · {latency_ms:.0f} ms · "
            f"{run.input_tokens + run.output_tokens} tokens · ${run.cost_usd:.6f} · trace "
            f"<code>{html.escape(run.trace_id or '-')}</code> · session "
            f"<code>{html.escape(run.session_id)}</code></p>"
            f"<p class='muted'>input: {html.escape(run.input[:500])}</p>"
            f"<p class='muted'>output: {html.escape((run.output or '')[:500])}</p>"
            f"<p class='muted'>timeline from the {source}; <a href='/ui/runs'>all runs</a></p>"
        )
        return _page(f"Run {run.run_id}", summary + _waterfall(bars))

    return router
