"""The store interface: sessions, runs and the audit trail behind one async API.

SQLite is the embedded default; Redis and PostgreSQL backends implement the same protocol later. The
records are plain dataclasses so they cross Ray process boundaries cheaply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

from raygent.core.errors import ValidationFailedError
from raygent.core.store.durable import Checkpoint, CheckpointWrite, EffectRecord

__all__ = [
    "AUDIT_KINDS",
    "RUN_STATES",
    "AuditDraft",
    "AuditKind",
    "AuditQuery",
    "AuditRecord",
    "RunRecord",
    "RunState",
    "SessionContext",
    "Store",
    "VerifyResult",
    "canonical_json",
    "record_hash",
    "sha256_hex",
    "unknown_run_cursor",
]

# needs_approval: the run stopped because a side effect's outcome is unknown and only a person may
# decide whether to repeat it (see raygent.governance.effects); its checkpoint keeps it resumable.
# waiting: the run is parked on a slow backend's pending reply (an ``mq`` tool with ``async_mode: park``);
# it resumes from its parked progress when the reply is recorded (raygent.integrations.resumer).
RunState = Literal[
    "queued", "running", "completed", "failed", "timed_out", "cancelled", "needs_approval", "waiting"
]
RUN_STATES: tuple[str, ...] = get_args(RunState)
AuditKind = Literal[
    "prompt",
    "reasoning",
    "model_call",
    "tool_call",
    "backend_response",
    "policy_decision",
    "approval",
    "action",
    "error",
]
AUDIT_KINDS: tuple[str, ...] = get_args(AuditKind)
GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces, UTF-8 kept) used for hashing and storage."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class SessionContext:
    """A session's externalised context: the conversation so far, with a version for compare-and-set."""

    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    updated_at: float = 0.0


@dataclass(slots=True)
class RunRecord:
    run_id: str
    agent: str
    session_id: str
    status: RunState
    input: str
    created_at: float
    updated_at: float
    output: str | None = None
    error: dict[str, Any] | None = None  # problem document when the run failed
    steps: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    caller_chain: list[str] = field(default_factory=list)
    trace_id: str | None = None
    identity: str = ""
    # Who started the run (the token's subject) and the end user it acts for; set once at creation and
    # never changed. Empty for ungoverned fleets and for rows stored before these fields existed. The
    # HTTP API shows or cancels a run only for these two (or a caller with ``runs:read_all``).
    requester: str = ""
    end_user: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """What a writer supplies; the store assigns ``seq``, ``prev_hash`` and ``hash`` atomically."""

    ts: float
    kind: AuditKind
    run_id: str
    session_id: str
    agent: str
    identity: str
    payload: dict[str, Any]
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    prev_hash: str
    hash: str
    ts: float
    trace_id: str | None
    run_id: str
    session_id: str
    agent: str
    identity: str
    kind: str
    payload: dict[str, Any]
    payload_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_hash(
    *,
    seq: int,
    prev_hash: str,
    ts: float,
    trace_id: str | None,
    run_id: str,
    session_id: str,
    agent: str,
    identity: str,
    kind: str,
    payload_sha256: str,
) -> str:
    """The chain hash of one record: every field except the hash itself, canonically encoded."""
    body = {
        "seq": seq,
        "prev_hash": prev_hash,
        "ts": repr(float(ts)),
        "trace_id": trace_id,
        "run_id": run_id,
        "session_id": session_id,
        "agent": agent,
        "identity": identity,
        "kind": kind,
        "payload_sha256": payload_sha256,
    }
    return sha256_hex(canonical_json(body))


@dataclass(frozen=True, slots=True)
class AuditQuery:
    run_id: str | None = None
    agent: str | None = None
    tool: str | None = None
    kind: str | None = None
    since_ts: float | None = None
    after_seq: int = 0
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records_checked: int
    first_bad_seq: int | None = None
    reason: str = ""


def unknown_run_cursor(before: str) -> ValidationFailedError:
    """What :meth:`Store.list_runs` raises for a ``before`` that is not a run of the listing."""
    return ValidationFailedError(
        f"before={before!r} is not a run of this listing; pass the last run id of the previous page",
        extra={"before": before},
    )


class Store(Protocol):
    """Durable state. Every method is safe to call from many processes at once."""

    async def get_session(self, session_id: str) -> SessionContext | None: ...

    async def put_session(self, ctx: SessionContext, *, expected_version: int) -> SessionContext:
        """Write if the stored version is ``expected_version`` (else ConflictError); returns the new ctx."""
        ...

    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run; ConflictError if the id exists."""
        ...

    async def save_run(self, run: RunRecord) -> None:
        """Replace an existing run's mutable fields; NotFoundError if it does not exist."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self,
        *,
        agent: str | None = None,
        limit: int = 50,
        owner: str | None = None,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, optionally of one agent and of one owner (its requester or end user).

        ``before`` (a run id, the last of the previous page) pages on: the runs listed after it, however
        many runs were created since. ValidationFailedError when it is not a run of this listing.
        """
        ...

    async def append_audit(self, drafts: list[AuditDraft]) -> list[AuditRecord]:
        """Append to the single hash chain, atomically and in order, whatever the number of writers."""
        ...

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    async def verify_audit(self) -> VerifyResult:
        """Recompute the chain; names the first record whose content or link is wrong."""
        ...

    # ----- durable execution (checkpoints of stateful agents, the tool-effect ledger) -----------------

    async def put_checkpoints(self, writes: list[CheckpointWrite]) -> None:
        """Apply each write atomically and independently (pipelined where the backend can).

        A write applies when the stored version is ``write.version - 1``; a delta also needs a stored
        base. Raises ConflictError naming the keys whose writes did not apply (the others did).
        """
        ...

    async def get_checkpoint(self, key: str) -> Checkpoint | None: ...

    async def delete_checkpoint(self, key: str) -> None: ...

    async def get_effect(self, key: str) -> EffectRecord | None: ...

    async def begin_effect(
        self, key: str, *, run_id: str, tool: str, fingerprint: str, now: float, expected_attempts: int
    ) -> EffectRecord:
        """Start an attempt: record ``intended`` with ``attempts = expected_attempts + 1``.

        Raises ConflictError unless the stored record has ``expected_attempts`` attempts (0: absent) and
        is still ``intended``: two callers can never both believe they started the same attempt.
        """
        ...

    async def settle_effect(
        self,
        key: str,
        *,
        status: Literal["done", "needs_approval"],
        outcome: dict[str, Any] | None,
        reason: str,
        now: float,
        expected_attempts: int | None = None,
    ) -> EffectRecord:
        """Record the outcome. ``done`` is final and wins over ``needs_approval``; NotFoundError if absent.

        With ``expected_attempts``, nothing changes unless the call has exactly that many attempts (a
        caller that judged attempt n in doubt must not hold attempt n + 1, begun since); the stored record
        is returned either way."""
        ...

    async def reopen_effect(self, key: str, *, now: float, expected_attempts: int) -> EffectRecord:
        """Start a new attempt of a call held as ``needs_approval`` (a person checked that the effect did
        not happen): record ``intended`` with ``attempts = expected_attempts + 1``, outcome and reason
        cleared.

        Raises ConflictError unless the stored record is ``needs_approval`` with ``expected_attempts``
        attempts (two resumers can never both reopen it); NotFoundError if absent.
        """
        ...

    async def close(self) -> None: ...
