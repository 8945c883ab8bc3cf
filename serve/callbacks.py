"""Signed completion callbacks of async runs, delivered with retries.

Signatures follow the Standard Webhooks scheme (https://www.standardwebhooks.com/), so receivers can use
any of its libraries or a few lines of code:

* ``webhook-id``: the delivery id (the run id; the same on every retry, so receivers can de-duplicate),
* ``webhook-timestamp``: Unix seconds when this attempt was signed,
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")>``.

A receiver recomputes the HMAC over the raw body with its tenant's secret, compares in constant time,
and refuses timestamps more than a few minutes away from its clock (replay protection). Retries use
exponential backoff with full jitter; a 2xx ends the delivery, a 4xx other than 408/429 ends it as
failed (the receiver refused it), anything else is retried until ``max_attempts``. Every attempt is
reported to ``on_attempt`` so it can be recorded on the run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from raygent.core.clock import Clock
from raygent.core.config import CallbackSpec
from raygent.serve.callback_targets import CallbackTargetError, CallbackTargets

__all__ = ["CallbackSender", "sign", "signature_headers", "verify_signature"]

_TOLERANCE_S = 300


def sign(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery attempt."""
    mac = hmac.new(secret, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_headers(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, delivery_id, timestamp, body),
    }


def verify_signature(
    secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float = _TOLERANCE_S
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        delivery_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, delivery_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class CallbackSender:
    """Delivers callbacks for one ingress replica.

    Args:
        spec: Attempts, timeouts, backoff and where the secrets are.
        clock: Timestamps of signatures and attempts.
        client: HTTP client (closed by :meth:`aclose`); one is made when omitted.
        sleep: Awaitable sleep between attempts (tests pass a fast one).
        rng: Jitter source.
        environ: Where secret variables are read (default ``os.environ``).
    """

    def __init__(
        self,
        spec: CallbackSpec,
        *,
        clock: Clock,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        targets: CallbackTargets | None = None,
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=spec.timeout_s, follow_redirects=False)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._environ = os.environ if environ is None else environ
        self.targets = targets or CallbackTargets(spec)

    def secret_for(self, tenant: str) -> bytes | None:
        """The tenant's signing secret, or None when its variable is not set."""
        name = self._spec.tenant_secret_envs.get(tenant, self._spec.secret_env)
        value = self._environ.get(name)
        return value.encode() if value else None

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))]."""
        cap = min(self._spec.backoff_max_s, self._spec.backoff_initial_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, cap)

    async def deliver(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        tenant: str,
        delivery_id: str,
        on_attempt: Callable[[dict[str, Any]], Awaitable[None]],
        first_attempt: int = 1,
    ) -> bool:
        """POST ``payload`` to ``url`` until it is accepted or attempts run out; True when delivered."""
        secret = self.secret_for(tenant)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        for attempt in range(first_attempt, self._spec.max_attempts + 1):
            record: dict[str, Any] = {"attempt": attempt, "at": self._clock.now()}
            started = self._clock.monotonic()
            headers = {"content-type": "application/json", "user-agent": "raygent-callbacks/1"}
            if secret is not None:
                headers.update(signature_headers(secret, delivery_id, int(self._clock.now()), body))
            retry = True
            try:
                # Checked before every attempt (the name may point elsewhere than when it was accepted),
                # and the attempt connects to the address that was checked.
                target = await self.targets.pin(url)
            except CallbackTargetError as exc:
                record.update(error="destination-refused", detail=exc.detail)
                await on_attempt(record)
                return False
            try:
                resp = await self._client.post(
                    target.url,
                    content=body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                )
                record["status_code"] = resp.status_code
                retry = _retryable(resp.status_code)
                delivered = 200 <= resp.status_code < 300
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
                delivered = False
            record["latency_ms"] = round((self._clock.monotonic() - started) * 1000, 3)
            await on_attempt(record)
            if delivered:
                return True
            if not retry or attempt == self._spec.max_attempts:
                return False
            await self._sleep(self.backoff_s(attempt))
        return False

    async def aclose(self) -> None:
        await self._client.aclose()
