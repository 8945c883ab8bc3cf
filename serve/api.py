"""The HTTP API: a FastAPI app over an :class:`ApiService`.

The service is plain Python (store, agent invoker, clock and tracer passed in), so the same app is
served by the Ray Serve ingress and exercised in-process by tests. Every error is an RFC 9457
``application/problem+json`` document; no traceback ever reaches a client. Rejected requests are
audited and leave no run or session behind.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import Tracer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RaygentError,
    StoreError,
    ValidationFailedError,
)
from raygent.core.runs import AgentInvoker
from raygent.core.store.base import AuditDraft, Store, unknown_run_cursor
from raygent.serve.agents import AgentPort, InvokerPort
from raygent.serve.approvals import approvals_router
from raygent.serve.audit_api import audit_router
from raygent.serve.auth import caller_of, install_auth, principal_of
from raygent.serve.batches import batches_router
from raygent.serve.errors import RunFinishedError
from raygent.serve.idempotency import parse_idempotency_key
from raygent.serve.metrics_route import install_metrics
from raygent.serve.ownership import CANCEL_ALL_RUNS, READ_ALL_RUNS, RunAccess
from raygent.serve.problems import error_response, problem_response, status_problem
from raygent.serve.schemas import CancelResponse, RunAccepted, RunRequest, RunResponse
from raygent.serve.serving import Serving, build_serving
from raygent.serve.ui_runs import runs_ui_router
from raygent.serve.views import FINAL_STATES, async_view, record_view

__all__ = ["ApiService", "build_api"]

log = logging.getLogger("raygent.serve")

_RUNS_PATH = "/v1/agents/{agent}/runs"


class ApiService:
    """What the HTTP routes do, independent of the web framework and of Ray.

    Args:
        fleet: The fleet.
        store: Runs, sessions, audit.
        clock: Time source.
        tracer: Tracer for server spans.
        agents: How agents are reached (Serve handles, or in-process loops).
        invoker: Alternative to ``agents`` for plain invokers (no replica ids, no step events).
        serving: Admission, idempotency and async parts (built from the fleet when omitted).
        share_cancels: Serve replicas: a cancel reaches the replica that drives the run (see
            :mod:`raygent.serve.cancels`).
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        store: Store,
        clock: Clock,
        tracer: Tracer,
        agents: AgentPort | None = None,
        invoker: AgentInvoker | None = None,
        serving: Serving | None = None,
        share_cancels: bool = False,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.clock = clock
        self.tracer = tracer
        if agents is None:
            if invoker is None:
                raise TypeError("ApiService needs agents= or invoker=")
            agents = InvokerPort(invoker)
        self.agents = agents
        self.serving = serving or build_serving(
            fleet, store=store, agents=agents, clock=clock, tracer=tracer, share_cancels=share_cancels
        )

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes the limit (never buffered whole)."""
        limit = self.fleet.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_run_request(self, agent: str, body: bytes) -> RunRequest:
        spec = self.fleet.agents.get(agent)
        if spec is None:
            raise NotFoundError(
                f"there is no agent named {agent!r}", extra={"agents": sorted(self.fleet.agents)}
            )
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            where = (
                f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            )
            raise BadRequestError(f"request body is not valid JSON{where}") from None
        if not isinstance(data, dict):
            raise ValidationFailedError('request body must be a JSON object like {"input": "…"}')
        try:
            req = RunRequest.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            first = errors[0]
            raise ValidationFailedError(
                f"{first['loc']}: {first['message']}", extra={"errors": errors}
            ) from None
        if len(req.input) > spec.max_input_chars:
            raise ValidationFailedError(
                f"input has {len(req.input)} characters; "
                f"agent {agent!r} accepts at most {spec.max_input_chars}"
            )
        return req

    async def audit_rejection(
        self, request: Request, agent: str, err: RaygentError | dict[str, Any], *, stage: str = "ingress"
    ) -> None:
        """Rejected requests leave an audit record (who tried what), never a run. ``err`` is the error,
        or the problem document of a plain HTTP status (no route, wrong method, internal error)."""
        if isinstance(err, RaygentError):
            status, error_type, detail = err.status, err.slug, err.detail
        else:
            status, error_type, detail = err["status"], f"http-{err['status']}", err["detail"]
        principal = principal_of(request)
        payload: dict[str, Any] = {
            "stage": stage,
            "status": status,
            "error_type": error_type,
            "detail": detail,
            "method": request.method,
            "path": request.url.path,
            "client": request.client.host if request.client else None,
        }
        if principal is not None:
            payload["caller"] = principal.subject
        draft = AuditDraft(
            ts=self.clock.now(),
            kind="error",
            run_id="",
            session_id="",
            agent=agent if agent in self.fleet.agents else "",
            identity="",
            payload=payload,
        )
        try:
            await self.store.append_audit([draft])
        except Exception:  # the rejection still goes out; the store failure is logged
            log.exception("could not audit a rejected request")

    async def run_view(self, run_id: str) -> dict[str, Any] | None:
        """The run as stored, with what the async ledger knows (mode, callback deliveries)."""
        record = await self.store.get_run(run_id)
        entry = await self.serving.async_ledger.get(run_id)
        if record is None and entry is None:
            return None
        if record is not None:
            data = record_view(record)
        else:
            assert entry is not None
            # Accepted, not started by an agent yet.
            data = {
                "run_id": entry.run_id,
                "agent": entry.agent,
                "session_id": entry.session_id,
                "status": "queued",
                "input": entry.input,
                "created_at": entry.accepted_at,
                "output": None,
                "steps": [],
                "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                "cost_usd": 0.0,
                "trace_id": None,
                "error": None,
                "requester": entry.requester,
                "end_user": entry.end_user,
            }
        if entry is not None:
            data.update(async_view(entry))
        return data

    async def run_owner(self, run_id: str) -> tuple[str, str] | None:
        """``(requester, end_user)`` of a run (stored, or only accepted by the async ledger), or None."""
        record = await self.store.get_run(run_id)
        if record is not None:
            return record.requester, record.end_user
        entry = await self.serving.async_ledger.get(run_id)
        return None if entry is None else (entry.requester, entry.end_user)

    async def cancel_run(self, run_id: str) -> tuple[int, dict[str, Any]]:
        """Cancel a queued or running run (202 while it stops); 409 when it already ended."""
        record = await self.store.get_run(run_id)
        if record is not None and record.status in FINAL_STATES:
            raise RunFinishedError(
                f"run {run_id!r} already ended ({record.status}); nothing to cancel",
                extra={"run_id": run_id, "run_status": record.status},
            )
        entry = await self.serving.runner.cancel(run_id)
        if self.serving.inflight.cancel(run_id) or entry is not None:
            return 202, {"run_id": run_id, "status": "cancelling"}
        if record is None:
            raise NotFoundError(f"there is no run {run_id!r}")
        cancels = self.serving.cancels
        if cancels is not None and await cancels.post(run_id):
            return 202, {"run_id": run_id, "status": "cancelling"}
        raise RunFinishedError(
            f"run {run_id!r} is not driven by any ingress replica (it is ending, or it is a delegated "
            "run: cancel the run that delegated it)",
            extra={"run_id": run_id, "run_status": record.status},
        )


def build_api(service: ApiService) -> FastAPI:
    """The FastAPI app; routes delegate to ``service``."""
    api = FastAPI(
        title="raygent",
        version="0.1.0",
        description=f"Governed agents of the fleet {service.fleet.name!r}.",
    )
    install_auth(api, service)  # governed fleets: bearer JWT + RBAC on every route (issue 7)
    api.include_router(approvals_router(service))  # /v1/approvals, /v1/identities, /ui/approvals
    install_metrics(api, service)  # /metrics, run-request metrics, /v1/telemetry/* (issue 10)
    api.include_router(runs_ui_router(service))  # /ui/runs, /ui/runs/{id} (issue 10)
    api.include_router(batches_router(service))  # /v1/batches (issue 11)
    api.include_router(audit_router(service))  # /v1/audit, /v1/audit/verify
    access = RunAccess(service)  # governed fleets: a run is shown only to its owners (serve/ownership.py)

    # Every refusal a route raises is audited (stage "http"), like the refusals of run requests (stage
    # "ingress") and of the auth middleware (stage "auth"), which answer before these handlers.

    @api.exception_handler(RaygentError)
    async def _raygent_error(request: Request, exc: RaygentError) -> Response:
        if not isinstance(exc, StoreError):  # the store holds the audit trail: do not wait on it again
            await service.audit_rejection(request, "", exc, stage="http")
        return error_response(exc, instance=request.url.path)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no route for {request.method} {request.url.path}"
        problem = status_problem(exc.status_code, detail, instance=request.url.path)
        await service.audit_rejection(request, "", problem, stage="http")
        return problem_response(problem)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = f"{errors[0]['loc']}: {errors[0]['message']}" if errors else "invalid request"
        await service.audit_rejection(request, "", ValidationFailedError(detail), stage="http")
        return problem_response(status_problem(422, detail, instance=request.url.path, errors=errors))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = status_problem(500, "internal error; see the server log", instance=request.url.path)
        await service.audit_rejection(request, "", problem, stage="http")
        return problem_response(problem)

    @api.post(
        _RUNS_PATH,
        response_model=RunResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RunRequest.model_json_schema()}},
            }
        },
        responses={
            202: {"model": RunAccepted, "description": "mode async: accepted; see Location"},
            400: {},
            404: {},
            409: {},
            413: {},
            422: {},
            429: {"description": "over the agent's rate limit or budget; Retry-After says when to retry"},
            503: {"description": "the agent's queue is full; Retry-After says when to retry"},
            504: {},
        },
    )
    async def create_run(agent: str, request: Request) -> Response:
        try:
            header = request.headers.get("idempotency-key")
            key = None if header is None else parse_idempotency_key(header)
            body = await service.read_body(request)
            req = service.parse_run_request(agent, body)
        except RaygentError as err:
            await service.audit_rejection(request, agent, err)
            return error_response(err, instance=request.url.path)
        return await service.serving.coordinator.start(
            agent,
            req,
            key=key,
            traceparent=request.headers.get("traceparent"),
            client=request.client.host if request.client else "",
            **caller_of(request),
        )

    @api.get("/v1/runs", responses={422: {}})
    async def list_runs(
        request: Request,
        agent: str | None = Query(default=None, max_length=128),
        limit: int = Query(default=50, ge=1, le=1000),
        before: str | None = Query(default=None, max_length=256, description="next_before of a page."),
    ) -> JSONResponse:
        """The newest runs (of one agent), as ``GET /v1/runs/{id}`` shows them, a page at a time
        (``before=next_before``; null on the last page); in a governed fleet only the caller's own unless
        they hold ``runs:read_all``."""
        principal = principal_of(request)
        owner = access.owner_filter(principal)
        if before is not None and owner is not None:
            # Only one's own run can be a cursor: another's id must answer as if it did not exist.
            cursor = await service.store.get_run(before)
            if cursor is None or not access.shows(principal, cursor):
                raise unknown_run_cursor(before)
        runs = await service.store.list_runs(agent=agent, limit=limit, owner=owner, before=before)
        shown = [record_view(r) for r in runs if access.shows(principal, r)]
        next_before = runs[-1].run_id if len(runs) == limit else None
        return JSONResponse({"runs": shown, "next_before": next_before})

    @api.get("/v1/runs/{run_id}", response_model=RunResponse)
    async def get_run(run_id: str, request: Request) -> JSONResponse:
        data = await service.run_view(run_id)
        if data is None or not access.allows_request(
            request,
            requester=data.get("requester", ""),
            end_user=data.get("end_user", ""),
            all_runs=READ_ALL_RUNS,
        ):
            raise NotFoundError(f"there is no run {run_id!r}")  # someone else's run: as if it did not exist
        return JSONResponse(data)

    @api.post(
        "/v1/runs/{run_id}/cancel",
        status_code=202,
        response_model=CancelResponse,
        responses={404: {}, 409: {}},
    )
    async def cancel_run(run_id: str, request: Request) -> JSONResponse:
        if access.enforced:
            owner = await service.run_owner(run_id)
            if owner is None or not access.allows_request(
                request, requester=owner[0], end_user=owner[1], all_runs=CANCEL_ALL_RUNS
            ):
                raise NotFoundError(f"there is no run {run_id!r}")
        status, body = await service.cancel_run(run_id)
        return JSONResponse(body, status_code=status)

    @api.get("/v1/serving/stats")
    async def serving_stats() -> dict[str, Any]:
        """Admission per agent (limits, in flight by priority, high-water mark, shed), async runs."""
        serving = service.serving
        return {
            "agents": serving.admission.stats(),
            "rate_limits": serving.rates.stats(),
            "async_pending": serving.runner.pending,
            "async_max_pending": service.fleet.server.max_async_pending,
            "inflight": len(serving.inflight),
        }

    @api.get("/v1/agents")
    async def list_agents() -> dict[str, Any]:
        return {
            "agents": [
                {"name": name, "description": a.description, "identity": a.identity, "tools": a.tools}
                for name, a in service.fleet.agents.items()
            ]
        }

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> Response:
        try:
            await service.store.get_session("readyz-probe")
        except Exception:
            return problem_response(status_problem(503, "the state store is not reachable"), retry_after_s=1)
        return JSONResponse({"status": "ready"})

    return api
