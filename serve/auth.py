"""Authentication and RBAC at the ingress: every API call of a governed fleet carries a bearer JWT.

:func:`install_auth` adds one ASGI middleware to the app (a no-op for fleets without an ``auth``
section). It verifies the token (:mod:`raygent.governance.auth`), checks the permission the route
needs (deny by default: an unmapped ``/v1/<resource>`` needs ``<resource>:read`` or ``:write``),
refuses new runs of a revoked agent identity, and puts the :class:`Principal` on
``request.state.principal`` so the run carries who asked and for whom. Every refusal is audited and
answered with a problem document (401 with ``WWW-Authenticate``, or 403).

The approvals page (``/ui/…``) authenticates with a session cookie instead; its router checks it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from raygent.core.errors import RaygentError
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store.base import AuditDraft
from raygent.governance.auth import LocalIssuer, Principal, TokenVerifier, build_verifier
from raygent.governance.errors import IdentityRevokedError, PermissionDeniedError, TokenInvalidError
from raygent.governance.resume import RunResumer
from raygent.governance.runtime import Governance, governance_enabled
from raygent.serve.problems import PROBLEM_JSON

if TYPE_CHECKING:
    from raygent.serve.api import ApiService  # api.py includes this module's middleware

__all__ = [
    "GovernedApi",
    "caller_of",
    "governed_api",
    "install_auth",
    "principal_of",
    "required_permission",
    "route_path",
]

log = logging.getLogger("raygent.serve.auth")

_PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# The approvals page checks its own session cookie; every other page needs a token like the API.
_PUBLIC_PREFIXES = ("/.well-known/", "/ui/approvals")
# The approvals page's session cookie (serve/approvals.py sets it at sign-in); other pages accept it too.
UI_SESSION_COOKIE = "raygent_ui"
_ATTR = "_raygent_governed_api"


class _ServiceInvoker:
    """Runs through the API service's agent port (Serve handles or in-process loops)."""

    def __init__(self, service: ApiService) -> None:
        self._service = service

    async def invoke(self, run: RunInput) -> RunOutput:
        served = await self._service.agents.run(run)
        return served.output


@dataclass
class GovernedApi:
    """Governance objects of one ingress replica (built once per :class:`ApiService`)."""

    service: ApiService
    governance: Governance
    verifier: TokenVerifier | None
    issuer: LocalIssuer | None
    resumer: RunResumer
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    def ensure_sweeper(self) -> None:
        """Start (or restart) the background sweep: expiries and resumes of decided approvals."""
        if self._sweeper is not None and not self._sweeper.done():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to start yet
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        interval = self.governance.fleet.approvals.sweep_interval_s
        while True:
            try:
                await self.resumer.sweep()
                await self.governance.checkpoints.checkpoint_if_due(
                    self.governance.fleet.audit.checkpoint_every_records
                )
            except Exception:
                log.exception("approval sweep or audit checkpoint failed")
            await asyncio.sleep(interval)

    async def authenticate(self, token: str | None) -> Principal:
        if self.verifier is None:
            raise TokenInvalidError("this fleet does not accept tokens")
        if not token:
            raise TokenInvalidError("a bearer token is required (Authorization: Bearer <jwt>)")
        return await self.verifier.verify(token)

    async def audit_refusal(
        self, scope: Scope, err: RaygentError, *, agent: str = "", token: str | None
    ) -> None:
        client = scope.get("client")
        payload: dict[str, Any] = {
            "stage": "auth",
            "status": err.status,
            "error_type": err.slug,
            "detail": err.detail,
            "method": scope.get("method"),
            "path": route_path(scope),
            "client": client[0] if client else None,
            **_unverified(token),
        }
        draft = AuditDraft(
            ts=self.governance.clock.now(),
            kind="error",
            run_id="",
            session_id="",
            agent=agent if agent in self.governance.fleet.agents else "",
            identity="",
            payload=payload,
        )
        try:
            await self.governance.store.append_audit([draft])
        except Exception:  # the refusal still goes out; the store failure is logged
            log.exception("could not audit a refused request")


def _unverified(token: str | None) -> dict[str, Any]:
    """What a refused token claims to be (never trusted, only recorded): its alg and subject."""
    if not token or token.count(".") != 2:
        return {}
    out: dict[str, Any] = {}
    for name, part in (("header", token.split(".")[0]), ("claims", token.split(".")[1])):
        try:
            data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and name == "header":
            out["token_alg"] = str(data.get("alg"))[:32]
        elif isinstance(data, dict):
            out["claimed_sub"] = str(data.get("sub"))[:128]
    return out


def governed_api(service: ApiService) -> GovernedApi | None:
    """The service's governance objects (created on first use), or None for an ungoverned fleet."""
    fleet = service.fleet
    if not governance_enabled(fleet):
        return None
    existing: GovernedApi | None = getattr(service, _ATTR, None)
    if existing is not None:
        return existing
    governance = Governance.open(fleet, store=service.store, clock=service.clock)
    verifier, issuer = (None, None)
    if fleet.auth is not None:
        verifier, issuer = build_verifier(
            fleet.auth, fleet_name=fleet.name, state_dir=fleet.state_path("."), clock=service.clock
        )
    gov = GovernedApi(service, governance, verifier, issuer, RunResumer(governance, _ServiceInvoker(service)))
    setattr(service, _ATTR, gov)
    return gov


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve's route prefix arrives as ``root_path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def required_permission(method: str, path: str) -> tuple[str, str]:
    """``(permission, agent)`` a request needs; deny by default for anything not listed."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 4 and parts[:2] == ["v1", "agents"] and parts[3] == "runs":
        return f"agents:run:{parts[2]}", parts[2]
    if parts == ["v1", "agents"]:
        return "agents:read", ""
    if len(parts) >= 2 and parts[0] == "v1":
        resource = parts[1]
        if resource == "runs":
            return ("runs:cancel" if parts[-1] == "cancel" else "runs:read"), ""
        if resource == "approvals":
            return ("approvals:read" if method in ("GET", "HEAD") else "approvals:decide"), ""
        if resource == "identities":
            return "identities:revoke", ""
        if resource == "audit":
            return ("audit:verify" if parts[-1] == "verify" else "audit:read"), ""
        return f"{resource}:{'read' if method in ('GET', 'HEAD') else 'write'}", ""
    if len(parts) >= 2 and parts[0] == "ui":
        return f"ui:{parts[1]}", ""  # e.g. ui:runs for /ui/runs
    return "api:access", ""


def principal_of(request: Request) -> Principal | None:
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def caller_of(request: Request) -> dict[str, str]:
    """Keyword arguments naming who starts a run (empty for ungoverned fleets)."""
    principal = principal_of(request)
    if principal is None:
        return {}
    return {"requester": principal.subject, "end_user": principal.end_user, "tenant": principal.tenant}


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                return None
            if name in jar:
                return jar[name].value or None
    return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Pure ASGI (no extra task per request): token → principal → permission, or a refusal."""

    def __init__(self, app: ASGIApp, *, gov: GovernedApi) -> None:
        self.app = app
        self.gov = gov

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.gov.ensure_sweeper()
        path = route_path(scope)
        if path in _PUBLIC or path.startswith(_PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None and path.startswith("/ui/") and scope.get("method") in ("GET", "HEAD"):
            # Pages read with the approvals page's session (an HttpOnly, SameSite=Strict cookie holding
            # the signed-in token); only safe methods, so a cookie alone can never change anything.
            token = _cookie(scope, UI_SESSION_COOKIE)
        permission, agent = required_permission(scope.get("method", "GET"), path)
        try:
            principal = await self.gov.authenticate(token)
            self.gov.governance.rbac.require(principal.roles, permission, who=f"{principal.subject!r}")
            if agent in self.gov.governance.fleet.agents:
                identity = self.gov.governance.fleet.agents[agent].identity
                revoked = await self.gov.governance.killswitch.is_revoked(identity)
                if revoked is not None:
                    raise IdentityRevokedError(
                        f"agent {agent!r} is out of service: {revoked.reason or 'revoked'}"
                    )
        except (TokenInvalidError, PermissionDeniedError, IdentityRevokedError) as err:
            await self.gov.audit_refusal(scope, err, agent=agent, token=token)
            await _problem(send, err, path)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _problem(send: Send, err: RaygentError, path: str) -> None:
    body = json.dumps(err.to_problem(instance=path)).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    if err.status == 401:
        # RFC 6750: tell the client it needs (another) bearer token.
        headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_auth(api: FastAPI, service: ApiService) -> None:
    """Require bearer JWTs and RBAC on ``api`` when the fleet configures ``auth`` (else nothing)."""
    gov = governed_api(service)
    if gov is None or gov.verifier is None:
        return
    api.add_middleware(AuthMiddleware, gov=gov)
