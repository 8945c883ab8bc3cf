"""``raygent approvals list|approve|deny|settle``: the approvals API of a running fleet, as an approver.

The token comes from ``--token`` or ``RAYGENT_TOKEN`` (``raygent token issue --role approver …``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import httpx
import typer

from raygent.cli._app import app, fail, out

__all__ = ["approvals_app"]

approvals_app = typer.Typer(help="Pending approvals of a running fleet.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

UrlOpt = Annotated[str, typer.Option("--url", help="Base URL of the fleet.")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token (default: $RAYGENT_TOKEN).")]


def _call(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    token = token or os.environ.get("RAYGENT_TOKEN")
    if not token:
        fail("a token is needed: --token or RAYGENT_TOKEN (raygent token issue --role approver --sub you)", 2)
    try:
        response = httpx.request(
            method, url, json=body, headers={"authorization": f"Bearer {token}"}, timeout=120
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text[:500]}
    if response.status_code >= 400:
        fail(f"{response.status_code}: {data.get('detail', data)}")
    return data


@approvals_app.command("list")
def approvals_list(
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    status: Annotated[
        str, typer.Option("--status", help="pending, approved, denied, expired, or all.")
    ] = "pending",
) -> None:
    """Print approvals as NDJSON (newest first)."""
    query = "" if status == "all" else f"?status={status}"
    for approval in _call("GET", f"{url.rstrip('/')}/v1/approvals{query}", token)["approvals"]:
        sys.stdout.write(json.dumps(approval, sort_keys=True) + "\n")


def _decide(decision: str, approval_id: str, url: str, token: str | None, reason: str, **extra: Any) -> None:
    data = _call(
        "POST",
        f"{url.rstrip('/')}/v1/approvals/{approval_id}",
        token,
        {"decision": decision, "reason": reason, **extra},
    )
    approval, run = data["approval"], data.get("run")
    line = f"approval {approval['approval_id']}: {approval['status']}"
    if run is not None:
        line += f"; run {run['run_id']} {run['status']}" + (f": {run['output']}" if run.get("output") else "")
    out.print(line, highlight=False, soft_wrap=True)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="The approval's id.")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Approve; when enough approvers agreed, the parked run resumes and its outcome is printed."""
    _decide("approve", approval_id, url, token, reason)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[str, typer.Argument(help="The approval's id.")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Deny; the parked run resumes and tells the user the action was refused."""
    _decide("deny", approval_id, url, token, reason)


@approvals_app.command("settle")
def approvals_settle(
    approval_id: Annotated[str, typer.Argument(help="The in-doubt call's approval id.")],
    result: Annotated[str, typer.Option("--result", help="What the backend shows it returned (JSON).")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """It happened: do not repeat an in-doubt side effect; record the result the backend shows, and the
    parked run goes on with it."""
    try:
        parsed = json.loads(result)
    except ValueError as exc:
        fail(f"--result must be JSON: {exc}", 2)
    _decide("deny", approval_id, url, token, reason, result=parsed)
