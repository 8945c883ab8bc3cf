"""A local server for the subset of the HashiCorp Vault HTTP API that raygent's vault provider uses.

No Vault server package can be installed on the machines this project is built on, so the provider's
tests run against this: the same paths, methods, JSON shapes and status codes as Vault, for

- ``X-Vault-Token`` checks (403 ``permission denied`` otherwise),
- KV v2: ``GET /v1/<mount>/data/<path>`` and ``POST``/``PUT`` to write a new version,
- dynamic (leased) secrets: ``GET /v1/<path>`` for registered roles returns ``lease_id``,
  ``lease_duration``, ``renewable`` and fresh credentials,
- ``PUT /v1/sys/leases/renew`` and ``PUT /v1/sys/leases/revoke``.

The same tests run against a real Vault (``pytest -m vault`` with ``VAULT_ADDR``/``VAULT_TOKEN``); see
docs/issue-9.md.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Lease:
    lease_id: str
    expires_at: float
    max_expires_at: float
    revoked: bool = False
    renewals: int = 0


@dataclass
class DevVault:
    token: str
    mount: str = "secret"
    kv: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    dynamic: dict[str, float] = field(default_factory=dict)  # role path → lease TTL seconds
    max_ttl_s: float = 3600.0
    leases: dict[str, Lease] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def active_leases(self) -> list[str]:
        now = time.time()
        return [lid for lid, lease in self.leases.items() if not lease.revoked and lease.expires_at > now]


def _errors(status: int, *messages: str) -> Response:
    return JSONResponse({"errors": list(messages)}, status_code=status)


def vault_app(vault: DevVault) -> Starlette:
    def authorized(request: Request) -> bool:
        vault.requests.append((request.method, request.url.path))
        return secrets.compare_digest(request.headers.get("x-vault-token", ""), vault.token)

    async def read(request: Request) -> Response:
        if not authorized(request):
            return _errors(403, "permission denied")
        path = request.path_params["path"]
        prefix = f"{vault.mount}/data/"
        if path.startswith(prefix):
            name = path[len(prefix) :]
            if name not in vault.kv:
                return _errors(404)
            meta = {"version": vault.versions.get(name, 1), "deletion_time": "", "destroyed": False}
            return JSONResponse(
                {
                    "request_id": uuid.uuid4().hex,
                    "lease_id": "",
                    "renewable": False,
                    "lease_duration": 0,
                    "data": {"data": vault.kv[name], "metadata": meta},
                }
            )
        if path in vault.dynamic:
            ttl = vault.dynamic[path]
            lease_id = f"{path}/{uuid.uuid4().hex}"
            now = time.time()
            vault.leases[lease_id] = Lease(lease_id, now + ttl, now + vault.max_ttl_s)
            data = {"username": f"v-{uuid.uuid4().hex[:8]}", "password": secrets.token_urlsafe(24)}
            return JSONResponse(
                {
                    "request_id": uuid.uuid4().hex,
                    "lease_id": lease_id,
                    "renewable": True,
                    "lease_duration": int(ttl),
                    "data": data,
                }
            )
        return _errors(404)

    async def write(request: Request) -> Response:
        if not authorized(request):
            return _errors(403, "permission denied")
        path = request.path_params["path"]
        prefix = f"{vault.mount}/data/"
        if not path.startswith(prefix):
            return _errors(405, "unsupported path")
        name = path[len(prefix) :]
        body = await request.json()
        vault.kv[name] = dict(body.get("data") or {})
        vault.versions[name] = vault.versions.get(name, 0) + 1
        return JSONResponse({"data": {"version": vault.versions[name]}})

    async def renew(request: Request) -> Response:
        if not authorized(request):
            return _errors(403, "permission denied")
        body = await request.json()
        lease = vault.leases.get(str(body.get("lease_id", "")))
        now = time.time()
        if lease is None or lease.revoked or lease.expires_at <= now:
            return _errors(400, "lease not found or lease is not renewable")
        increment = float(body.get("increment") or 60)
        lease.expires_at = min(now + increment, lease.max_expires_at)
        lease.renewals += 1
        return JSONResponse(
            {"lease_id": lease.lease_id, "renewable": True, "lease_duration": int(lease.expires_at - now)}
        )

    async def revoke(request: Request) -> Response:
        if not authorized(request):
            return _errors(403, "permission denied")
        body = await request.json()
        lease = vault.leases.get(str(body.get("lease_id", "")))
        if lease is not None:
            lease.revoked = True
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/v1/sys/leases/renew", renew, methods=["PUT", "POST"]),
            Route("/v1/sys/leases/revoke", revoke, methods=["PUT", "POST"]),
            Route("/v1/{path:path}", read, methods=["GET"]),
            Route("/v1/{path:path}", write, methods=["POST", "PUT"]),
        ]
    )
