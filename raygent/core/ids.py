"""Identifier helpers: sortable, URL-safe ids with a readable prefix."""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "tool_call_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A ULID-like id: 48-bit millisecond time then 80 random bits, so ids sort by creation time."""
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(ms, 10)}{_b32(rand, 16)}"


def tool_call_id(run_id: str, step: int, index: int) -> str:
    """Deterministic id of the ``index``-th tool call of ``step`` in ``run_id``.

    Deterministic so that a resumed run names the same call the same way (exactly-once effects).
    """
    return f"{run_id}:s{step}:c{index}"
