"""Request and response bodies of the HTTP API (also the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CancelResponse", "RunAccepted", "RunRequest", "RunResponse", "Usage"]


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
    mode: Literal["sync", "async", "stream"] = Field(
        default="sync",
        description="sync: 200 with the result; async: 202 + Location, result at /v1/runs/{id} and to "
        "callback_url; stream: Server-Sent Events of steps and token deltas.",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s/]+\S*$",
        description="async only: POSTed the finished run, signed (Standard Webhooks headers).",
    )
    priority: Literal["interactive", "batch"] | None = Field(
        default=None,
        description="Under pressure batch runs are refused first (default: interactive; async: batch).",
    )
    deadline_s: float | None = Field(
        default=None, gt=0, le=86_400, description="Run deadline; at most the agent's own deadline_s."
    )
    latency_budget_ms: float | None = Field(default=None, gt=0, le=3_600_000)

    @model_validator(mode="after")
    def _callback_needs_async(self) -> RunRequest:
        if self.callback_url is not None and self.mode != "async":
            raise ValueError("callback_url is only used with mode 'async'")
        return self


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
    replica: str | None = Field(default=None, description="The agent replica that ran it.")


class RunAccepted(BaseModel):
    """The 202 body of an async run (its Location header points at the run)."""

    run_id: str
    agent: str
    session_id: str
    status: Literal["queued"]
    mode: Literal["async"]
    priority: str
    links: dict[str, str]


class CancelResponse(BaseModel):
    run_id: str
    status: str = Field(description="cancelled, or cancelling while the agent stops.")
