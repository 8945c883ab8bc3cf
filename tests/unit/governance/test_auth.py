"""JWT verification: the allow-list, key sources (local issuer, JWKS URL) and claims mapping."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from govkit import MovableClock
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from raygent.core.govconfig import AuthSpec
from raygent.governance.auth import JwksKeys, TokenVerifier, build_verifier
from raygent.governance.errors import TokenInvalidError


async def test_local_issuer_round_trip_with_roles_and_end_user(tmp_path: Path, clock: MovableClock) -> None:
    verifier, issuer = build_verifier(AuthSpec(), fleet_name="fleet-a", state_dir=tmp_path, clock=clock)
    assert issuer is not None
    token = issuer.issue(subject="alice", roles=["approver", "auditor"], ttl_s=60, end_user="C9")
    principal = await verifier.verify(token)
    assert principal.subject == "alice" and principal.roles == ("approver", "auditor")
    assert principal.end_user == "C9" and principal.issuer == "raygent-local" and principal.token_id
    # Without the end-user claim the caller acts for itself.
    assert (await verifier.verify(issuer.issue(subject="bob", roles=["x"], ttl_s=60))).end_user == "bob"


async def test_the_key_is_kept_and_reused_across_processes(tmp_path: Path, clock: MovableClock) -> None:
    _, first = build_verifier(AuthSpec(), fleet_name="f", state_dir=tmp_path, clock=clock)
    second, _ = build_verifier(AuthSpec(), fleet_name="f", state_dir=tmp_path, clock=clock)
    assert first is not None
    await second.verify(first.issue(subject="a", roles=[], ttl_s=60))
    key_file = tmp_path / "keys" / "jwt-issuer.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_leeway_and_ttl_limits(tmp_path: Path, clock: MovableClock) -> None:
    verifier, issuer = build_verifier(AuthSpec(leeway_s=30), fleet_name="f", state_dir=tmp_path, clock=clock)
    assert issuer is not None
    token = issuer.issue(subject="a", roles=[], ttl_s=60)
    clock.offset_s = 80  # past exp, within leeway
    await verifier.verify(token)
    clock.offset_s = 95
    with pytest.raises(TokenInvalidError, match="expired"):
        await verifier.verify(token)
    with pytest.raises(Exception, match="ttl"):
        issuer.issue(subject="a", roles=[], ttl_s=10**9)


async def test_another_fleets_token_is_the_wrong_audience(tmp_path: Path, clock: MovableClock) -> None:
    _, other = build_verifier(AuthSpec(), fleet_name="fleet-b", state_dir=tmp_path, clock=clock)
    mine, _ = build_verifier(AuthSpec(), fleet_name="fleet-a", state_dir=tmp_path, clock=clock)
    assert other is not None
    with pytest.raises(TokenInvalidError, match="audience"):
        await mine.verify(other.issue(subject="a", roles=[], ttl_s=60))


def test_hmac_and_none_cannot_be_configured() -> None:
    for alg in ("HS256", "none"):
        with pytest.raises(ValueError):
            AuthSpec(algorithms=[alg])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="jwks_url"):
        AuthSpec(mode="jwks")


def jwks_transport(keys: KeySet, calls: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json=keys.as_dict(private=False))

    return httpx.MockTransport(handler)


async def test_jwks_mode_verifies_an_external_issuers_tokens_and_caches_keys(clock: MovableClock) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
    calls: list[str] = []
    spec = AuthSpec(
        mode="jwks", jwks_url="https://idp.example/jwks", issuer="https://idp.example", algorithms=["RS256"]
    )
    keys = JwksKeys(
        spec.jwks_url or "", cache_s=300, clock=clock, transport=jwks_transport(KeySet([rsa]), calls)
    )
    verifier = TokenVerifier(spec, audience="fleet-a", keys=keys, clock=clock)
    now = int(clock.now())
    claims = {
        "iss": "https://idp.example",
        "aud": "fleet-a",
        "sub": "svc",
        "exp": now + 60,
        "role": "auditor",
    }
    token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, rsa, algorithms=["RS256"])
    principal = await verifier.verify(token)
    await verifier.verify(token)
    assert principal.roles == ("auditor",) and calls == ["https://idp.example/jwks"]
    # A token from the right issuer name but signed with another key does not verify.
    rogue = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(TokenInvalidError, match="signature"):
        await verifier.verify(jwt.encode({"alg": "RS256", "kid": "k1"}, claims, rogue, algorithms=["RS256"]))
    # An algorithm outside the allow-list is refused before any key is fetched.
    with pytest.raises(TokenInvalidError, match="not allowed"):
        await verifier.verify(jwt.encode({"alg": "PS256", "kid": "k1"}, claims, rsa, algorithms=["PS256"]))


async def test_unreachable_jwks_is_a_401_not_a_crash(clock: MovableClock) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    spec = AuthSpec(mode="jwks", jwks_url="https://idp.example/jwks", algorithms=["RS256"])
    keys = JwksKeys("https://idp.example/jwks", cache_s=300, clock=clock, transport=httpx.MockTransport(down))
    verifier = TokenVerifier(spec, audience="a", keys=keys, clock=clock)
    header = json.dumps({"alg": "RS256", "kid": "k"}).encode()
    import base64

    token = f"{base64.urlsafe_b64encode(header).decode().rstrip('=')}.e30.sig"
    with pytest.raises(TokenInvalidError, match="cannot fetch"):
        await verifier.verify(token)
