"""Callback signatures (Standard Webhooks) and delivery with retries against a real local server."""

from __future__ import annotations

import random
from typing import Any

from serving_helpers import Receiver

from raygent.core.clock import SystemClock
from raygent.core.config import CallbackSpec
from raygent.serve.callbacks import CallbackSender, sign, signature_headers, verify_signature


def test_signature_matches_the_standard_webhooks_example() -> None:
    # The reference vector of the Standard Webhooks spec (secret is the base64 payload of whsec_…).
    import base64

    secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_refuses_tampering_and_stale_timestamps() -> None:
    headers = signature_headers(b"s3cret", "run_1", 1_000_000, b"{}")
    assert verify_signature(b"s3cret", headers, b"{}", now=1_000_010)
    assert not verify_signature(b"s3cret", headers, b"{ }", now=1_000_010)
    assert not verify_signature(b"other", headers, b"{}", now=1_000_010)
    assert not verify_signature(b"s3cret", headers, b"{}", now=1_000_000 + 301)  # replayed later
    assert not verify_signature(b"s3cret", {**headers, "webhook-id": "run_2"}, b"{}", now=1_000_010)
    assert not verify_signature(b"s3cret", {}, b"{}", now=1_000_010)


def sender(**spec: Any) -> tuple[CallbackSender, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    cb = CallbackSender(
        CallbackSpec(**{"allowed_hosts": ["127.0.0.1"], **spec}),  # receivers on loopback
        clock=SystemClock(),
        sleep=sleep,
        rng=random.Random(7),
        environ={"RAYGENT_CALLBACK_SECRET": "k", "ACME_SECRET": "acme"},
    )
    return cb, slept


async def test_retries_with_jittered_backoff_until_accepted(receiver: Receiver) -> None:
    receiver.statuses = [500, 429, 503]
    cb, slept = sender(backoff_initial_s=1, backoff_max_s=3, max_attempts=6)
    attempts: list[dict[str, Any]] = []

    async def record(attempt: dict[str, Any]) -> None:
        attempts.append(attempt)

    assert await cb.deliver(receiver.url, {"x": 1}, tenant="default", delivery_id="run_1", on_attempt=record)
    assert [a["status_code"] for a in attempts] == [500, 429, 503, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert len(slept) == 3 and all(0 <= s <= cap for s, cap in zip(slept, [1, 2, 3], strict=True))
    await cb.aclose()


async def test_a_refusing_receiver_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [410]
    cb, slept = sender()
    attempts: list[dict[str, Any]] = []

    async def record(attempt: dict[str, Any]) -> None:
        attempts.append(attempt)

    assert not await cb.deliver(receiver.url, {}, tenant="default", delivery_id="run_1", on_attempt=record)
    assert len(attempts) == 1 and slept == []
    await cb.aclose()


async def test_unreachable_receiver_gives_up_after_max_attempts() -> None:
    cb, slept = sender(max_attempts=3, timeout_s=1)
    attempts: list[dict[str, Any]] = []

    async def record(attempt: dict[str, Any]) -> None:
        attempts.append(attempt)

    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    assert not await cb.deliver(
        "http://127.0.0.1:9/x", {}, tenant="default", delivery_id="r", on_attempt=record
    )
    assert [a["error"] for a in attempts] == ["ConnectError"] * 3 and len(slept) == 2
    await cb.aclose()


def test_per_tenant_secrets() -> None:
    cb, _ = sender(tenant_secret_envs={"acme": "ACME_SECRET", "ghost": "UNSET_VAR"})
    assert cb.secret_for("acme") == b"acme"
    assert cb.secret_for("other") == b"k"
    assert cb.secret_for("ghost") is None
