"""RFC 9457 problem documents for every error the HTTP API returns."""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse

from raygent.core.errors import RaygentError

__all__ = ["PROBLEM_JSON", "error_response", "problem_response", "status_problem"]

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "State conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Request does not match the schema",
    429: "Too many requests",
    500: "Internal error",
    503: "Service overloaded",
    504: "Deadline exceeded",
}


def problem_response(
    problem: dict[str, Any], *, retry_after_s: float | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    out_headers = dict(headers or {})
    if retry_after_s is not None:
        out_headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return JSONResponse(
        problem, status_code=int(problem["status"]), media_type=PROBLEM_JSON, headers=out_headers
    )


def status_problem(status: int, detail: str, *, instance: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem document for a plain HTTP status (routing errors, not raygent errors)."""
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        doc["instance"] = instance
    doc.update(extra)
    return doc


def error_response(err: RaygentError, *, instance: str | None = None) -> JSONResponse:
    retry = (
        err.retry_after_s if err.retry_after_s is not None else (1.0 if err.status in (429, 503) else None)
    )
    return problem_response(err.to_problem(instance=instance), retry_after_s=retry)
