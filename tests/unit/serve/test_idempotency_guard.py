"""Idempotency keys: reserve, replay, mismatch, release, expiry; concurrent duplicates share one run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raygent.core.store.idempotency import SQLiteIdempotencyLedger
from raygent.serve.errors import (
    BadIdempotencyKeyError,
    IdempotencyKeyInUseError,
    IdempotencyKeyMismatchError,
)
from raygent.serve.idempotency import (
    IdempotencyGuard,
    idempotency_scope,
    parse_idempotency_key,
    request_fingerprint,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


def test_key_parsing() -> None:
    assert parse_idempotency_key('"8e03978e-40d5-43e8"') == "8e03978e-40d5-43e8"
    assert parse_idempotency_key("  bare-token ") == "bare-token"
    for bad in ("", '""', "x" * 256, "sp ace", 'quo"te', "é"):
        with pytest.raises(BadIdempotencyKeyError):
            parse_idempotency_key(bad)


def test_fingerprint_ignores_formatting_only() -> None:
    assert request_fingerprint({"a": 1, "b": [1, 2]}) == request_fingerprint({"b": [1, 2], "a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": 2})


async def test_replay_mismatch_release_and_expiry(tmp_path: Path) -> None:
    clock = Clock()
    guard = IdempotencyGuard(SQLiteIdempotencyLedger(tmp_path / "l.db"), ttl_s=60, clock=clock)
    assert await guard.begin("t:a", "k", "fp1", "run_1", wait_s=0) is None
    await guard.finish("t:a", "k", "run_1", status=200, body={"run_id": "run_1"}, headers={})
    replay = await guard.begin("t:a", "k", "fp1", "run_2", wait_s=0)
    assert replay is not None and (replay.run_id, replay.status, replay.body) == (
        "run_1",
        200,
        {"run_id": "run_1"},
    )
    with pytest.raises(IdempotencyKeyMismatchError):
        await guard.begin("t:a", "k", "fp2", "run_3", wait_s=0)
    assert await guard.begin("t:b", "k", "fp2", "run_4", wait_s=0) is None  # keys are scoped
    clock.t += 61  # expired: the key is free again
    assert await guard.begin("t:a", "k", "fp2", "run_5", wait_s=0) is None
    await guard.abandon("t:a", "k", "run_5")  # released: the next request owns it
    assert await guard.begin("t:a", "k", "fp3", "run_6", wait_s=0) is None
    with pytest.raises(IdempotencyKeyInUseError):
        await guard.begin("t:a", "k", "fp3", "run_7", wait_s=0)  # still in progress, no waiting
    assert await guard.purge_expired() == 1  # t:b's key, reserved before the clock moved
    clock.t += 61
    assert await guard.purge_expired() == 1


async def test_concurrent_duplicates_wait_for_the_first(tmp_path: Path) -> None:
    from raygent.core.clock import SystemClock

    guard = IdempotencyGuard(SQLiteIdempotencyLedger(tmp_path / "l.db"), ttl_s=60, clock=SystemClock())
    tasks = [asyncio.create_task(guard.begin("s", "k", "fp", f"run_{i}", wait_s=5)) for i in range(8)]
    await asyncio.sleep(0.3)
    owners = [i for i, t in enumerate(tasks) if t.done() and t.result() is None]
    assert len(owners) == 1
    assert sum(not t.done() for t in tasks) == 7  # the duplicates wait for the first one
    await guard.finish(
        "s", "k", f"run_{owners[0]}", status=202, body={"ok": True}, headers={"Location": "/x"}
    )
    replays = [r for r in await asyncio.gather(*tasks) if r is not None]
    assert len(replays) == 7
    assert {(r.run_id, r.status, r.headers["Location"]) for r in replays} == {(f"run_{owners[0]}", 202, "/x")}


def test_scope_is_per_caller_in_governed_fleets_only() -> None:
    # Ungoverned (no caller): the scope keys stored before callers were added stay valid.
    assert idempotency_scope("default", "support") == "default:support"
    mine = idempotency_scope("default", "support", "C105", "C105")
    assert mine.startswith("default:support:") and mine != "default:support"
    assert mine != idempotency_scope("default", "support", "C106", "C106")
    assert mine != idempotency_scope("default", "support", "C105", "C106")  # another end user
    # A subject with the separator in it cannot name another caller's scope.
    assert idempotency_scope("default", "support", "a:b", "c") != idempotency_scope(
        "default", "support", "a", "b:c"
    )


async def test_the_same_key_in_two_callers_scopes_is_two_reservations(tmp_path: Path) -> None:
    ledger = SQLiteIdempotencyLedger(tmp_path / "idem.db")
    guard = IdempotencyGuard(ledger, ttl_s=60, clock=Clock())
    first, second = (idempotency_scope("default", "a", who, who) for who in ("C105", "C106"))
    assert await guard.begin(first, "k", "fp", "run_1", wait_s=0) is None
    # C106 with the same key and body: reserved for its own run, neither a replay nor "in use".
    assert await guard.begin(second, "k", "fp", "run_2", wait_s=0) is None
    await guard.finish(first, "k", "run_1", status=200, body={"run_id": "run_1"}, headers={})
    replay = await guard.begin(first, "k", "fp", "run_3", wait_s=0)
    assert replay is not None and replay.run_id == "run_1"
    await ledger.close()
