"""Starting runs over HTTP in the three modes, with admission, idempotency and cancellation.

Order of operations for ``POST /v1/agents/{agent}/runs`` (after the body is read and validated):

1. ``Idempotency-Key``: reserve the key, or replay the stored response, or refuse (422/409).
2. Admission: a sync or streamed run takes a slot of its priority class or is refused with ``503``
   + ``Retry-After`` at once; an async run takes a place in this replica's bounded async queue.
3. Only then does anything become durable: the agent records the run when it starts it (sync, stream),
   or the async ledger records it as queued before the ``202``. A refused request has released its
   idempotency key and leaves no run behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import Receive, Scope, Send

from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import OverloadedError, RateLimitedError, RaygentError, ValidationFailedError
from raygent.core.ids import new_id
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store.asyncruns import AsyncRunEntry
from raygent.core.store.base import AuditDraft, Store
from raygent.core.store.sessionowners import SessionOwners
from raygent.serve.admission import AdmissionController, Priority
from raygent.serve.agents import AgentPort
from raygent.serve.errors import SessionNotYoursError
from raygent.serve.events import Final, RunEvent, bridge
from raygent.serve.idempotency import IdempotencyGuard, Replay, idempotency_scope, request_fingerprint
from raygent.serve.inflight import InflightRuns
from raygent.serve.problems import PROBLEM_JSON, error_response, problem_response, status_problem
from raygent.serve.ratelimit import RateLimiter, SharedRateLimiter
from raygent.serve.runs_async import AsyncRunner
from raygent.serve.schemas import RunRequest
from raygent.serve.sse import SSE_HEADERS, SSE_MEDIA_TYPE, encode_event
from raygent.telemetry.propagation import context_from_traceparent, trace_id_hex, traceparent_of

__all__ = ["RunCoordinator"]

log = logging.getLogger("raygent.serve")

_RUNS_PATH = "/v1/agents/{agent}/runs"
_SHED_AUDIT_PERIOD_S = 1.0


class _RunStream(StreamingResponse):
    """A streaming response that always runs ``on_close``, even when the client leaves before the
    first byte (Starlette then never starts the body iterator, so its ``finally`` would not run)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


@dataclass(frozen=True, slots=True)
class _Start:
    """One accepted request on its way to an agent."""

    agent: str
    req: RunRequest
    run_id: str
    priority: Priority
    traceparent: str | None
    key: str | None
    scope: str  # what the idempotency key is unique within
    tenant: str
    requester: str = ""
    end_user: str = ""
    session_id: str = ""  # the client's, or a new one; claimed for the caller in governed fleets


def _budget_s(req: RunRequest) -> float | None:
    return None if req.latency_budget_ms is None else req.latency_budget_ms / 1000


def _sync_view(output: RunOutput, replica: str | None) -> dict[str, Any]:
    return {**output.to_json(), "replica": replica}


async def _sse_body(
    run_id: str, first: Any, items: AsyncIterator[Any], state: dict[str, Any]
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed run; puts the final run into ``state["payload"]``."""
    seq, item = 0, first
    while not isinstance(item, Final):
        seq += 1
        if item.kind == "done":
            output: RunOutput = item.data
            state["payload"] = _sync_view(output, state.get("replica"))
            yield encode_event("done", state["payload"], event_id=seq)
        else:
            if item.kind == "start":
                state["replica"] = item.data.get("replica")
            yield encode_event("run" if item.kind == "start" else item.kind, item.data, event_id=seq)
        try:
            item = await anext(items)
        except StopAsyncIteration:
            return
        except Exception as exc:
            if isinstance(exc, RaygentError):
                problem = exc.to_problem(instance=f"/v1/runs/{run_id}")
            else:
                log.exception("streamed run %s failed", run_id)
                problem = status_problem(500, "internal error; see the server log")
            yield encode_event("error", {**problem, "run_id": run_id}, event_id=seq + 1)
            return


class RunCoordinator:
    """Starts runs for the HTTP API (one per ingress replica)."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        store: Store,
        agents: AgentPort,
        admission: AdmissionController,
        idempotency: IdempotencyGuard,
        inflight: InflightRuns,
        runner: AsyncRunner,
        clock: Clock,
        tracer: Tracer,
        rates: RateLimiter | SharedRateLimiter | None = None,
        sessions: SessionOwners | None = None,
    ) -> None:
        self._fleet = fleet
        self._store = store
        self._agents = agents
        self._admission = admission
        self._rates: RateLimiter | SharedRateLimiter = rates or RateLimiter.for_agents(
            fleet.agents, fleet.server.rate_limit
        )
        self._sessions = sessions
        self._idempotency = idempotency
        self._inflight = inflight
        self._runner = runner
        self._clock = clock
        self._tracer = tracer
        self._shed: dict[tuple[str, str], int] = {}
        self._shed_flush: asyncio.Task[None] | None = None

    async def start(
        self,
        agent: str,
        req: RunRequest,
        *,
        key: str | None,
        traceparent: str | None,
        tenant: str = "default",
        requester: str = "",
        end_user: str = "",
        client: str = "",
    ) -> Response:
        """Run ``req`` in its mode; every outcome is a response (refusals are problem documents).

        ``client`` (the peer address) keys the rate limit of callers without a token.
        """
        try:
            await self._rates.check(agent, caller=requester or client or "anonymous", tenant=tenant)
        except RateLimitedError as err:  # before the idempotency key or any record: nothing to undo
            return error_response(err, instance=_RUNS_PATH.format(agent=agent))
        priority: Priority = req.priority or ("batch" if req.mode == "async" else "interactive")
        job = _Start(
            agent,
            req,
            new_id("run"),
            priority,
            traceparent,
            key,
            idempotency_scope(tenant, agent, requester, end_user),
            tenant,
            requester,
            end_user,
        )
        run_id, scope = job.run_id, job.scope
        if key is not None:
            spec = self._fleet.agents[agent]
            fingerprint = request_fingerprint(req.model_dump(mode="json"))
            replay = await self._idempotency.begin(
                scope, key, fingerprint, run_id, wait_s=spec.deadline_s + 5.0
            )
            if replay is not None:
                return self._replay(replay, req)
        try:
            if requester or end_user:
                # Governed: a session belongs to the end user of its first run; nobody else continues it.
                job = dataclasses.replace(job, session_id=req.session_id or new_id("ses"))
                await self._claim_session(job.session_id, end_user or requester)
            if req.mode == "async":
                return await self._start_async(job)
            if req.mode == "stream":
                return await self._start_stream(job)
            return await self._start_sync(job)
        except (OverloadedError, SessionNotYoursError) as err:
            # Refused before anything happened: the key is free again and no run exists.
            if key is not None:
                await self._idempotency.abandon(scope, key, run_id)
            if isinstance(err, OverloadedError):
                self._note_shed(agent, priority)
            return error_response(err, instance=_RUNS_PATH.format(agent=agent))
        except BaseException:
            if key is not None:
                with contextlib.suppress(Exception):
                    await self._idempotency.abandon(scope, key, run_id)
            raise

    async def _claim_session(self, session_id: str, owner: str) -> None:
        if self._sessions is None:
            return
        holder = await self._sessions.claim(session_id, owner, now=self._clock.now())
        if holder != owner:
            raise SessionNotYoursError(
                f"session {session_id!r} belongs to another caller; omit session_id to start a new one",
                extra={"session_id": session_id},
            )

    # ------------------------------------------------------------------------------------------- modes

    def _input(self, job: _Start, traceparent: str | None) -> RunInput:
        spec = self._fleet.agents[job.agent]
        deadline_s = min(job.req.deadline_s or spec.deadline_s, spec.deadline_s)
        return RunInput(
            run_id=job.run_id,
            agent=job.agent,
            input=job.req.input,
            session_id=job.session_id or job.req.session_id or new_id("ses"),
            deadline_ts=self._clock.now() + deadline_s,
            traceparent=traceparent,
            latency_budget_ms=job.req.latency_budget_ms,
            requester=job.requester,
            end_user=job.end_user,
        )

    async def _start_sync(self, job: _Start) -> Response:
        admitted = self._admission.try_admit(job.agent, job.priority, budget_s=_budget_s(job.req))
        with admitted, self._span(job.agent, job.traceparent, "sync") as span:
            run = self._input(job, traceparent_of(span))
            served = await self._inflight.run(job.run_id, self._agents.run(run))
            status, payload = self._outcome(served.output, served.replica, span)
        # 202: the run parked (held for approval, or waiting for a slow backend's reply) and goes on
        # later; the caller follows it at its status URL.
        headers = {"Location": f"/v1/runs/{job.run_id}"} if status == 202 else None
        await self._remember(job, status, payload, headers)
        return self._respond(status, payload, headers)

    async def _start_async(self, job: _Start) -> Response:
        if job.req.callback_url is not None and self._runner.sender.secret_for(job.tenant) is None:
            names = self._fleet.server.callbacks
            raise ValidationFailedError(
                "callback_url needs a signing secret: set the environment variable "
                f"{names.tenant_secret_envs.get(job.tenant, names.secret_env)} where the fleet runs"
            )
        if job.req.callback_url is not None:
            await self._runner.sender.targets.check(job.req.callback_url)  # 422 before anything is queued
        with self._span(job.agent, job.traceparent, "async") as span:
            run = self._input(job, traceparent_of(span))
            entry = AsyncRunEntry(
                run_id=job.run_id,
                agent=job.agent,
                session_id=run.session_id,
                input=run.input,
                priority=job.priority,
                accepted_at=self._clock.now(),
                deadline_ts=run.deadline_ts,
                tenant=job.tenant,
                callback_url=job.req.callback_url,
                traceparent=run.traceparent,
                latency_budget_ms=run.latency_budget_ms,
                requester=job.requester,
                end_user=job.end_user,
            )
            await self._runner.accept(entry)
            span.set_attribute("http.response.status_code", 202)
        location = f"/v1/runs/{job.run_id}"
        body = {
            "run_id": job.run_id,
            "agent": job.agent,
            "session_id": run.session_id,
            "status": "queued",
            "mode": "async",
            "priority": job.priority,
            "links": {"self": location, "cancel": f"{location}/cancel"},
        }
        headers = {"Location": location}
        await self._remember(job, 202, body, headers)
        return JSONResponse(body, status_code=202, headers=headers)

    async def _start_stream(self, job: _Start) -> Response:
        ticket = self._admission.try_admit(job.agent, job.priority, budget_s=_budget_s(job.req))
        run = self._input(job, job.traceparent)

        async def produce(emit: Callable[[RunEvent], Awaitable[None]]) -> None:
            async def pump() -> None:
                async for event in self._agents.events(run):
                    await emit(event)

            await self._inflight.run(job.run_id, pump())

        items = bridge(produce)
        try:
            first = await anext(items)  # the run has started (or Serve refused it: 503 above)
        except BaseException:
            await items.aclose()
            ticket.release()
            raise
        state: dict[str, Any] = {}

        async def on_close() -> None:
            await items.aclose()  # a client that left cancels the run where it executes
            ticket.release()
            if job.key is None:
                return
            if "payload" in state:
                await self._remember(job, 200, state["payload"])
            else:
                await self._idempotency.abandon(job.scope, job.key, job.run_id)

        return _RunStream(_sse_body(job.run_id, first, items, state), on_close)

    async def _remember(
        self, job: _Start, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Store the response under the request's idempotency key, if it has one."""
        if job.key is not None:
            await self._idempotency.finish(
                job.scope, job.key, job.run_id, status=status, body=body, headers=headers or {}
            )

    # ----------------------------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _span(self, agent: str, traceparent: str | None, mode: str) -> Any:
        with self._tracer.start_as_current_span(
            f"POST {_RUNS_PATH}",
            context=context_from_traceparent(traceparent),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "http.route": _RUNS_PATH,
                "raygent.agent": agent,
                "raygent.mode": mode,
            },
        ) as span:
            yield span

    def _outcome(self, out: RunOutput, replica: str | None, span: Any) -> tuple[int, dict[str, Any]]:
        span.set_attribute("raygent.run_id", out.run_id)
        span.set_attribute("raygent.status", out.status)
        if out.status == "completed":
            span.set_attribute("http.response.status_code", 200)
            return 200, _sync_view(out, replica)
        problem = dict(out.error or status_problem(500, "the run failed"))
        problem.update(run_id=out.run_id, run_status=out.status, trace_id=trace_id_hex(traceparent_of(span)))
        span.set_status(Status(StatusCode.ERROR, out.status))
        span.set_attribute("http.response.status_code", int(problem["status"]))
        return int(problem["status"]), problem

    def _respond(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Response:
        if status < 400:
            return JSONResponse(payload, status_code=status, headers=headers)
        retry = payload.get("retry_after_s") or (
            self._fleet.server.retry_after_s if status in (429, 503) else None
        )
        return problem_response(payload, retry_after_s=retry, headers=headers)

    def _replay(self, replay: Replay, req: RunRequest) -> Response:
        headers = {**replay.headers, "Idempotent-Replayed": "true"}
        if req.mode == "stream" and replay.status == 200:
            events = encode_event("done", replay.body, event_id=1)
            return Response(events, media_type=SSE_MEDIA_TYPE, headers={**SSE_HEADERS, **headers})
        if replay.status >= 400:
            return Response(
                content=JSONResponse(replay.body).body,
                status_code=replay.status,
                media_type=PROBLEM_JSON,
                headers=headers,
            )
        return JSONResponse(replay.body, status_code=replay.status, headers=headers)

    def _note_shed(self, agent: str, priority: str) -> None:
        """Count a refusal; one audit record per agent and class per period says how many (an audit
        write per refusal would make overload worse)."""
        self._shed[(agent, priority)] = self._shed.get((agent, priority), 0) + 1
        if self._shed_flush is None or self._shed_flush.done():
            self._shed_flush = asyncio.get_running_loop().create_task(self._flush_shed())

    async def _flush_shed(self) -> None:
        await asyncio.sleep(_SHED_AUDIT_PERIOD_S)
        counts, self._shed = self._shed, {}
        drafts = [
            AuditDraft(
                ts=self._clock.now(),
                kind="error",
                run_id="",
                session_id="",
                agent=agent,
                identity="",
                payload={
                    "stage": "ingress",
                    "status": 503,
                    "error_type": "overloaded",
                    "priority": priority,
                    "refused": count,
                    "period_s": _SHED_AUDIT_PERIOD_S,
                },
            )
            for (agent, priority), count in sorted(counts.items())
        ]
        try:
            await self._store.append_audit(drafts)
        except Exception:
            log.exception("could not audit refused requests")
