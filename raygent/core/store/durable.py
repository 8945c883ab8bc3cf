"""Records of durable execution: agent checkpoints and the tool-effect ledger.

Both are plain dataclasses so they cross Ray process boundaries cheaply; the store backends persist
them and enforce their compare-and-set rules atomically (see :class:`~raygent.core.store.base.Store`).

Checkpoints are opaque bytes to the store: a ``base`` plus zero or more ``deltas`` appended after it.
The actors layer decides what the bytes mean (:mod:`raygent.actors.checkpoint`). Versions fence
writers: a write must name the version that follows the stored one, so a stale incarnation of a
session actor (one that lost a race with its restart) can never overwrite its successor's state.

The effect ledger records a side-effecting tool call as ``intended`` before it runs and ``done``
(with its outcome) after, keyed by the call's deterministic id. An ``intended`` record that never
became ``done`` is a call whose outcome is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["EFFECT_STATES", "Checkpoint", "CheckpointWrite", "EffectRecord", "EffectState"]

EffectState = Literal["intended", "done", "needs_approval"]
EFFECT_STATES: tuple[str, ...] = get_args(EffectState)


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """One checkpoint write.

    Attributes:
        key: What is checkpointed, e.g. ``"refunds/ses_123"``.
        data: The encoded state (``delta=False``) or the encoded change since the last write.
        version: The new version; the stored version must be ``version - 1`` (0: none stored).
        schema_version: Version of the encoding, so a newer raygent can migrate older state.
        delta: Append ``data`` after the stored base and deltas instead of replacing them.
    """

    key: str
    data: bytes
    version: int
    schema_version: int
    delta: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The stored state of one key: the last full write and the deltas written after it, in order."""

    key: str
    version: int
    schema_version: int
    base: bytes
    deltas: tuple[bytes, ...] = ()
    updated_at: float = 0.0

    @property
    def size_bytes(self) -> int:
        return len(self.base) + sum(len(d) for d in self.deltas)


@dataclass(frozen=True, slots=True)
class EffectRecord:
    """The ledger entry of one side-effecting tool call.

    Attributes:
        key: The call's idempotency key (``tool_call_id(run, step, index)``).
        fingerprint: SHA-256 of the tool name and arguments; a replay with other arguments is refused.
        status: ``intended`` (started, outcome unknown until settled), ``done`` (``outcome`` holds
            the result), ``needs_approval`` (outcome unknown and the tool is not idempotent).
        attempts: How many times the call was started.
        started_at: Wall-clock start of the latest attempt.
    """

    key: str
    run_id: str
    tool: str
    fingerprint: str
    status: EffectState
    attempts: int
    started_at: float
    updated_at: float
    outcome: dict[str, Any] | None = field(default=None)
    reason: str = ""
