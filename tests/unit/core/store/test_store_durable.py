"""Checkpoints and the tool-effect ledger, on every store backend (SQLite and a test-owned Redis).

Example tests pin the compare-and-set rules; the state machine at the bottom checks long random
sequences of checkpoint and effect operations against a plain-dict model, on both backends.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from store_backends import BACKEND_NAMES, open_backend

from raygent.core.errors import ConflictError, NotFoundError
from raygent.core.store import Checkpoint, CheckpointWrite, Store


@pytest.fixture(params=BACKEND_NAMES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    opened = open_backend(request.param, tmp_path)
    yield opened
    await opened.close()


def full(key: str, version: int, data: bytes, schema: int = 1) -> CheckpointWrite:
    return CheckpointWrite(key=key, data=data, version=version, schema_version=schema)


def delta(key: str, version: int, data: bytes) -> CheckpointWrite:
    return CheckpointWrite(key=key, data=data, version=version, schema_version=1, delta=True)


# ----- checkpoints -------------------------------------------------------------------------------------


async def test_checkpoint_missing_is_none(store: Store) -> None:
    assert await store.get_checkpoint("nope") is None


async def test_checkpoint_full_then_deltas_then_full_compacts(store: Store) -> None:
    await store.put_checkpoints([full("k", 1, b"\x00base\xff")])
    await store.put_checkpoints([delta("k", 2, b"d2")])
    await store.put_checkpoints([delta("k", 3, b"d3")])
    stored = await store.get_checkpoint("k")
    assert stored is not None
    assert (stored.version, stored.schema_version, stored.base, stored.deltas) == (
        3,
        1,
        b"\x00base\xff",
        (b"d2", b"d3"),
    )
    assert stored.size_bytes == 6 + 4 and stored.updated_at > 0
    await store.put_checkpoints([full("k", 4, b"new", schema=2)])
    stored = await store.get_checkpoint("k")
    assert stored == Checkpoint("k", 4, 2, b"new", (), stored.updated_at)


async def test_checkpoint_version_must_follow(store: Store) -> None:
    with pytest.raises(ConflictError):
        await store.put_checkpoints([full("k", 2, b"skips version 1")])
    with pytest.raises(ConflictError):
        await store.put_checkpoints([delta("k", 1, b"a delta needs a base")])
    assert await store.get_checkpoint("k") is None
    await store.put_checkpoints([full("k", 1, b"one")])
    for stale in (full("k", 1, b"again"), delta("k", 1, b"again"), full("k", 3, b"ahead")):
        with pytest.raises(ConflictError) as info:
            await store.put_checkpoints([stale])
        assert info.value.extra == {"keys": ["k"]}
    stored = await store.get_checkpoint("k")
    assert stored is not None and (stored.version, stored.base, stored.deltas) == (1, b"one", ())


async def test_checkpoint_batch_applies_the_good_writes(store: Store) -> None:
    await store.put_checkpoints([full("a", 1, b"a1")])
    with pytest.raises(ConflictError) as info:
        await store.put_checkpoints([full("b", 1, b"b1"), full("a", 1, b"stale"), delta("a", 2, b"a2")])
    assert info.value.extra == {"keys": ["a"]}
    a, b = await store.get_checkpoint("a"), await store.get_checkpoint("b")
    assert a is not None and (a.version, a.base, a.deltas) == (2, b"a1", (b"a2",))
    assert b is not None and (b.version, b.base) == (1, b"b1")


async def test_checkpoint_batch_of_many_keys(store: Store) -> None:
    writes = [full(f"k{i}", 1, bytes([i]) * 100) for i in range(200)]
    await store.put_checkpoints(writes)
    await store.put_checkpoints([delta(f"k{i}", 2, b"+") for i in range(200)])
    for i in (0, 57, 199):
        stored = await store.get_checkpoint(f"k{i}")
        assert stored is not None and stored.base == bytes([i]) * 100 and stored.deltas == (b"+",)


async def test_checkpoint_concurrent_writers_have_one_winner(store: Store) -> None:
    await store.put_checkpoints([full("race", 1, b"start")])
    results = await asyncio.gather(
        *(store.put_checkpoints([full("race", 2, bytes([n]))]) for n in range(10)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConflictError) for r in results if r is not None)


async def test_delete_checkpoint(store: Store) -> None:
    await store.put_checkpoints([full("k", 1, b"x")])
    await store.put_checkpoints([delta("k", 2, b"y")])
    await store.delete_checkpoint("k")
    assert await store.get_checkpoint("k") is None
    await store.put_checkpoints([full("k", 1, b"fresh")])  # starts over at version 1
    stored = await store.get_checkpoint("k")
    assert stored is not None and stored.deltas == ()


# ----- the effect ledger -------------------------------------------------------------------------------


async def test_effect_begin_settle_done_is_final(store: Store) -> None:
    assert await store.get_effect("run:s1:c0") is None
    started = await store.begin_effect(
        "run:s1:c0", run_id="run", tool="issue_refund", fingerprint="f1", now=10.0, expected_attempts=0
    )
    assert (started.status, started.attempts, started.started_at, started.outcome) == (
        "intended",
        1,
        10.0,
        None,
    )
    assert await store.get_effect("run:s1:c0") == started
    done = await store.settle_effect(
        "run:s1:c0", status="done", outcome={"result": {"id": 7}, "is_error": False}, reason="", now=11.0
    )
    assert (done.status, done.outcome, done.updated_at, done.fingerprint) == (
        "done",
        {"result": {"id": 7}, "is_error": False},
        11.0,
        "f1",
    )
    # Done is final: neither a late "needs approval" nor a second outcome changes it.
    again = await store.settle_effect(
        "run:s1:c0", status="needs_approval", outcome=None, reason="x", now=12.0
    )
    assert again == done
    with pytest.raises(ConflictError):
        await store.begin_effect(
            "run:s1:c0", run_id="run", tool="issue_refund", fingerprint="f1", now=13.0, expected_attempts=1
        )
    assert await store.get_effect("run:s1:c0") == done


async def test_effect_retry_is_compare_and_set(store: Store) -> None:
    await store.begin_effect("k", run_id="r", tool="t", fingerprint="f", now=1.0, expected_attempts=0)
    with pytest.raises(ConflictError) as info:
        await store.begin_effect("k", run_id="r", tool="t", fingerprint="f", now=2.0, expected_attempts=0)
    assert info.value.extra == {"key": "k", "attempts": 1}
    second = await store.begin_effect(
        "k", run_id="r", tool="t", fingerprint="f", now=3.0, expected_attempts=1
    )
    assert (second.attempts, second.started_at, second.status) == (2, 3.0, "intended")
    racers = await asyncio.gather(
        *(
            store.begin_effect("k", run_id="r", tool="t", fingerprint="f", now=4.0, expected_attempts=2)
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in racers) == 1


async def test_effect_needs_approval_then_done_wins(store: Store) -> None:
    await store.begin_effect("k", run_id="r", tool="send", fingerprint="f", now=1.0, expected_attempts=0)
    held = await store.settle_effect("k", status="needs_approval", outcome=None, reason="in doubt", now=2.0)
    assert (held.status, held.reason) == ("needs_approval", "in doubt")
    with pytest.raises(ConflictError):
        await store.begin_effect("k", run_id="r", tool="send", fingerprint="f", now=3.0, expected_attempts=1)
    # The original attempt finishing late still records the true outcome.
    done = await store.settle_effect("k", status="done", outcome={"result": 1}, reason="", now=4.0)
    assert (done.status, done.outcome) == ("done", {"result": 1})


async def test_effect_settle_unknown_key(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        await store.settle_effect("ghost", status="done", outcome=None, reason="", now=1.0)
    assert info.value.extra == {"key": "ghost"}


async def test_effect_reopen_starts_a_new_attempt_of_a_held_call_once(store: Store) -> None:
    await store.begin_effect("k", run_id="r", tool="send", fingerprint="f", now=1.0, expected_attempts=0)
    with pytest.raises(ConflictError):  # only a held call is reopened, never one still intended
        await store.reopen_effect("k", now=2.0, expected_attempts=1)
    await store.settle_effect("k", status="needs_approval", outcome=None, reason="in doubt", now=3.0)
    with pytest.raises(ConflictError) as stale:
        await store.reopen_effect("k", now=4.0, expected_attempts=0)
    assert stale.value.extra == {"key": "k", "attempts": 1}
    # Two resumers after one approval: exactly one reopens it.
    racers = await asyncio.gather(
        *(store.reopen_effect("k", now=5.0, expected_attempts=1) for _ in range(8)), return_exceptions=True
    )
    reopened = [r for r in racers if not isinstance(r, BaseException)]
    assert len(reopened) == 1 and sum(isinstance(r, ConflictError) for r in racers) == 7
    got = await store.get_effect("k")
    assert got is not None and got == reopened[0]
    assert (got.status, got.attempts, got.started_at, got.outcome, got.reason) == (
        "intended",
        2,
        5.0,
        None,
        "",
    )
    assert (got.run_id, got.tool, got.fingerprint) == ("r", "send", "f")
    # From here it is an ordinary attempt: it settles, and a done call is never reopened.
    await store.settle_effect("k", status="done", outcome={"result": 1}, reason="", now=6.0)
    with pytest.raises(ConflictError):
        await store.reopen_effect("k", now=7.0, expected_attempts=2)
    with pytest.raises(NotFoundError) as ghost:
        await store.reopen_effect("ghost", now=1.0, expected_attempts=0)
    assert ghost.value.extra == {"key": "ghost"}


async def test_holding_a_call_in_doubt_names_the_attempt_it_judged(store: Store) -> None:
    await store.begin_effect("k", run_id="r", tool="send", fingerprint="f", now=1.0, expected_attempts=0)
    held = await store.settle_effect(
        "k", status="needs_approval", outcome=None, reason="in doubt", now=2.0, expected_attempts=1
    )
    assert (held.status, held.attempts) == ("needs_approval", 1)
    await store.reopen_effect("k", now=3.0, expected_attempts=1)  # a person approved a repeat
    # A caller that judged attempt 1 in doubt before the reopen must not hold attempt 2, now running.
    stale = await store.settle_effect(
        "k", status="needs_approval", outcome=None, reason="late", now=4.0, expected_attempts=1
    )
    assert (stale.status, stale.attempts, stale.reason) == ("intended", 2, "")
    got = await store.get_effect("k")
    assert got is not None and (got.status, got.attempts) == ("intended", 2)
    done = await store.settle_effect(
        "k", status="done", outcome={"ok": True}, reason="", now=5.0, expected_attempts=2
    )
    assert (done.status, done.outcome) == ("done", {"ok": True})


# ----- model-based check over both backends ------------------------------------------------------------

_keys = st.sampled_from(["a", "b"])


def make_machine(backend: str) -> type[RuleBasedStateMachine]:
    class DurableMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.directory = Path(tempfile.mkdtemp(prefix="raygent-durable-"))
            self.store = open_backend(backend, self.directory)
            self.checkpoints: dict[str, tuple[int, int, bytes, list[bytes]]] = {}
            self.effects: dict[str, dict[str, Any]] = {}
            self.now = 0.0

        def call(self, awaitable: Any) -> Any:
            return self.loop.run_until_complete(awaitable)

        def teardown(self) -> None:
            self.call(self.store.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

        @rule(
            writes=st.lists(
                st.tuples(_keys, st.sampled_from([0, 1, 1, 1, 2]), st.booleans(), st.binary(max_size=16)),
                min_size=1,
                max_size=4,
            )
        )
        def put(self, writes: list[tuple[str, int, bool, bytes]]) -> None:
            batch, expected_conflicts = [], []
            for key, offset, is_delta, data in writes:
                version, _schema, base, deltas = self.checkpoints.get(key, (0, 0, b"", []))
                write = CheckpointWrite(key, data, version + offset, 1 + offset % 2, is_delta)
                batch.append(write)
                if write.version != version + 1 or (is_delta and version == 0):
                    expected_conflicts.append(key)
                    continue
                if is_delta:
                    self.checkpoints[key] = (write.version, write.schema_version, base, [*deltas, data])
                else:
                    self.checkpoints[key] = (write.version, write.schema_version, data, [])
            if expected_conflicts:
                with pytest.raises(ConflictError) as info:
                    self.call(self.store.put_checkpoints(batch))
                assert info.value.extra["keys"] == expected_conflicts
            else:
                self.call(self.store.put_checkpoints(batch))

        @rule(key=_keys)
        def delete(self, key: str) -> None:
            self.call(self.store.delete_checkpoint(key))
            self.checkpoints.pop(key, None)

        @rule(key=_keys, offset=st.sampled_from([0, 0, 1, -1]))
        def begin(self, key: str, offset: int) -> None:
            self.now += 1
            current = self.effects.get(key)
            attempts = 0 if current is None else current["attempts"]
            expected = max(0, attempts + offset)
            ok = expected == attempts and (current is None or current["status"] == "intended")
            call = self.store.begin_effect(
                key, run_id="r", tool="t", fingerprint=key * 3, now=self.now, expected_attempts=expected
            )
            if not ok:
                with pytest.raises(ConflictError):
                    self.call(call)
                return
            record = self.call(call)
            model = current or {"status": "intended", "outcome": None, "reason": ""}
            model.update(attempts=attempts + 1, started_at=self.now)
            self.effects[key] = model
            assert (record.attempts, record.status, record.started_at) == (
                attempts + 1,
                model["status"],
                self.now,
            )

        @rule(key=_keys, done=st.booleans(), value=st.integers(0, 9))
        def settle(self, key: str, done: bool, value: int) -> None:
            self.now += 1
            status = "done" if done else "needs_approval"
            outcome = {"result": value} if done else None
            call = self.store.settle_effect(key, status=status, outcome=outcome, reason="why", now=self.now)
            current = self.effects.get(key)
            if current is None:
                with pytest.raises(NotFoundError):
                    self.call(call)
                return
            record = self.call(call)
            if current["status"] != "done":
                current.update(status=status, outcome=outcome, reason="why")
            assert (record.status, record.outcome) == (current["status"], current["outcome"])

        @rule(key=_keys, offset=st.sampled_from([0, 0, 1, -1]))
        def reopen(self, key: str, offset: int) -> None:
            self.now += 1
            current = self.effects.get(key)
            if current is None:
                with pytest.raises(NotFoundError):
                    self.call(self.store.reopen_effect(key, now=self.now, expected_attempts=offset))
                return
            expected = max(0, current["attempts"] + offset)
            call = self.store.reopen_effect(key, now=self.now, expected_attempts=expected)
            if expected != current["attempts"] or current["status"] != "needs_approval":
                with pytest.raises(ConflictError):
                    self.call(call)
                return
            record = self.call(call)
            current.update(
                status="intended", attempts=expected + 1, started_at=self.now, outcome=None, reason=""
            )
            assert (record.status, record.attempts, record.started_at) == ("intended", expected + 1, self.now)

        @invariant()
        def agrees(self) -> None:
            for key in ("a", "b"):
                stored = self.call(self.store.get_checkpoint(key))
                if key not in self.checkpoints:
                    assert stored is None
                else:
                    version, schema, base, deltas = self.checkpoints[key]
                    assert stored is not None
                    assert (stored.version, stored.schema_version, stored.base, list(stored.deltas)) == (
                        version,
                        schema,
                        base,
                        deltas,
                    )
                effect = self.call(self.store.get_effect(key))
                model = self.effects.get(key)
                if model is None:
                    assert effect is None
                else:
                    assert effect is not None
                    assert (effect.status, effect.attempts, effect.outcome, effect.started_at) == (
                        model["status"],
                        model["attempts"],
                        model["outcome"],
                        model["started_at"],
                    )
                    assert effect.reason == model["reason"]

    return DurableMachine


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_durable_store_agrees_with_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "redis":
        request.getfixturevalue("redis_url")
    run_state_machine_as_test(
        make_machine(backend),
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
