"""``Idempotency-Key`` handling (IETF draft *The Idempotency-Key HTTP Header Field*).

* The first request with a key reserves it in the ledger (atomically, across replicas) with a
  fingerprint of its normalised body, and proceeds.
* A later request with the same key and the same fingerprint gets the first request's response: the
  same run id and status code and body. A duplicate that arrives while the first is still running
  waits for it (bounded), so concurrent duplicates also yield one run; past the bound it gets the
  draft's ``409``.
* The same key with another body is ``422``.
* A request refused before anything happened (``503`` overload) releases its key, so the client's retry
  with the same key is processed normally.
* Keys expire after ``server.idempotency_ttl_s``.
* A key is unique within its scope (:func:`idempotency_scope`): the tenant and agent, and in governed
  fleets also the caller (token subject and end user), so two callers who pick the same key never
  replay, wait for or collide with each other's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

from raygent.core.clock import Clock
from raygent.core.store.base import canonical_json, sha256_hex
from raygent.core.store.idempotency import IdempotencyEntry, IdempotencyLedger
from raygent.serve.errors import BadIdempotencyKeyError, IdempotencyKeyInUseError, IdempotencyKeyMismatchError

__all__ = ["IdempotencyGuard", "Replay", "idempotency_scope", "parse_idempotency_key", "request_fingerprint"]

_KEY = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,255}$")  # visible ASCII without '"' and '\'
_POLL_S = 0.05


def parse_idempotency_key(header: str) -> str:
    """The key of an ``Idempotency-Key`` header: a structured-field string (quoted) or a bare token.

    Raises:
        BadIdempotencyKeyError: Empty, too long, or with characters a key may not have.
    """
    value = header.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not _KEY.match(value):
        raise BadIdempotencyKeyError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (optionally in double quotes)"
        )
    return value


def idempotency_scope(tenant: str, agent: str, requester: str = "", end_user: str = "") -> str:
    """What an idempotency key is unique within.

    Ungoverned fleets (no caller): ``tenant:agent``, as before. Governed fleets add the caller: a replay
    returns the first request's run, so a key shared across callers would hand one caller another's run
    (and the end user too: one service token acting for two customers must not replay across them).
    The caller part is JSON, so a subject containing ``:`` cannot forge another caller's scope.
    """
    if not requester and not end_user:
        return f"{tenant}:{agent}"
    return f"{tenant}:{agent}:{canonical_json([requester, end_user])}"


def request_fingerprint(normalised: dict[str, Any]) -> str:
    """sha256 of the request as validated (defaults filled in), so formatting and key order do not matter."""
    return sha256_hex(canonical_json(normalised))


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored response of the request that first used a key."""

    run_id: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyGuard:
    """Reserves keys, replays stored responses, and wakes waiting duplicates.

    Args:
        ledger: Where keys live (shared by every ingress replica).
        ttl_s: How long a key is remembered.
        clock: Time source.
    """

    def __init__(self, ledger: IdempotencyLedger, *, ttl_s: float, clock: Clock) -> None:
        self._ledger = ledger
        self._ttl_s = ttl_s
        self._clock = clock
        self._done: dict[tuple[str, str], asyncio.Event] = {}  # keys this replica owns right now

    async def begin(
        self, scope: str, key: str, fingerprint: str, run_id: str, *, wait_s: float
    ) -> Replay | None:
        """Reserve ``key`` for ``run_id`` (returns None: go ahead) or return the response to replay.

        Raises:
            IdempotencyKeyMismatchError: The key was used with another request.
            IdempotencyKeyInUseError: The first request is still running after ``wait_s``.
        """
        deadline = self._clock.monotonic() + wait_s
        while True:
            now = self._clock.now()
            entry = IdempotencyEntry(scope, key, fingerprint, run_id, "in_progress", now, now + self._ttl_s)
            reserved, current = await self._ledger.reserve(entry, now=now)
            if reserved:
                self._done[(scope, key)] = asyncio.Event()
                return None
            while True:
                if current.fingerprint != fingerprint:
                    raise IdempotencyKeyMismatchError(
                        "this Idempotency-Key was used with a different request body; use a new key",
                        extra={"run_id": current.run_id},
                    )
                if current.state == "done" and current.status is not None and current.body is not None:
                    return Replay(current.run_id, current.status, current.body, current.headers)
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    raise IdempotencyKeyInUseError(
                        "a request with this Idempotency-Key is still being processed; retry later",
                        retry_after_s=1.0,
                        extra={"run_id": current.run_id},
                    )
                await self._wait(scope, key, min(remaining, _POLL_S))
                latest = await self._ledger.get(scope, key, now=self._clock.now())
                if latest is None:
                    break  # the first request was refused and released the key: try to take it
                current = latest

    async def _wait(self, scope: str, key: str, timeout_s: float) -> None:
        # Same replica: woken as soon as the owner finishes; other replicas: polled.
        done = self._done.get((scope, key))
        with contextlib.suppress(TimeoutError):
            if done is not None:
                await asyncio.wait_for(done.wait(), timeout_s)
            else:
                await asyncio.sleep(timeout_s)

    async def finish(
        self, scope: str, key: str, run_id: str, *, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        """Store the response of the request that owns ``key``."""
        try:
            await self._ledger.complete(scope, key, run_id, status=status, body=body, headers=headers)
        finally:
            self._wake(scope, key)

    async def abandon(self, scope: str, key: str, run_id: str) -> None:
        """Release ``key``: nothing happened for it (the request was refused)."""
        try:
            await self._ledger.release(scope, key, run_id)
        finally:
            self._wake(scope, key)

    def _wake(self, scope: str, key: str) -> None:
        done = self._done.pop((scope, key), None)
        if done is not None:
            done.set()

    async def purge_expired(self) -> int:
        return await self._ledger.purge_expired(now=self._clock.now())
