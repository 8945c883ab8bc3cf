"""Checkpoints of a stateful agent's session state: versioned, schema-versioned, delta-encoded.

The state is a dict whose top-level values are JSON (the conversation, the agent's working memory,
the progress of runs in flight). Each top-level value is encoded on its own with orjson into a
*segment*; a full checkpoint is every segment framed in a small binary envelope, and a delta carries
only the segments that changed since the last write. A segment that grew at its end (a conversation
that gained messages) travels as a *splice*: keep the old segment's first ``n`` bytes, append these.
Restoring is byte concatenation, then one ``orjson.loads`` per segment.

Writes are compare-and-set on a version number (see :class:`~raygent.core.store.durable.CheckpointWrite`),
so a stale actor incarnation can never overwrite a newer one. ``schema_version`` names the encoding of
the state; :class:`Checkpointer` migrates older state forward on load and refuses newer state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from raygent.actors.errors import CheckpointSchemaError, StateTooLargeError
from raygent.core.errors import ConflictError
from raygent.core.store.base import RunRecord, Store
from raygent.core.store.durable import Checkpoint, CheckpointWrite

__all__ = [
    "STATE_SCHEMA_VERSION",
    "CheckpointStats",
    "Checkpointer",
    "Migration",
    "RunJournal",
    "RunPhase",
    "RunProgress",
    "apply_delta",
    "decode_segments",
    "encode_delta",
    "encode_full",
]

STATE_SCHEMA_VERSION = 1
Migration = Callable[[dict[str, Any]], dict[str, Any]]
RunPhase = Literal["model", "step", "answered"]

_FULL = b"RGF1"
_DELTA = b"RGD1"
_OP_SET, _OP_SPLICE, _OP_DEL = 1, 2, 3
_HEAD = struct.Struct("<BHI")  # op, key length, data length
_CUT = struct.Struct("<I")


# ----- the encoding ---------------------------------------------------------------------------------


def _encode_segments(state: Mapping[str, Any]) -> dict[str, bytes]:
    try:
        return {key: orjson.dumps(value) for key, value in state.items()}
    except TypeError as exc:
        raise TypeError(f"agent state must be JSON: {exc}") from None


def encode_full(segments: Mapping[str, bytes]) -> bytes:
    """Frame every segment: ``RGF1`` then ``(op, key length, data length, key, data)`` per key."""
    parts = [_FULL]
    for key, data in segments.items():
        raw = key.encode()
        parts += [_HEAD.pack(_OP_SET, len(raw), len(data)), raw, data]
    return b"".join(parts)


def encode_delta(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> bytes:
    """The change from ``old`` to ``new`` segments: set, splice (common prefix kept) or delete per key."""
    parts = [_DELTA]
    for key, data in new.items():
        before = old.get(key)
        if before == data:
            continue
        raw = key.encode()
        # Keep the old segment but its closing byte (] or }) when the new one extends it: appending to
        # a list or adding a key at the end of a dict then costs only the new bytes.
        cut = len(before) - 1 if before is not None and len(before) > 1 else 0
        if cut and len(data) > len(before or b"") and data.startswith((before or b"")[:cut]):
            tail = data[cut:]
            parts += [_HEAD.pack(_OP_SPLICE, len(raw), len(tail)), raw, _CUT.pack(cut), tail]
        else:
            parts += [_HEAD.pack(_OP_SET, len(raw), len(data)), raw, data]
    for key in old.keys() - new.keys():
        raw = key.encode()
        parts += [_HEAD.pack(_OP_DEL, len(raw), 0), raw]
    return b"".join(parts)


def _ops(blob: bytes, magic: bytes) -> list[tuple[int, str, int, bytes]]:
    if not blob.startswith(magic):
        raise CheckpointSchemaError(f"checkpoint blob does not start with {magic!r}")
    ops: list[tuple[int, str, int, bytes]] = []
    pos, end = len(magic), len(blob)
    try:
        while pos < end:
            op, key_len, data_len = _HEAD.unpack_from(blob, pos)
            pos += _HEAD.size
            key = blob[pos : pos + key_len].decode()
            pos += key_len
            cut = 0
            if op == _OP_SPLICE:
                (cut,) = _CUT.unpack_from(blob, pos)
                pos += _CUT.size
            ops.append((op, key, cut, blob[pos : pos + data_len]))
            pos += data_len
    except (struct.error, UnicodeDecodeError) as exc:
        raise CheckpointSchemaError(f"checkpoint blob is truncated or corrupt: {exc}") from None
    if pos != end:
        raise CheckpointSchemaError("checkpoint blob is truncated")
    return ops


def _apply(segments: dict[str, bytes | bytearray], delta: bytes) -> None:
    for op, key, cut, data in _ops(delta, _DELTA):
        if op == _OP_SET:
            segments[key] = data
        elif op == _OP_SPLICE:
            before = segments.get(key)
            if before is None or cut > len(before):
                raise CheckpointSchemaError(f"checkpoint delta splices {key!r} past its end")
            # Splice in place: a chain of n appends to a 100 KB conversation copies it once, not n times.
            grown = before if isinstance(before, bytearray) else bytearray(before)
            del grown[cut:]
            grown += data
            segments[key] = grown
        elif op == _OP_DEL:
            segments.pop(key, None)
        else:
            raise CheckpointSchemaError(f"unknown checkpoint delta op {op}")


def _frozen(segments: dict[str, bytes | bytearray]) -> dict[str, bytes]:
    return {key: data if isinstance(data, bytes) else bytes(data) for key, data in segments.items()}


def apply_delta(segments: dict[str, bytes], delta: bytes) -> None:
    """Apply one delta to ``segments`` in place."""
    work: dict[str, bytes | bytearray] = dict(segments)
    _apply(work, delta)
    segments.clear()
    segments.update(_frozen(work))


def decode_segments(checkpoint: Checkpoint) -> dict[str, bytes]:
    """The segments of a stored checkpoint: its base with every delta applied in order."""
    segments: dict[str, bytes | bytearray] = {key: data for _, key, _, data in _ops(checkpoint.base, _FULL)}
    for delta in checkpoint.deltas:
        _apply(segments, delta)
    return _frozen(segments)


# ----- run progress and the journal the step loop talks to ------------------------------------------


@dataclass(slots=True)
class RunProgress:
    """How far a run got, as stored in its session's checkpoint.

    Attributes:
        step: The step this progress belongs to.
        phase: ``model``: the step's model answer is in ``messages`` and its tool calls are still to
            run (they are repeated on resume; side effects are deduplicated by the effect ledger).
            ``step``: the step finished. ``answered``: the final answer is known (``answer``).
        messages: The run's new messages so far (user turn first).
        record: Accounting of the run so far (steps, tokens, cost, trace id).
    """

    run_id: str
    step: int
    phase: RunPhase
    messages: list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None

    @classmethod
    def of(
        cls,
        record: RunRecord,
        *,
        step: int,
        phase: RunPhase,
        messages: list[dict[str, Any]],
        answer: str | None = None,
    ) -> RunProgress:
        accounting = {
            "steps": list(record.steps),
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cost_usd": record.cost_usd,
            "trace_id": record.trace_id,
        }
        return cls(record.run_id, step, phase, messages, accounting, answer)

    def restore(self, record: RunRecord) -> None:
        """Put the saved accounting back on a run record that resumes."""
        record.steps = list(self.record.get("steps", []))
        record.input_tokens = int(self.record.get("input_tokens", 0))
        record.output_tokens = int(self.record.get("output_tokens", 0))
        record.cost_usd = float(self.record.get("cost_usd", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step": self.step,
            "phase": self.phase,
            "messages": self.messages,
            "record": self.record,
            "answer": self.answer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunProgress:
        return cls(
            run_id=str(data["run_id"]),
            step=int(data["step"]),
            phase=data["phase"],
            messages=list(data.get("messages") or []),
            record=dict(data.get("record") or {}),
            answer=data.get("answer"),
        )


class RunJournal(Protocol):
    """What the step loop of a stateful agent reports to, and resumes from (one per session)."""

    def history(self) -> list[dict[str, Any]]:
        """The session's conversation before this run."""
        ...

    async def resume(self, run_id: str) -> RunProgress | None:
        """Progress of ``run_id`` saved before a crash, or ``None``."""
        ...

    async def record(self, progress: RunProgress) -> None:
        """Checkpoint ``progress`` (after every step, and after the model answered)."""
        ...

    async def finish(self, run_id: str) -> None:
        """Fold the answered run's messages into the conversation; the run leaves the state."""
        ...

    async def abandon(self, run_id: str, *, keep: bool) -> None:
        """The run stopped: drop its progress, or keep it (``keep``) so it can be resumed later."""
        ...


# ----- the checkpointer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointStats:
    version: int
    delta: bool
    written_bytes: int
    state_bytes: int


class Checkpointer:
    """Saves and loads one key's state through a store, delta-encoding where the state is large.

    Args:
        store: Where checkpoints go.
        key: What is checkpointed (one session of one agent).
        max_state_bytes: Largest encoded state; a bigger one raises :class:`StateTooLargeError` and
            nothing is written.
        delta_min_bytes: States smaller than this are always written whole (a delta would not pay).
        max_deltas: Deltas written after one base before the next full write compacts them.
        migrations: ``{n: fn}`` turns state of schema version ``n`` into version ``n + 1``.
        schema_version: The version this code writes.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        max_state_bytes: int,
        delta_min_bytes: int = 8 * 1024,
        max_deltas: int = 32,
        migrations: Mapping[int, Migration] | None = None,
        schema_version: int = STATE_SCHEMA_VERSION,
    ) -> None:
        self._store = store
        self.key = key
        self._max_state_bytes = max_state_bytes
        self._delta_min_bytes = delta_min_bytes
        self._max_deltas = max_deltas
        self._migrations = dict(migrations or {})
        self._schema_version = schema_version
        self.version = 0
        self._segments: dict[str, bytes] = {}
        self._deltas = 0
        self._delta_bytes = 0

    async def load(self) -> dict[str, Any] | None:
        """The stored state (migrated to this schema version), or ``None`` when nothing is stored.

        Raises:
            CheckpointSchemaError: The state was written by a newer raygent or cannot be decoded.
        """
        stored = await self._store.get_checkpoint(self.key)
        if stored is None:
            self.version, self._segments, self._deltas, self._delta_bytes = 0, {}, 0, 0
            return None
        if stored.schema_version > self._schema_version:
            raise CheckpointSchemaError(
                f"checkpoint {self.key!r} has schema version {stored.schema_version}, newer than this "
                f"raygent's {self._schema_version}; upgrade raygent",
                extra={"key": self.key},
            )
        segments = decode_segments(stored)
        try:
            state: dict[str, Any] = {key: orjson.loads(data) for key, data in segments.items()}
        except orjson.JSONDecodeError as exc:
            raise CheckpointSchemaError(f"checkpoint {self.key!r} is corrupt: {exc}") from None
        for version in range(stored.schema_version, self._schema_version):
            migrate = self._migrations.get(version)
            if migrate is None:
                raise CheckpointSchemaError(
                    f"no migration of checkpoint state from schema version {version} to {version + 1}"
                )
            state = migrate(state)
        self.version = stored.version
        if stored.schema_version == self._schema_version:
            self._segments, self._deltas = segments, len(stored.deltas)
            self._delta_bytes = sum(len(d) for d in stored.deltas)
        else:
            # Migrated state is written whole next time, in the new schema.
            self._segments, self._deltas, self._delta_bytes = {}, self._max_deltas, 0
        return state

    def prepare(self, state: Mapping[str, Any]) -> tuple[CheckpointWrite, dict[str, bytes]]:
        """Encode ``state`` into the next write (full or delta) without sending it.

        Raises:
            StateTooLargeError: The encoded state is larger than ``max_state_bytes``.
            TypeError: The state is not JSON.
        """
        segments = _encode_segments(state)
        size = sum(len(k) + len(v) for k, v in segments.items())
        if size > self._max_state_bytes:
            raise StateTooLargeError(
                f"state of {self.key!r} would be {size} bytes; the agent's max_state_bytes is "
                f"{self._max_state_bytes}",
                extra={"state_bytes": size, "max_state_bytes": self._max_state_bytes},
            )
        data, delta = b"", False
        if self.version > 0 and size >= self._delta_min_bytes and self._deltas < self._max_deltas:
            candidate = encode_delta(self._segments, segments)
            # A delta pays while the chain stays smaller than one full write.
            if self._delta_bytes + len(candidate) < size:
                data, delta = candidate, True
        if not delta:
            data = encode_full(segments)
        write = CheckpointWrite(
            key=self.key,
            data=data,
            version=self.version + 1,
            schema_version=self._schema_version,
            delta=delta,
        )
        return write, segments

    def committed(self, write: CheckpointWrite, segments: dict[str, bytes]) -> CheckpointStats:
        """Record that ``write`` (from :meth:`prepare`) is stored."""
        self.version = write.version
        self._segments = segments
        if write.delta:
            self._deltas += 1
            self._delta_bytes += len(write.data)
        else:
            self._deltas, self._delta_bytes = 0, 0
        return CheckpointStats(write.version, write.delta, len(write.data), sum(map(len, segments.values())))

    async def save(self, state: Mapping[str, Any]) -> CheckpointStats:
        """Write ``state`` as the next version.

        Raises:
            StateTooLargeError: The encoded state is larger than ``max_state_bytes`` (nothing written).
            ConflictError: Another writer stored a newer version (this incarnation is stale).
        """
        write, segments = self.prepare(state)
        try:
            await self._store.put_checkpoints([write])
        except ConflictError:
            # Whatever is stored now is not what this instance last wrote: the next write is whole.
            self._deltas = self._max_deltas
            raise
        return self.committed(write, segments)
