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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RaygentError,
    ValidationFailedError,
)
from raygent.core.ids import new_id
from raygent.core.runs import AgentInvoker, RunInput
from raygent.core.store.base import AuditDraft, Store
from raygent.serve.problems import error_response, problem_response, status_problem
from raygent.serve.schemas import RunRequest, RunResponse
from raygent.telemetry.propagation import context_from_traceparent, trace_id_hex, traceparent_of

__all__ = ["ApiService", "build_api"]

log = logging.getLogger("raygent.serve")

_RUNS_PATH = "/v1/agents/{agent}/runs"


class ApiService:
    """What the HTTP routes do, independent of the web framework and of Ray."""

    def __init__(
        self, fleet: Fleet, *, store: Store, invoker: AgentInvoker, clock: Clock, tracer: Tracer
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.invoker = invoker
        self.clock = clock
        self.tracer = tracer

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

    async def audit_rejection(self, request: Request, agent: str, err: RaygentError) -> None:
        """Rejected requests leave an audit record (who tried what), never a run."""
        draft = AuditDraft(
            ts=self.clock.now(),
            kind="error",
            run_id="",
            session_id="",
            agent=agent if agent in self.fleet.agents else "",
            identity="",
            payload={
                "stage": "ingress",
                "status": err.status,
                "error_type": err.slug,
                "detail": err.detail,
                "path": request.url.path,
                "client": request.client.host if request.client else None,
            },
        )
        try:
            await self.store.append_audit([draft])
        except Exception:  # the rejection still goes out; the store failure is logged
            log.exception("could not audit a rejected request")

    async def run_agent(
        self, agent: str, req: RunRequest, traceparent: str | None
    ) -> tuple[int, dict[str, Any]]:
        spec = self.fleet.agents[agent]
        run_id = new_id("run")
        session_id = req.session_id or new_id("ses")
        with self.tracer.start_as_current_span(
            f"POST {_RUNS_PATH}",
            context=context_from_traceparent(traceparent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": _RUNS_PATH, "raygent.agent": agent},
        ) as span:
            out = await self.invoker.invoke(
                RunInput(
                    run_id=run_id,
                    agent=agent,
                    input=req.input,
                    session_id=session_id,
                    deadline_ts=self.clock.now() + spec.deadline_s,
                    traceparent=traceparent_of(span),
                    latency_budget_ms=req.latency_budget_ms,
                )
            )
            span.set_attribute("raygent.run_id", run_id)
            span.set_attribute("raygent.status", out.status)
            if out.status == "completed":
                span.set_attribute("http.response.status_code", 200)
                return 200, out.to_json()
            problem = dict(out.error or status_problem(500, "the run failed"))
            problem.update(run_id=run_id, run_status=out.status, trace_id=trace_id_hex(traceparent_of(span)))
            span.set_status(Status(StatusCode.ERROR, out.status))
            span.set_attribute("http.response.status_code", int(problem["status"]))
            return int(problem["status"]), problem


def build_api(service: ApiService) -> FastAPI:
    """The FastAPI app; routes delegate to ``service``."""
    api = FastAPI(
        title="raygent",
        version="0.1.0",
        description=f"Governed agents of the fleet {service.fleet.name!r}.",
    )

    @api.exception_handler(RaygentError)
    async def _raygent_error(request: Request, exc: RaygentError) -> Response:
        return error_response(exc, instance=request.url.path)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no route for {request.method} {request.url.path}"
        return problem_response(status_problem(exc.status_code, detail, instance=request.url.path))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        detail = f"{errors[0]['loc']}: {errors[0]['message']}" if errors else "invalid request"
        return problem_response(status_problem(422, detail, instance=request.url.path, errors=errors))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            status_problem(500, "internal error; see the server log", instance=request.url.path)
        )

    @api.post(
        _RUNS_PATH,
        response_model=RunResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RunRequest.model_json_schema()}},
            }
        },
        responses={400: {}, 404: {}, 413: {}, 422: {}, 503: {}, 504: {}},
    )
    async def create_run(agent: str, request: Request) -> Response:
        try:
            body = await service.read_body(request)
            req = service.parse_run_request(agent, body)
        except RaygentError as err:
            await service.audit_rejection(request, agent, err)
            return error_response(err, instance=request.url.path)
        status, payload = await service.run_agent(agent, req, request.headers.get("traceparent"))
        if status == 200:
            return JSONResponse(payload)
        return problem_response(payload)

    @api.get("/v1/runs/{run_id}", response_model=RunResponse)
    async def get_run(run_id: str) -> JSONResponse:
        run = await service.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"there is no run {run_id!r}")
        data = run.to_dict()
        data["usage"] = {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "total_tokens": run.input_tokens + run.output_tokens,
        }
        return JSONResponse(data)

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
