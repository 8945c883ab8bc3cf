"""Approvals over HTTP: the API (``/v1/approvals``), the kill switch (``/v1/identities``), the local
issuer's public keys, and the server-rendered page for people (``/ui/approvals``).

Deciding closes an approval once enough approvers agreed (or one denied); the parked run is then
resumed in the same request, so the response carries how it ended. The page signs in with a token
(kept in an HttpOnly, SameSite=Strict cookie), and every form carries a CSRF token derived from the
session by the fleet's signing key; posts from another origin are refused. Everything shown is
HTML-escaped, and the page forbids framing and scripts by its Content-Security-Policy.
"""

from __future__ import annotations

import html
import json
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from raygent.core.errors import RaygentError, ValidationFailedError
from raygent.core.runs import RunOutput
from raygent.core.store.base import AuditQuery, sha256_hex
from raygent.governance.approvals import Approval, ApprovalStatus
from raygent.governance.auth import Principal
from raygent.governance.effects import is_in_doubt
from raygent.governance.errors import PermissionDeniedError, TokenInvalidError
from raygent.governance.settle import settle_in_doubt
from raygent.serve.auth import GovernedApi, governed_api, principal_of

if TYPE_CHECKING:
    from raygent.serve.api import ApiService  # api.py includes this router

__all__ = ["DecisionRequest", "RevokeRequest", "approvals_router"]

_SESSION_COOKIE = "raygent_ui"
_LOGIN_COOKIE = "raygent_login_csrf"
_MAX_FORM_BYTES = 16 * 1024
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str = Field(default="", max_length=2000)
    result: Any = Field(
        default=None,
        description="Only with deny, only for an in-doubt side effect: it happened, and this is what the "
        "backend returned; the call is recorded as done with it and the run goes on with it.",
    )


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


async def _reasoning(gov: GovernedApi, approval: Approval) -> list[str]:
    records = await gov.governance.store.query_audit(
        AuditQuery(run_id=approval.run_id, kind="reasoning", limit=20)
    )
    return [str(r.payload.get("text", "")) for r in records if r.payload.get("step", 0) <= _step_of(approval)]


def _step_of(approval: Approval) -> int:
    # Call ids end in :s<step>:c<index>; the reasoning shown is the agent's up to the held call.
    try:
        return int(approval.call_id.rsplit(":s", 1)[1].split(":", 1)[0])
    except (IndexError, ValueError):
        return 10**9


def _require_approver(gov: GovernedApi, principal: Principal) -> None:
    role = gov.governance.fleet.approvals.approver_role
    rbac = gov.governance.rbac
    rbac.require(principal.roles, "approvals:decide", who=repr(principal.subject))
    if rbac.enabled and role not in principal.roles:
        raise PermissionDeniedError(f"{principal.subject!r} does not hold the approver role {role!r}")


async def _decide(
    gov: GovernedApi, approval_id: str, principal: Principal, body: DecisionRequest
) -> tuple[Approval, RunOutput | None]:
    _require_approver(gov, principal)
    if "result" in body.model_fields_set:
        if body.decision != "deny":
            raise ValidationFailedError(
                "a result recorded by hand goes with deny (it happened: do not repeat it), not approve"
            )
        approval = await settle_in_doubt(
            gov.governance, approval_id, approver=principal.subject, result=body.result, reason=body.reason
        )
    else:
        approval = await gov.governance.approvals.decide(
            approval_id, approver=principal.subject, decision=body.decision, reason=body.reason
        )
    run = await gov.resumer.resume(approval) if approval.status != "pending" else None
    return approval, run


def approvals_router(service: ApiService) -> APIRouter:
    """The approvals, kill switch and page routes (none for an ungoverned fleet)."""
    router = APIRouter()
    gov = governed_api(service)
    if gov is None:
        return router

    @router.get("/v1/approvals", tags=["governance"])
    async def list_approvals(status: ApprovalStatus | None = None, limit: int = 100) -> dict[str, Any]:
        await gov.governance.approvals.expire_due()  # resumes are the background sweeper's job
        found = await gov.governance.approvals.find_all(status=status, limit=max(1, min(limit, 1000)))
        return {"approvals": [a.to_json() for a in found]}

    @router.get("/v1/approvals/{approval_id}", tags=["governance"])
    async def get_approval(approval_id: str) -> dict[str, Any]:
        approval = await gov.governance.approvals.get(approval_id)
        return {**approval.to_json(), "reasoning": await _reasoning(gov, approval)}

    @router.post("/v1/approvals/{approval_id}", tags=["governance"], responses={403: {}, 404: {}, 409: {}})
    async def decide(approval_id: str, body: DecisionRequest, request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        if principal is None:
            raise TokenInvalidError("a bearer token is required")
        approval, run = await _decide(gov, approval_id, principal, body)
        return {"approval": approval.to_json(), "run": None if run is None else run.to_json()}

    @router.get("/v1/identities", tags=["governance"])
    async def revoked() -> dict[str, Any]:
        return {"revoked": [_rev(r) for r in await gov.governance.killswitch.revoked()]}

    @router.post("/v1/identities/{agent}/revoke", tags=["governance"])
    async def revoke(agent: str, body: RevokeRequest, request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        actor = principal.subject if principal else "unknown"
        rev = await gov.governance.killswitch.revoke(agent, actor=actor, reason=body.reason)
        return {"revoked": _rev(rev)}

    @router.post("/v1/identities/{agent}/restore", tags=["governance"])
    async def restore(agent: str, request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        actor = principal.subject if principal else "unknown"
        was = await gov.governance.killswitch.restore(agent, actor=actor)
        return {"restored": was, "agent": agent}

    @router.get("/.well-known/jwks.json", tags=["governance"])
    async def jwks() -> dict[str, Any]:
        return gov.issuer.public_jwks() if gov.issuer is not None else {"keys": []}

    router.include_router(_ui_router(gov))
    return router


def _rev(rev: Any) -> dict[str, Any]:
    return {"identity": rev.identity, "reason": rev.reason, "actor": rev.actor, "ts": rev.ts}


# ----- the page -------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: float | None) -> str:
    return "—" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        ".card{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;"
        "vertical-align:top}.muted{color:#666}.msg{background:#eef;padding:.5rem}.err{background:#fee;"
        "padding:.5rem}button{margin-right:.5rem}textarea,input[type=text]{width:100%}"
        f"</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)


def _kv_table(data: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.items())
    return f"<table>{rows}</table>"


def _card(a: Approval, reasoning: list[str], csrf: str, base: str) -> str:
    ctx = a.context.get("context", {})
    resource = a.context.get("resource", {})
    verdict = a.context.get("validation")
    decided = "".join(
        f"<li>{_e(d['approver'])}: {_e(d['decision'])} — {_e(d['reason'] or 'no reason')} "
        f"({_when(d['ts'])})</li>"
        for d in a.decisions
    )
    amount = "" if a.amount_usd is None else f" · ${a.amount_usd:,.2f}"
    parts = [
        f"<div class=card id='approval-{_e(a.approval_id)}' data-approval-id='{_e(a.approval_id)}'>",
        f"<h2>{_e(a.tool)}{_e(amount)} <span class=muted>({_e(a.status)})</span></h2>",
        f"<p>Agent <b>{_e(a.agent)}</b> ({_e(a.identity)}) for end user <b>{_e(a.end_user or '—')}</b>, "
        f"requested by {_e(a.requester or '—')}. Needs {a.approvals_needed} approver(s); "
        f"expires {_when(a.expires_at)}. Approval <code>{_e(a.approval_id)}</code>, run "
        f"<code>{_e(a.root_run_id)}</code>.</p>",
        "<h3>Proposed action</h3>",
        _kv_table(a.arguments),
        "<h3>Context</h3>",
        _kv_table({**{f"resource.{k}": v for k, v in resource.get("attributes", {}).items()},
                   "resource": f"{resource.get('type', '')}::{resource.get('id', '')}",
                   "session": ctx.get("session_id", ""),
                   "policies": ", ".join(a.context.get("policies", []))}),
        "<h3>The agent's reasoning</h3>",
        "<ul>" + "".join(f"<li class=reasoning>{_e(t)}</li>" for t in reasoning) + "</ul>" if reasoning
        else "<p class=muted>No reasoning recorded.</p>",
    ]  # fmt: skip
    if verdict:
        parts.append(
            f"<h3>Validator</h3><p class=verdict>{_e(verdict.get('validator_agent'))}: "
            f"<b>{_e(verdict.get('verdict'))}</b> — {_e(verdict.get('reasons'))}</p>"
        )
    if decided:
        parts.append(f"<h3>Decisions</h3><ul>{decided}</ul>")
    in_doubt = is_in_doubt(a)
    if in_doubt:
        parts.append(
            "<h3>Outcome unknown</h3><p class=in-doubt>This call has side effects and may already have "
            f"happened: {_e(a.context.get('reason', ''))}. <b>Approve</b>: it did not happen, repeat it "
            f"once (idempotency key <code>{_e(a.context.get('idempotency_key', ''))}</code>). "
            "<b>Deny</b>: do not repeat it. <b>It happened</b>: do not repeat it and give the run the "
            "result the backend shows (JSON).</p>"
        )
    if a.status == "pending":
        settle = (
            "<label>Result the backend shows (JSON) <textarea name=result rows=3 cols=60></textarea></label>"
            if in_doubt
            else ""
        )
        parts.append(
            f"<form method=post action='{_e(base)}/ui/approvals/{_e(quote(a.approval_id))}'>"
            f"<input type=hidden name=csrf_token value='{_e(csrf)}'>"
            f"<label>Reason <input type=text name=reason maxlength=2000></label>{settle}<p>"
            "<button type=submit name=decision value=approve>Approve</button>"
            "<button type=submit name=decision value=deny>Deny</button>"
            + ("<button type=submit name=decision value=settle>It happened</button>" if in_doubt else "")
            + "</p></form>"
        )
    parts.append("</div>")
    return "".join(parts)


def _csrf_for(gov: GovernedApi, token: str) -> str:
    # Deterministic per session (Ed25519 signatures are), unguessable without the fleet's key.
    return gov.governance.signer.sign({"csrf": sha256_hex(token)})[:43]


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise ValidationFailedError("form is too large")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # no Origin (old clients): the SameSite cookie and CSRF token still hold
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _ui_router(gov: GovernedApi) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    async def session(request: Request) -> tuple[Principal, str]:
        token = request.cookies.get(_SESSION_COOKIE)
        principal = await gov.authenticate(token)
        gov.governance.rbac.require(principal.roles, "approvals:read", who=repr(principal.subject))
        return principal, token or ""

    async def refused(request: Request, err: RaygentError) -> Response:
        await gov.audit_refusal(request.scope, err, token=request.cookies.get(_SESSION_COOKIE))
        if isinstance(err, TokenInvalidError) and request.method == "GET":
            return RedirectResponse(f"{base(request)}/ui/approvals/login", status_code=303, headers=_HEADERS)
        return _page("Not allowed", f"<p class=err>{_e(err.detail)}</p>", status=err.status)

    @router.get("/ui/approvals/login")
    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(24)
        body = (
            "<h1>Sign in to approve</h1><p>Paste a bearer token with the approver role "
            "(<code>raygent token issue --role approver --sub you</code>).</p>"
            f"<form method=post action='{_e(base(request))}/ui/approvals/login'>"
            f"<input type=hidden name=csrf_token value='{_e(nonce)}'>"
            "<label>Token<textarea name=token rows=4 required></textarea></label>"
            "<p><button type=submit>Sign in</button></p></form>"
        )
        response = _page("Sign in", body)
        response.set_cookie(
            _LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path=f"{base(request)}/ui"
        )
        return response

    @router.post("/ui/approvals/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        expected = request.cookies.get(_LOGIN_COOKIE)
        if (
            not _same_origin(request)
            or not expected
            or not secrets.compare_digest(expected, form.get("csrf_token", ""))
        ):
            return await refused(
                request, PermissionDeniedError("the sign-in form expired or came from another site")
            )
        token = form.get("token", "").strip()
        try:
            principal = await gov.authenticate(token)
            gov.governance.rbac.require(principal.roles, "approvals:read", who=repr(principal.subject))
        except (TokenInvalidError, PermissionDeniedError) as err:
            await gov.audit_refusal(request.scope, err, token=token)
            return _page("Sign in failed", f"<p class=err>{_e(err.detail)}</p>", status=err.status)
        response = RedirectResponse(f"{base(request)}/ui/approvals", status_code=303, headers=_HEADERS)
        exp = principal.claims.get("exp")
        max_age = max(1, int(exp - time.time())) if isinstance(exp, int | float) else 3600
        response.set_cookie(
            _SESSION_COOKIE,
            token,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            path=f"{base(request)}/ui",
        )
        response.delete_cookie(_LOGIN_COOKIE, path=f"{base(request)}/ui")
        return response

    @router.post("/ui/approvals/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{base(request)}/ui/approvals/login", status_code=303, headers=_HEADERS)
        response.delete_cookie(_SESSION_COOKIE, path=f"{base(request)}/ui")
        return response

    @router.get("/ui/approvals")
    async def page(request: Request) -> Response:
        try:
            principal, token = await session(request)
        except (TokenInvalidError, PermissionDeniedError) as err:
            return await refused(request, err)
        await gov.governance.approvals.expire_due()  # resumes are the background sweeper's job
        approvals = gov.governance.approvals
        pending = await approvals.find_all(status="pending")
        recent = [a for a in await approvals.find_all(limit=20) if a.status != "pending"][:10]
        csrf = _csrf_for(gov, token)
        cards = [_card(a, await _reasoning(gov, a), csrf, base(request)) for a in pending]
        message = request.query_params.get("msg")
        done = "".join(
            f"<li data-approval-id='{_e(a.approval_id)}'>{_e(a.tool)} · {_e(a.approval_id)} · "
            f"<b class=status>{_e(a.status)}</b> ({_when(a.decided_at)})</li>"
            for a in recent
        )
        body = (
            f"<h1>Approvals</h1><p class=muted>Signed in as <b id=who>{_e(principal.subject)}</b> "
            f"({_e(', '.join(principal.roles))}).</p>"
            f"<form method=post action='{_e(base(request))}/ui/approvals/logout'>"
            "<button>Sign out</button></form>"
            + (f"<p class=msg id=message>{_e(message)}</p>" if message else "")
            + f"<h2>Pending ({len(pending)})</h2>"
            + ("".join(cards) or "<p class=muted id=none-pending>Nothing waits for a decision.</p>")
            + f"<h2>Recently closed</h2><ul id=recent>{done}</ul>"
        )
        return _page("Approvals", body)

    @router.post("/ui/approvals/{approval_id}")
    async def decide_form(approval_id: str, request: Request) -> Response:
        try:
            principal, token = await session(request)
        except (TokenInvalidError, PermissionDeniedError) as err:
            return await refused(request, err)
        form = await _form(request)
        if not _same_origin(request) or not secrets.compare_digest(
            form.get("csrf_token", ""), _csrf_for(gov, token)
        ):
            return await refused(request, PermissionDeniedError("the form's CSRF token is missing or wrong"))
        decision = form.get("decision")
        if decision not in ("approve", "deny", "settle"):
            return _page(
                "Bad request", "<p class=err>decision must be approve, deny or settle</p>", status=422
            )
        reason = form.get("reason", "")[:2000]
        try:
            if decision == "settle":  # "it happened": a deny that records the backend's result
                try:
                    result = json.loads(form.get("result", ""))
                except ValueError as exc:
                    raise ValidationFailedError(f"the result must be JSON: {exc}") from None
                body = DecisionRequest(decision="deny", reason=reason, result=result)
            else:
                body = DecisionRequest(decision=decision, reason=reason)
            approval, run = await _decide(gov, approval_id, principal, body)
        except RaygentError as err:
            await gov.audit_refusal(request.scope, err, token=token)
            return _page("Not done", f"<p class=err>{_e(err.detail)}</p>", status=err.status)
        outcome = f"approval {approval.approval_id} is {approval.status}"
        if decision == "settle":
            outcome += ": the call is recorded as done with the result given, and not repeated"
        if run is not None:
            outcome += f"; run {run.run_id} {run.status}"
            if run.output:
                outcome += f": {run.output}"
        target = f"{base(request)}/ui/approvals?msg={quote(outcome)}"
        return RedirectResponse(target, status_code=303, headers=_HEADERS)

    return router
