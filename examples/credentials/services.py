"""The credentials example's counterparts: a local OAuth2 token endpoint issuing short-lived tokens and a
small "tickets" API that checks bearer tokens and scopes.

Both are real HTTP services (Starlette on uvicorn). The tickets API records every token it sees with
the token's expiry and the time it saw it, so a test can show that no call carried an expired token.
It also behaves like a careless upstream on purpose: it echoes the API key it was sent, so a test can
show that the gateway masks it before anything leaves.

Run all three services (with the dev Vault) for the example fleet::

    .venv/bin/python examples/credentials/services.py
"""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


@dataclass
class Client:
    secret: str
    scopes: frozenset[str]


@dataclass
class AuthServer:
    """OAuth2 token endpoint: client credentials and RFC 8693 token exchange."""

    clients: dict[str, Client]
    users: dict[str, frozenset[str]]  # end user → the scopes they hold
    signing_key: str
    assertion_key: str  # trusted subject assertions (the gateway signs them)
    ttl_s: float = 2.0
    issued: list[dict[str, Any]] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)

    def _client(self, request: Request, form: dict[str, str]) -> tuple[str, Client] | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        client = self.clients.get(client_id or "")
        if (
            client is None
            or not secrets.compare_digest(client.secret, secret or "")
            or client_id in self.disabled
        ):
            return None
        return client_id or "", client

    def _issue(self, sub: str, scopes: frozenset[str], extra: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        exp = now + self.ttl_s
        claims = {
            "sub": sub,
            "scope": " ".join(sorted(scopes)),
            "iat": int(now),
            "exp": int(exp) + 1,
            "exp_precise": exp,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(self.signing_key.encode()))
        self.issued.append(
            {"jti": claims["jti"], "sub": sub, "exp": exp, "scope": claims["scope"], "token": token}
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.ttl_s,
            "scope": claims["scope"],
        }

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        found = self._client(request, form)
        if found is None:
            return _oauth_error("invalid_client", "client authentication failed", 401)
        client_id, client = found
        requested = frozenset(form.get("scope", "").split()) or client.scopes
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if not requested <= client.scopes:
                return _oauth_error("invalid_scope", f"{sorted(requested - client.scopes)} not allowed")
            return JSONResponse(self._issue(client_id, requested, {}))
        if grant == TOKEN_EXCHANGE:
            return self._exchange(client_id, client, requested, form)
        return _oauth_error("unsupported_grant_type", f"grant {grant!r} is not supported")

    def _exchange(
        self, client_id: str, client: Client, requested: frozenset[str], form: dict[str, str]
    ) -> Response:
        try:
            subject = jwt.decode(
                form.get("subject_token", ""), OctKey.import_key(self.assertion_key.encode())
            )
            actor = jwt.decode(form.get("actor_token", ""), OctKey.import_key(self.signing_key.encode()))
        except (JoseError, ValueError):
            return _oauth_error("invalid_grant", "subject or actor token does not verify")
        now = time.time()
        if subject.claims.get("exp", 0) < now or actor.claims.get("exp_precise", 0) < now:
            return _oauth_error("invalid_grant", "subject or actor token expired")
        if actor.claims.get("sub") != client_id:
            return _oauth_error("invalid_grant", "the actor token is not this client's")
        user = str(subject.claims.get("sub", ""))
        # The intersection: what was asked, what the user may do, what the agent's client may do.
        granted = requested & self.users.get(user, frozenset()) & client.scopes
        return JSONResponse(self._issue(user, granted, {"act": {"sub": client_id}}))


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@dataclass
class Sighting:
    jti: str
    sub: str
    exp: float
    seen_at: float
    path: str
    method: str


@dataclass
class TicketsApi:
    """A tickets API: ``POST /tickets`` (tickets:write), ``GET /tickets/{id}`` (tickets:read),
    ``DELETE /tickets/{id}`` (tickets:admin). Every request needs a valid bearer token and the API key."""

    signing_key: str
    api_key: str
    seen: list[Sighting] = field(default_factory=list)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)

    def _check(self, request: Request, scope: str) -> Response | dict[str, Any]:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return _bearer_error(401, "invalid_request", "no bearer token")
        try:
            claims = jwt.decode(header[7:], OctKey.import_key(self.signing_key.encode())).claims
        except (JoseError, ValueError):
            return _bearer_error(401, "invalid_token", "token does not verify")
        now = time.time()
        self.seen.append(
            Sighting(
                claims.get("jti", ""),
                claims.get("sub", ""),
                float(claims.get("exp_precise", 0)),
                now,
                request.url.path,
                request.method,
            )
        )
        if float(claims.get("exp_precise", 0)) <= now:
            return _bearer_error(401, "invalid_token", "token expired")
        if scope not in str(claims.get("scope", "")).split():
            return _bearer_error(403, "insufficient_scope", f"needs {scope}")
        if not secrets.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return JSONResponse({"detail": "wrong API key"}, status_code=403)
        return claims

    async def create(self, request: Request) -> Response:
        claims = self._check(request, "tickets:write")
        if isinstance(claims, Response):
            return claims
        body = await request.json()
        ticket_id = len(self.tickets) + 1
        self.tickets[ticket_id] = {
            "id": ticket_id,
            "title": body.get("title", ""),
            "status": "open",
            "opened_by": claims.get("sub"),
            "acting_for": (claims.get("act") or {}).get("sub"),
        }
        # A careless upstream: it echoes the key it was sent (the gateway must mask it).
        echo = f"received with key {request.headers.get('x-api-key')}"
        return JSONResponse({**self.tickets[ticket_id], "debug": echo}, status_code=201)

    async def read(self, request: Request) -> Response:
        claims = self._check(request, "tickets:read")
        if isinstance(claims, Response):
            return claims
        ticket_id = int(request.path_params["ticket_id"])
        if ticket_id not in self.tickets:
            key = request.headers.get("x-api-key")
            return JSONResponse({"detail": f"no ticket {ticket_id} (request key {key})"}, status_code=404)
        return JSONResponse(self.tickets[ticket_id])

    async def delete(self, request: Request) -> Response:
        claims = self._check(request, "tickets:admin")
        if isinstance(claims, Response):
            return claims
        ticket_id = int(request.path_params["ticket_id"])
        self.tickets.pop(ticket_id, None)
        self.deleted.append(ticket_id)
        return Response(status_code=204)


def _bearer_error(status: int, error: str, description: str) -> Response:
    challenge = f'Bearer error="{error}", error_description="{description}"'
    return JSONResponse(
        {"error": error, "detail": description}, status_code=status, headers={"WWW-Authenticate": challenge}
    )


def auth_app(server: AuthServer) -> Starlette:
    return Starlette(routes=[Route("/oauth/token", server.token, methods=["POST"])])


def tickets_app(api: TicketsApi) -> Starlette:
    return Starlette(
        routes=[
            Route("/tickets", api.create, methods=["POST"]),
            Route("/tickets/{ticket_id:int}", api.read, methods=["GET"]),
            Route("/tickets/{ticket_id:int}", api.delete, methods=["DELETE"]),
        ]
    )


@dataclass
class Running:
    url: str
    stop: Callable[[], None]


def serve_in_thread(app: Any, *, port: int = 0) -> Running:
    """Serve ``app`` on 127.0.0.1 (``port`` 0: a free one) in a daemon thread; returns its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
        sock.close()

    return Running(f"http://127.0.0.1:{sock.getsockname()[1]}", stop)


DEMO = {
    "client_id": "helpdesk-agent",
    "client_secret": "helpdesk-client-secret-1f0c7a",
    "signing_key": "tickets-signing-key-0123456789abcdef0123",
    "assertion_key": "gateway-assertion-key-0123456789abcdef01",
    "api_key": "tickets-api-key-CANARY-7d41e9b2",
    "vault_token": "dev-root-token",
}


def main() -> None:  # pragma: no cover - the example's launcher
    from devvault import DevVault, vault_app  # type: ignore[import-not-found]

    auth = AuthServer(
        clients={
            DEMO["client_id"]: Client(DEMO["client_secret"], frozenset({"tickets:read", "tickets:write"}))
        },
        users={"alice": frozenset({"tickets:read"}), "bob": frozenset({"tickets:read", "tickets:write"})},
        signing_key=DEMO["signing_key"],
        assertion_key=DEMO["assertion_key"],
    )
    vault = DevVault(token=DEMO["vault_token"])
    vault.kv["oauth/helpdesk"] = {"client_secret": DEMO["client_secret"]}
    vault.kv["oauth/assertion"] = {"key": DEMO["assertion_key"]}
    vault.kv["tickets/api"] = {"api_key": DEMO["api_key"]}
    running = [
        serve_in_thread(auth_app(auth), port=9100),
        serve_in_thread(tickets_app(TicketsApi(DEMO["signing_key"], DEMO["api_key"])), port=9200),
        serve_in_thread(vault_app(vault), port=8200),
    ]
    print(
        "auth http://127.0.0.1:9100  tickets http://127.0.0.1:9200  vault http://127.0.0.1:8200", flush=True
    )
    print(f"export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN={DEMO['vault_token']}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        for r in running:
            r.stop()


if __name__ == "__main__":
    main()
