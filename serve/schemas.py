"""Request and response bodies of the HTTP API (also the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunRequest", "RunResponse", "Usage"]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The user's message to the agent.")
    session_id: str | None = Field(
        default=None,
        # No '/': delegated agents keep their context under "<session>/<agent>", which callers must not
        # address directly.
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="Continue this session's context; a new session is started when omitted.",
    )
    mode: Literal["sync"] = Field(default="sync", description="Only sync runs are served by this version.")
    latency_budget_ms: float | None = Field(default=None, gt=0, le=3_600_000)


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class RunResponse(BaseModel):
    run_id: str
    agent: str
    session_id: str
    status: str
    output: str | None
    steps: list[dict[str, Any]]
    usage: Usage
    cost_usd: float
    trace_id: str | None
    error: dict[str, Any] | None = None
