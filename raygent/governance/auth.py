"""Bearer JWT authentication: who is calling, with which roles, on behalf of which end user.

Validation goes through joserfc (signature, then ``exp``, ``nbf``, ``aud``, ``iss``) with an algorithm
allow-list read from the fleet file. Only asymmetric algorithms can be configured, and the token's
``alg`` header is checked against both the allow-list and the type of the key that would verify it, so
``alg=none`` and key confusion (an HMAC token "signed" with a public key) are refused before any
signature is computed.

Two key sources: a :class:`LocalIssuer` (embedded mode: an Ed25519 key pair in the state directory,
``raygent token issue`` mints tokens) and :class:`JwksKeys` (clusters: an external issuer's JWKS URL,
cached for ``jwks_cache_s``).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from raygent.core.clock import Clock
from raygent.core.errors import ConfigError
from raygent.core.govconfig import AuthSpec
from raygent.core.ids import new_id
from raygent.governance.errors import TokenInvalidError
from raygent.governance.signing import load_or_create_key

__all__ = ["JwksKeys", "KeySource", "LocalIssuer", "Principal", "TokenVerifier", "build_verifier"]

MAX_TOKEN_CHARS = 8192
_KEY_TYPE_OF_ALG = {
    "Ed25519": "OKP",
    "EdDSA": "OKP",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
}

AnyKey = OKPKey | RSAKey | ECKey


_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        subject: The token's ``sub`` (a person, a service, or an agent identity).
        roles: Role names from the role claim (a string or a list).
        end_user: Whom the caller acts for (the end-user claim, else ``sub``); policies see it.
        token_id: The token's ``jti``, for the audit trail.
        tenant: The tenant claim (``auth.tenant_claim``), else ``default``.
    """

    subject: str
    roles: tuple[str, ...]
    end_user: str
    issuer: str
    token_id: str = ""
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    tenant: str = "default"


class KeySource(Protocol):
    async def key_for(self, kid: str | None, kty: str) -> AnyKey: ...


class LocalIssuer:
    """The embedded issuer: an Ed25519 key pair in ``<state>/<key_dir>/jwt-issuer.pem``.

    Args:
        key_path: Private key file (created with mode 0600 when missing).
        spec: The fleet's auth settings.
        audience: The ``aud`` it issues for.
        clock: Time source for ``iat``/``nbf``/``exp``.
    """

    def __init__(self, key_path: Path, *, spec: AuthSpec, audience: str, clock: Clock) -> None:
        private = load_or_create_key(key_path)
        self._key = OKPKey.import_key(_pem_of(private), parameters={"use": "sig"})
        self._kid = self._key.thumbprint()[:16]
        self._spec = spec
        self._audience = audience
        self._clock = clock

    @property
    def kid(self) -> str:
        return self._kid

    def public_jwks(self) -> dict[str, Any]:
        public = self._key.as_dict(private=False)
        return {"keys": [{**public, "kid": self._kid, "alg": "Ed25519", "use": "sig"}]}

    def issue(
        self,
        *,
        subject: str,
        roles: list[str],
        ttl_s: int,
        end_user: str | None = None,
        tenant: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed token for ``subject``.

        Raises:
            ConfigError: ``ttl_s`` is not between 1 and ``auth.max_ttl_s``.
        """
        if not 1 <= ttl_s <= self._spec.max_ttl_s:
            raise ConfigError(f"--ttl-s must be between 1 and {self._spec.max_ttl_s} seconds")
        now = int(self._clock.now())
        claims: dict[str, Any] = {
            "iss": self._spec.issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": new_id("tok"),
            self._spec.role_claim: roles,
            **(extra or {}),
        }
        if end_user is not None:
            claims[self._spec.end_user_claim] = end_user
        if tenant is not None:
            if not _TENANT.fullmatch(tenant):
                raise ConfigError(f"tenant {tenant!r} must be 1-64 letters, digits, '.', '_' or '-'")
            claims[self._spec.tenant_claim] = tenant
        return jwt.encode({"alg": "Ed25519", "kid": self._kid, "typ": "JWT"}, claims, self._key, ["Ed25519"])

    async def key_for(self, kid: str | None, kty: str) -> AnyKey:
        if kty != "OKP" or (kid is not None and kid != self._kid):
            raise TokenInvalidError("the token was not signed by this fleet's issuer")
        return self._key


def _pem_of(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


class JwksKeys:
    """Keys of an external issuer, fetched from its JWKS URL and cached; an unknown ``kid`` refetches
    (key rotation) at most once per cache period.

    Args:
        url: The JWKS endpoint.
        cache_s: How long fetched keys are trusted.
        clock: Time source.
        transport: httpx transport (tests pass a local one; production uses the network).
    """

    def __init__(
        self, url: str, *, cache_s: float, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = url
        self._cache_s = cache_s
        self._clock = clock
        self._transport = transport
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=5.0) as client:
                response = await client.get(self._url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise TokenInvalidError(f"cannot fetch the issuer's keys from {self._url}: {exc}") from None
        self._keys, self._fetched_at = keys, self._clock.monotonic()
        return keys

    async def key_for(self, kid: str | None, kty: str) -> AnyKey:
        async with self._lock:
            keys = self._keys
            if keys is None or self._clock.monotonic() - self._fetched_at > self._cache_s:
                keys = await self._fetch()
            found = _pick(keys, kid, kty)
            if found is None and self._clock.monotonic() - self._fetched_at > 1.0:
                found = _pick(await self._fetch(), kid, kty)
        if found is None:
            raise TokenInvalidError(f"no {kty} key with kid {kid!r} at the issuer's JWKS URL")
        return found


def _pick(keys: KeySet, kid: str | None, kty: str) -> AnyKey | None:
    for key in keys.keys:
        if (
            key.key_type == kty
            and (kid is None or key.kid == kid)
            and isinstance(key, OKPKey | RSAKey | ECKey)
        ):
            return key
    return None


class TokenVerifier:
    """Checks bearer tokens and turns them into :class:`Principal` objects.

    Args:
        spec: The fleet's auth settings (allow-list, issuer, leeway, claims).
        audience: The expected ``aud``.
        keys: Where verification keys come from.
        clock: Time source for ``exp``/``nbf``.
    """

    def __init__(self, spec: AuthSpec, *, audience: str, keys: KeySource, clock: Clock) -> None:
        self._spec = spec
        self._audience = audience
        self._keys = keys
        self._clock = clock
        self._allowed = frozenset(spec.algorithms)

    async def verify(self, token: str) -> Principal:
        """The principal behind ``token``.

        Raises:
            TokenInvalidError: With a plain sentence saying which check failed.
        """
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenInvalidError("the bearer token is not a compact JWT")
        header = self._header(token)
        alg = header.get("alg")
        if alg not in self._allowed:
            raise TokenInvalidError(
                f"token algorithm {alg!r} is not allowed (allowed: {sorted(self._allowed)})"
            )
        kty = _KEY_TYPE_OF_ALG[str(alg)]
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        key = await self._keys.key_for(kid, kty)
        try:
            decoded = jwt.decode(token, key, algorithms=[str(alg)])
        except BadSignatureError:
            raise TokenInvalidError("the token's signature does not verify") from None
        except JoseError as exc:
            raise TokenInvalidError(f"the token cannot be decoded: {exc.description or exc.error}") from None
        claims = dict(decoded.claims)
        self._check_claims(claims)
        return self._principal(claims)

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            compact = jws.extract_compact(token.encode("ascii"))
        except (JoseError, ValueError, UnicodeEncodeError):
            raise TokenInvalidError("the token's header cannot be read") from None
        header: dict[str, Any] = dict(compact.protected)
        if header.get("crit"):
            raise TokenInvalidError("tokens with critical header extensions are not accepted")
        return header

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock.now()),
            leeway=self._spec.leeway_s,
            iss={"essential": True, "value": self._spec.issuer},
            aud={"essential": True, "value": self._audience},
            sub={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenInvalidError("the token has expired") from None
        except MissingClaimError as exc:
            raise TokenInvalidError(f"the token lacks required claims: {exc.description}") from None
        except InvalidClaimError as exc:
            claim = exc.claim
            reason = {
                "nbf": "the token is not valid yet",
                "aud": f"the token is for another audience, not {self._audience!r}",
                "iss": f"the token was issued by someone other than {self._spec.issuer!r}",
            }.get(claim, f"the token's {claim!r} claim is invalid")
            raise TokenInvalidError(reason) from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        raw_roles = claims.get(self._spec.role_claim, [])
        roles = (raw_roles,) if isinstance(raw_roles, str) else tuple(str(r) for r in raw_roles or ())
        subject = str(claims["sub"])
        end_user = claims.get(self._spec.end_user_claim)
        tenant = claims.get(self._spec.tenant_claim, "default")
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            # It names key prefixes and secrets: a value that is not a plain name is refused outright.
            raise TokenInvalidError(f"the token's {self._spec.tenant_claim!r} claim is not a tenant name")
        return Principal(
            subject=subject,
            roles=roles,
            end_user=str(end_user) if isinstance(end_user, str) and end_user else subject,
            issuer=str(claims.get("iss", "")),
            token_id=str(claims.get("jti", "")),
            claims=json.loads(json.dumps(claims, default=str)),
            tenant=tenant,
        )


def build_verifier(
    spec: AuthSpec,
    *,
    fleet_name: str,
    state_dir: Path,
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[TokenVerifier, LocalIssuer | None]:
    """The verifier a fleet's auth section describes, and its local issuer in ``local`` mode."""
    audience = spec.audience or fleet_name
    if spec.mode == "local":
        issuer = LocalIssuer(
            state_dir / spec.key_dir / "jwt-issuer.pem", spec=spec, audience=audience, clock=clock
        )
        return TokenVerifier(spec, audience=audience, keys=issuer, clock=clock), issuer
    assert spec.jwks_url is not None  # the spec's validator requires it in jwks mode
    keys = JwksKeys(spec.jwks_url, cache_s=spec.jwks_cache_s, clock=clock, transport=transport)
    return TokenVerifier(spec, audience=audience, keys=keys, clock=clock), None
