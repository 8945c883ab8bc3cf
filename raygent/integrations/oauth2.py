"""OAuth2 client credentials per agent identity (authlib), a token cache that renews before expiry, and
RFC 8693 token exchange so an agent can act for the run's end user.

One :class:`OAuth2Tokens` per gateway replica. A token is cached per (identity, scopes[, end user]) and
handed out only while it has more than ``expiry_skew_s`` left, measured from when the request for it was
*sent*, so a call never carries an expired token even if the endpoint was slow to answer. Concurrent
calls that need the same token wait on one request (single flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import OctKey

from raygent.core.clock import Clock
from raygent.core.credconfig import OAuth2ClientSpec
from raygent.integrations.errors import (
    CredentialError,
    InsufficientScopeError,
    TokenEndpointError,
)
from raygent.integrations.secrets.known import KnownSecrets
from raygent.integrations.secrets.resolver import SecretResolver

try:
    # authlib's httpx integration is built on httpx2 when that is installed, else on httpx; its errors
    # and transports are that library's, so this module uses the same one (authlib's own rule).
    import httpx2 as token_http
except ImportError:  # pragma: no cover - depends on the environment
    import httpx as token_http  # type: ignore[no-redef]

__all__ = ["TOKEN_EXCHANGE_GRANT", "AccessToken", "OAuth2Tokens", "token_http"]

log = logging.getLogger("raygent.credentials")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and what it is good for. ``expires_at`` is epoch seconds (conservative)."""

    value: str
    expires_at: float
    scopes: frozenset[str]
    identity: str
    end_user: str = ""

    def __repr__(self) -> str:  # never print the token itself
        return f"AccessToken(identity={self.identity!r}, scopes={sorted(self.scopes)}, exp={self.expires_at})"


_Key = tuple[str, frozenset[str], str]


@dataclass(slots=True)
class _Client:
    secret: str
    http: AsyncOAuth2Client


class OAuth2Tokens:
    """Access tokens for agent identities.

    Args:
        clients: OAuth2 client settings by agent identity.
        secrets: Resolves client secrets and assertion keys at call time.
        clock: Wall clock for expiry.
        known: Every token and client secret is registered here, so it is masked wherever text leaves.
        transport: A ``token_http`` transport for the token endpoint (tests); default: real HTTP.
    """

    def __init__(
        self,
        clients: Mapping[str, OAuth2ClientSpec],
        *,
        secrets: SecretResolver,
        clock: Clock,
        known: KnownSecrets,
        transport: Any = None,
    ) -> None:
        self._specs = dict(clients)
        self._secrets = secrets
        self._clock = clock
        self._known = known
        self._transport = transport
        self._cache: dict[_Key, AccessToken] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._clients: dict[str, _Client] = {}
        self.fetches = 0  # token requests sent (for tests and metrics)

    def has_client(self, identity: str) -> bool:
        return identity in self._specs

    async def token(self, identity: str, scopes: Sequence[str], *, end_user: str = "") -> AccessToken:
        """A token for ``identity`` with at least ``scopes``; with ``end_user``, one exchanged to act for
        that user (RFC 8693) whose scopes are what both may do.

        Raises:
            CredentialError: No client for the identity, or no token exchange configured.
            TokenEndpointError: The endpoint failed (retryable) or refused the client.
            InsufficientScopeError: The token granted lacks a scope the tool needs.
        """
        spec = self._specs.get(identity)
        if spec is None:
            raise CredentialError(f"agent identity {identity!r} has no OAuth2 client configured")
        if end_user and spec.token_exchange is None:
            raise CredentialError(f"agent identity {identity!r} cannot act for users: no token_exchange")
        key: _Key = (identity, frozenset(scopes), end_user)
        fresh = self._fresh(key, spec)
        if fresh is not None:
            return fresh
        async with self._locks.setdefault(key, asyncio.Lock()):
            fresh = self._fresh(key, spec)  # another call may have fetched it while this one waited
            if fresh is not None:
                return fresh
            if end_user:
                actor = await self.token(identity, sorted(scopes))
                token = await self._exchange(identity, spec, key[1], end_user, actor)
            else:
                token = await self._client_credentials(identity, spec, key[1])
            self._cache[key] = token
            return token

    def invalidate(self, token: AccessToken) -> None:
        """Forget a token the resource server refused (it may have been revoked upstream)."""
        for key, cached in list(self._cache.items()):
            if cached.value == token.value:
                del self._cache[key]

    def drop(self, identity: str) -> int:
        """Forget every cached token of ``identity``; returns how many."""
        mine = [key for key in self._cache if key[0] == identity]
        for key in mine:
            del self._cache[key]
        return len(mine)

    def cached(self, identity: str) -> list[AccessToken]:
        return [t for key, t in self._cache.items() if key[0] == identity]

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.http.aclose()
        self._clients.clear()
        self._cache.clear()

    def _fresh(self, key: _Key, spec: OAuth2ClientSpec) -> AccessToken | None:
        token = self._cache.get(key)
        if token is not None and token.expires_at - spec.expiry_skew_s > self._clock.now():
            return token
        return None

    async def _client(self, identity: str, spec: OAuth2ClientSpec) -> AsyncOAuth2Client:
        # Resolved per fetch, so a rotated client secret (in the vault) is picked up without a restart.
        secret = await self._secrets.resolve(spec.client_secret, identity=identity)
        held = self._clients.get(identity)
        if held is not None and held.secret == secret:
            return held.http
        if held is not None:
            await held.http.aclose()
        http = AsyncOAuth2Client(
            client_id=spec.client_id,
            client_secret=secret,
            token_endpoint_auth_method=spec.auth_method,
            timeout=spec.timeout_s,
            transport=self._transport,
            trust_env=False,
        )
        self._clients[identity] = _Client(secret, http)
        return http

    async def _client_credentials(
        self, identity: str, spec: OAuth2ClientSpec, scopes: frozenset[str]
    ) -> AccessToken:
        params: dict[str, Any] = {"grant_type": "client_credentials"}
        if scopes:
            params["scope"] = " ".join(sorted(scopes))
        if spec.audience:
            params["audience"] = spec.audience
        return await self._fetch(identity, spec, spec.token_url, params, scopes, end_user="")

    async def _exchange(
        self, identity: str, spec: OAuth2ClientSpec, scopes: frozenset[str], end_user: str, actor: AccessToken
    ) -> AccessToken:
        exchange = spec.token_exchange
        if exchange is None:  # token() checks this first; kept for the type checker
            raise CredentialError(f"agent identity {identity!r} cannot act for users: no token_exchange")
        key = await self._secrets.resolve(exchange.assertion_key, identity=identity)
        now = int(self._clock.now())
        claims = {
            "iss": exchange.assertion_issuer,
            "sub": end_user,
            "aud": exchange.audience or spec.client_id,
            "iat": now,
            "exp": now + exchange.assertion_ttl_s,
            "act": {"sub": spec.client_id},
        }
        assertion = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(key.encode()))
        self._known.add(assertion)
        params: dict[str, Any] = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": assertion,
            "subject_token_type": _JWT_TOKEN_TYPE,
            "actor_token": actor.value,
            "actor_token_type": _ACCESS_TOKEN_TYPE,
            "requested_token_type": _ACCESS_TOKEN_TYPE,
        }
        if scopes:
            params["scope"] = " ".join(sorted(scopes))
        if exchange.audience:
            params["audience"] = exchange.audience
        url = exchange.token_url or spec.token_url
        return await self._fetch(identity, spec, url, params, scopes, end_user=end_user)

    async def _fetch(
        self,
        identity: str,
        spec: OAuth2ClientSpec,
        url: str,
        params: dict[str, Any],
        scopes: frozenset[str],
        *,
        end_user: str,
    ) -> AccessToken:
        client = await self._client(identity, spec)
        sent_at = self._clock.now()  # expiry counts from the request, not the answer
        self.fetches += 1
        try:
            raw = await client.fetch_token(url, **params)
        except token_http.HTTPStatusError as exc:
            code = exc.response.status_code
            raise TokenEndpointError(f"the token endpoint answered {code}", retryable=code >= 500) from None
        except token_http.HTTPError as exc:
            detail = f"the token endpoint is unreachable ({type(exc).__name__})"
            raise TokenEndpointError(detail, retryable=True) from None
        except AuthlibBaseError as exc:
            raise _oauth_error(identity, exc, scopes) from None
        value = raw.get("access_token")
        if not isinstance(value, str) or not value:
            raise TokenEndpointError("the token endpoint answered without an access_token")
        self._known.add(value)
        # RFC 6749 §5.1: an absent scope means the one requested; an empty one means none was granted.
        granted = frozenset(str(raw["scope"] or "").split()) if "scope" in raw else scopes
        missing = sorted(scopes - granted)
        if missing:
            who = f"{identity!r} acting for {end_user!r}" if end_user else repr(identity)
            raise InsufficientScopeError(f"the token granted to {who} lacks the scopes {missing}")
        try:
            expires_in = float(raw.get("expires_in", spec.default_ttl_s))
        except (TypeError, ValueError):
            expires_in = spec.default_ttl_s
        token = AccessToken(value, sent_at + expires_in, granted, identity, end_user)
        log.info("new token for %s (%s), expires in %.1f s", identity, " ".join(sorted(granted)), expires_in)
        return token


def _oauth_error(identity: str, exc: AuthlibBaseError, scopes: frozenset[str]) -> CredentialError:
    error = getattr(exc, "error", None) or "error"
    description = (getattr(exc, "description", None) or "")[:200]
    if error == "invalid_scope":
        return InsufficientScopeError(
            f"the token endpoint refused scopes {sorted(scopes)} for {identity!r}: {description or error}"
        )
    retryable = error in {"temporarily_unavailable", "server_error", "slow_down"}
    detail = f"the token endpoint refused {identity!r}: {error}"
    if description:
        detail += f" ({description})"
    return TokenEndpointError(detail, retryable=retryable)
