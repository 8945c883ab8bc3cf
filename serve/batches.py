"""``POST /v1/batches`` and friends: batch jobs over HTTP, the same batches ``raygent batch`` makes.

The body carries the batch's lines (OpenAI Batch format or ``{"input": …}``) either as JSONL text or
as a JSON array; the batch is created under the fleet's state directory and submitted as a Ray job to
``batch.jobs_address`` (the head's Ray Jobs API). Answers: 202 with ``Location: /v1/batches/{id}``; 404
for an unknown agent or batch; 409 to cancel a batch that is not running; 413 over
``batch.max_request_bytes``; 422 for a malformed body; 503 when no Ray cluster answers (nothing is
created then). Malformed *lines* are not request errors: they go to the batch's errors file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raygent.batch.client import BatchClient
from raygent.batch.errors import BatchNotFoundError, JobSubmitError
from raygent.batch.progress import ProgressStore
from raygent.core.errors import BadRequestError, NotFoundError, PayloadTooLargeError, ValidationFailedError
from raygent.serve.auth import caller_of, principal_of
from raygent.serve.ownership import RunAccess

# Batches are owned like runs (serve/ownership.py): their submitter and end user see them; these
# permissions see or cancel every batch.
READ_ALL_BATCHES = "batches:read_all"
CANCEL_ALL_BATCHES = "batches:cancel_all"

if TYPE_CHECKING:  # api.py includes this router: a runtime import would be circular
    from raygent.serve.api import ApiService

__all__ = ["BatchRequest", "batches_router"]


class BatchRequest(BaseModel):
    """Body of ``POST /v1/batches``: exactly one of ``input_jsonl`` and ``items``."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    input_jsonl: str | None = Field(default=None, description="The lines, as JSONL text.")
    items: list[Any] | None = Field(default=None, description="The lines, as a JSON array.")
    tier: Literal["premium", "standard", "cheap", "agent"] | None = None
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    workers: int | None = Field(default=None, ge=1, le=1000)

    def lines(self) -> str:
        if (self.input_jsonl is None) == (self.items is None):
            raise ValidationFailedError("give exactly one of 'input_jsonl' (JSONL text) and 'items' (array)")
        if self.items is not None:
            return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in self.items)
        return str(self.input_jsonl)


async def _body(request: Request, limit: int) -> BatchRequest:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"batch request is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequestError("request body is not valid JSON") from None
    try:
        return BatchRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailedError(f"{where}: {first['msg']}") from None


def _submit(client: BatchClient, req: BatchRequest, text: str, caller: dict[str, str]) -> str:
    client.jobs()  # 503 before anything is created when there is no cluster
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.jsonl"
        source.write_text(text)
        paths = client.create(
            source,
            agent=req.agent,
            tier=req.tier,
            max_concurrency=req.max_concurrency,
            workers=req.workers,
            requester=caller.get("requester", ""),
            end_user=caller.get("end_user", ""),
        )
    try:
        client.submit(paths)
    except JobSubmitError:
        # No job exists for it and there is no resume over HTTP: leave nothing behind (a 503 creates nothing).
        shutil.rmtree(paths.root, ignore_errors=True)
        raise
    return paths.root.name


def _results(client: BatchClient, batch_id: str, errors: bool) -> str:
    paths = client.locate(batch_id)
    if not paths.progress.exists():
        return ""
    with ProgressStore(paths.progress, readonly=True) as progress:
        lines = [
            json.dumps(r.error_line() if errors else r.result_line(), ensure_ascii=False) + "\n"
            for r in progress.records()
            if (r.status == "completed") != errors
        ]
    return "".join(lines)


def batches_router(service: ApiService, *, address: str | None = None) -> APIRouter:
    """The batch routes over ``service``'s fleet; ``address`` overrides ``batch.jobs_address``."""
    router = APIRouter()
    fleet = service.fleet

    def client() -> BatchClient:
        return BatchClient(fleet, None, clock=service.clock, address=address or fleet.batch.jobs_address)

    @router.post("/v1/batches", status_code=202, responses={400: {}, 404: {}, 413: {}, 422: {}, 503: {}})
    async def create_batch(request: Request) -> Response:
        req = await _body(request, fleet.batch.max_request_bytes)
        if req.agent not in fleet.agents:
            raise NotFoundError(
                f"there is no agent named {req.agent!r}", extra={"agents": sorted(fleet.agents)}
            )
        text = req.lines()
        # Blocking file and HTTP work (the Ray Jobs client) stays off the event loop.
        batch_id = await asyncio.to_thread(_submit, client(), req, text, caller_of(request))
        location = f"/v1/batches/{batch_id}"
        body = {
            "id": batch_id,
            "status": "submitted",
            "status_url": location,
            "results_url": f"{location}/results",
        }
        return JSONResponse(body, status_code=202, headers={"Location": location})

    access = RunAccess(service)

    async def owned(request: Request, batch_id: str, all_batches: str) -> None:
        """404 (as for an unknown batch) unless the caller submitted it, acts for its end user, or
        holds ``all_batches``; fleets without auth show every batch."""
        if not access.enforced:
            return
        manifest = await asyncio.to_thread(lambda: client().locate(batch_id).read_manifest())
        if not access.allows(
            principal_of(request),
            requester=manifest.requester,
            end_user=manifest.end_user,
            all_runs=all_batches,
        ):
            raise BatchNotFoundError(f"there is no batch {batch_id!r}")

    @router.get("/v1/batches/{batch_id}", responses={404: {}})
    async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
        await owned(request, batch_id, READ_ALL_BATCHES)
        view = await asyncio.to_thread(client().view, batch_id)
        return view.to_json()

    @router.get("/v1/batches/{batch_id}/results", responses={404: {}})
    async def get_results(batch_id: str, request: Request, errors: bool = False) -> Response:
        await owned(request, batch_id, READ_ALL_BATCHES)
        text = await asyncio.to_thread(_results, client(), batch_id, errors)
        return Response(text, media_type="application/x-ndjson")

    @router.post("/v1/batches/{batch_id}/cancel", status_code=202, responses={404: {}, 409: {}})
    async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
        await owned(request, batch_id, CANCEL_ALL_BATCHES)
        view = await asyncio.to_thread(client().cancel, batch_id)
        return {"id": batch_id, "status": "cancelling", "job_id": view.job_id}

    return router
