"""The checkpoint encoding (full, delta, splice), the Checkpointer's versions, schema and size limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygent.actors.checkpoint import (
    Checkpointer,
    RunProgress,
    apply_delta,
    decode_segments,
    encode_delta,
    encode_full,
)
from raygent.actors.errors import CheckpointSchemaError, StateTooLargeError
from raygent.core.errors import ConflictError
from raygent.core.store import Checkpoint, CheckpointWrite, SQLiteStore
from raygent.core.store.base import RunRecord


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "cp.db")
    yield opened
    await opened.close()


def segments(state: dict[str, Any]) -> dict[str, bytes]:
    return {k: orjson.dumps(v) for k, v in state.items()}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_states = st.dictionaries(st.sampled_from(["messages", "memory", "runs", "x"]), _json, max_size=4)


@settings(max_examples=300)
@given(old=_states, new=_states)
def test_delta_turns_any_state_into_any_other(old: dict[str, Any], new: dict[str, Any]) -> None:
    base = segments(old)
    rebuilt = dict(base)
    apply_delta(rebuilt, encode_delta(base, segments(new)))
    assert rebuilt == segments(new)
    stored = Checkpoint("k", 2, 1, encode_full(base), (encode_delta(base, segments(new)),))
    assert {k: orjson.loads(v) for k, v in decode_segments(stored).items()} == new


def test_appending_to_a_list_sends_only_the_new_items() -> None:
    history = [{"role": "user", "content": "x" * 500} for _ in range(40)]
    old = segments({"messages": history})
    new = segments({"messages": [*history, {"role": "assistant", "content": "ok"}]})
    delta = encode_delta(old, new)
    assert len(delta) < 80 < len(new["messages"])
    rebuilt = dict(old)
    apply_delta(rebuilt, delta)
    assert rebuilt == new


def test_unchanged_state_gives_an_empty_delta_and_deleted_keys_go() -> None:
    old = segments({"a": [1], "b": {"c": 2}})
    assert encode_delta(old, old) == b"RGD1"
    rebuilt = dict(old)
    apply_delta(rebuilt, encode_delta(old, segments({"a": [1]})))
    assert rebuilt == segments({"a": [1]})


@pytest.mark.parametrize("blob", [b"", b"JUNK", b"RGF1\x01\x05", b"RGF1\x01\x01\x00\x09\x00\x00\x00kshort"])
def test_corrupt_blobs_are_refused(blob: bytes) -> None:
    with pytest.raises(CheckpointSchemaError):
        decode_segments(Checkpoint("k", 1, 1, blob))


async def test_checkpointer_round_trip_versions_and_stale_writer(store: SQLiteStore) -> None:
    first = Checkpointer(store, "agent/s", max_state_bytes=10_000)
    assert await first.load() is None
    stats = await first.save({"messages": [1, 2], "memory": {"k": "v"}})
    assert (stats.version, stats.delta) == (1, False)
    second = Checkpointer(store, "agent/s", max_state_bytes=10_000)
    assert await second.load() == {"messages": [1, 2], "memory": {"k": "v"}}
    await second.save({"messages": [1, 2, 3], "memory": {}})
    # The first instance is now stale: its next write is fenced off.
    with pytest.raises(ConflictError):
        await first.save({"messages": ["stale"]})
    assert await Checkpointer(store, "agent/s", max_state_bytes=10_000).load() == {
        "messages": [1, 2, 3],
        "memory": {},
    }


async def test_checkpointer_uses_deltas_and_compacts(store: SQLiteStore) -> None:
    writer = Checkpointer(store, "k", max_state_bytes=1 << 20, delta_min_bytes=1000, max_deltas=3)
    state: dict[str, Any] = {"messages": ["m" * 200 for _ in range(20)]}
    kinds = []
    for n in range(8):
        state = {"messages": [*state["messages"], f"turn {n}"]}
        kinds.append((await writer.save(state)).delta)
    assert kinds == [False, True, True, True, False, True, True, True]
    stored = await store.get_checkpoint("k")
    assert stored is not None and len(stored.deltas) == 3
    assert await Checkpointer(store, "k", max_state_bytes=1 << 20).load() == state


async def test_state_over_the_limit_is_refused_and_nothing_is_written(store: SQLiteStore) -> None:
    writer = Checkpointer(store, "k", max_state_bytes=2048)
    await writer.save({"memory": "small"})
    with pytest.raises(StateTooLargeError) as info:
        await writer.save({"memory": "x" * 5000})
    assert info.value.status == 413 and info.value.extra["max_state_bytes"] == 2048
    assert "max_state_bytes is 2048" in info.value.detail
    assert await Checkpointer(store, "k", max_state_bytes=2048).load() == {"memory": "small"}
    with pytest.raises(TypeError, match="JSON"):
        await writer.save({"memory": object()})


async def test_newer_schema_is_refused_and_older_is_migrated(store: SQLiteStore) -> None:
    await store.put_checkpoints(
        [CheckpointWrite("new", encode_full(segments({"a": 1})), version=1, schema_version=9)]
    )
    with pytest.raises(CheckpointSchemaError, match="newer"):
        await Checkpointer(store, "new", max_state_bytes=1000).load()
    await store.put_checkpoints(
        [CheckpointWrite("old", encode_full(segments({"history": ["hi"]})), version=1, schema_version=0)]
    )
    with pytest.raises(CheckpointSchemaError, match="no migration"):
        await Checkpointer(store, "old", max_state_bytes=1000).load()
    migrated = Checkpointer(
        store, "old", max_state_bytes=1000, migrations={0: lambda s: {"messages": s.pop("history"), **s}}
    )
    assert await migrated.load() == {"messages": ["hi"]}
    stats = await migrated.save({"messages": ["hi", "there"]})
    assert (stats.version, stats.delta) == (2, False)  # migrated state is rewritten whole
    stored = await store.get_checkpoint("old")
    assert stored is not None and stored.schema_version == 1


def test_run_progress_round_trip() -> None:
    record = RunRecord("r", "a", "s", "running", "in", 1.0, 1.0, steps=[{"step": 1}], input_tokens=5)
    progress = RunProgress.of(record, step=2, phase="model", messages=[{"role": "user", "content": "in"}])
    again = RunProgress.from_dict(orjson.loads(orjson.dumps(progress.to_dict())))
    assert again == progress
    fresh = RunRecord("r", "a", "s", "running", "in", 1.0, 1.0)
    again.restore(fresh)
    assert (fresh.steps, fresh.input_tokens) == ([{"step": 1}], 5)


def test_a_chain_of_appends_decodes_to_the_last_state() -> None:
    """A restore applies every delta after the base, in order (spliced in place, one copy per segment)."""
    history = [{"role": "user", "content": "x" * 100} for _ in range(20)]
    states = [{"messages": history[:n], "memory": {"n": n}} for n in range(5, 20)]
    deltas = tuple(encode_delta(segments(before), segments(after)) for before, after in pairwise(states))
    stored = Checkpoint("k", len(states), 1, encode_full(segments(states[0])), deltas)
    assert {k: orjson.loads(v) for k, v in decode_segments(stored).items()} == states[-1]
    assert all(isinstance(v, bytes) for v in decode_segments(stored).values())


def test_a_splice_past_the_end_of_its_segment_is_refused() -> None:
    short = segments({"messages": [1]})
    delta = encode_delta(segments({"messages": [1, 2, 3, 4, 5]}), segments({"messages": [1, 2, 3, 4, 5, 6]}))
    with pytest.raises(CheckpointSchemaError, match="past its end"):
        decode_segments(Checkpoint("k", 2, 1, encode_full(short), (delta,)))
