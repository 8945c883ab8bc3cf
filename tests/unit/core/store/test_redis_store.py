"""What only the Redis store has: namespaces, session TTLs, connection errors, many writer processes on one
chain, and tamper evidence without triggers. The shared contract runs in test_sqlite_store.py."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from raygent.core.config import Fleet, StoreSpec
from raygent.core.errors import StoreError
from raygent.core.store import (
    AuditDraft,
    AuditQuery,
    RedisStore,
    RunRecord,
    SessionContext,
    open_store,
    redis_namespace,
)
from raygent.core.store.redis_server import free_port


def draft(n: int, run_id: str = "r1") -> AuditDraft:
    return AuditDraft(
        ts=float(n),
        kind="tool_call",
        run_id=run_id,
        session_id="s",
        agent="a",
        identity="i",
        payload={"n": n},
    )


def fresh(url: str, **kw: object) -> RedisStore:
    return RedisStore(url, namespace=f"{{t:{uuid.uuid4().hex}}}", **kw)  # type: ignore[arg-type]


async def test_namespaces_are_isolated_and_hold_every_key(redis_url: str) -> None:
    one, two = fresh(redis_url), fresh(redis_url)
    await one.put_session(SessionContext("s", [{"m": 1}]), expected_version=0)
    await one.create_run(RunRecord("r", "a", "s", "running", "hi", 1.0, 1.0))
    await one.append_audit([draft(1)])
    assert await two.get_session("s") is None and await two.get_run("r") is None
    assert await two.query_audit(AuditQuery()) == [] and await two.list_runs() == []
    raw = aioredis.Redis.from_url(redis_url)
    keys = [k.decode() async for k in raw.scan_iter(match=f"{one.namespace}*")]
    assert len(keys) >= 5 and all(k.startswith(one.namespace + ":") for k in keys)
    await raw.aclose()
    await one.close()
    await two.close()


async def test_open_store_namespaces_by_tenant_and_fleet(redis_url: str) -> None:
    spec = StoreSpec(kind="redis", url=redis_url, tenant="acme", session_ttl_s=30, op_timeout_s=2)
    fleet = Fleet.model_construct(name="desk", models={}, agents={}, store=spec, state_dir="")
    store = open_store(fleet)
    assert isinstance(store, RedisStore)
    assert store.namespace == redis_namespace("acme", "desk") == "{raygent:acme:desk}"
    assert (store.session_ttl_s, store.op_timeout_s) == (30, 2)
    await store.ping()
    await store.close()


def test_store_spec_needs_a_redis_url() -> None:
    with pytest.raises(ValidationError, match="needs 'url'"):
        StoreSpec(kind="redis")
    with pytest.raises(ValidationError, match="must start with redis://"):
        StoreSpec(kind="redis", url="http://x")


async def test_session_context_expires_after_its_ttl(redis_url: str) -> None:
    store = fresh(redis_url, session_ttl_s=0.3)
    stored = await store.put_session(SessionContext("s", [{"m": 1}]), expected_version=0)
    raw = aioredis.Redis.from_url(redis_url)
    assert 0 < await raw.pttl(f"{store.namespace}:s:s") <= 300
    assert await store.get_session("s") == stored
    await asyncio.sleep(0.5)
    assert await store.get_session("s") is None
    # Expired context starts over at version 1; runs and audit have no TTL.
    assert (await store.put_session(SessionContext("s", []), expected_version=0)).version == 1
    await raw.aclose()
    await store.close()


async def test_unreachable_server_is_a_clear_retryable_error() -> None:
    store = RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0", namespace="{x}", op_timeout_s=0.5)
    with pytest.raises(StoreError) as info:
        await store.get_run("r")
    assert info.value.retryable and "unreachable" in info.value.detail
    assert "secret" not in info.value.detail and "secret" not in repr(store)
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("r")


def _append_many(url: str, namespace: str, writer: int, count: int) -> None:
    async def main() -> None:
        store = RedisStore(url, namespace=namespace, op_timeout_s=30)
        for n in range(count):
            await store.append_audit([draft(n, run_id=f"w{writer}"), draft(n, run_id=f"w{writer}")])
        await store.close()

    asyncio.run(main())


async def test_many_processes_keep_one_linear_chain(redis_url: str) -> None:
    namespace = f"{{t:{uuid.uuid4().hex}}}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(redis_url, namespace, w, 40)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    store = RedisStore(redis_url, namespace=namespace)
    records = await store.query_audit(AuditQuery(limit=10_000))
    assert [r.seq for r in records] == list(range(1, 4 * 40 * 2 + 1))
    # Each append's two records are adjacent: appends are atomic, never interleaved.
    assert all(records[i].run_id == records[i + 1].run_id for i in range(0, len(records), 2))
    assert (await store.verify_audit()).ok
    assert len(await store.query_audit(AuditQuery(run_id="w2", limit=10_000))) == 80
    await store.close()


async def test_tampering_is_found(redis_url: str) -> None:
    store = fresh(redis_url)
    await store.append_audit([draft(n) for n in range(1, 8)])
    raw = aioredis.Redis.from_url(redis_url)
    records_key, head_key = f"{store.namespace}:audit:records", f"{store.namespace}:audit:head"
    original = await raw.hget(records_key, "4")
    edited = json.loads(original)
    edited["payload"] = {"x": 999}
    await raw.hset(records_key, "4", json.dumps(edited))
    result = await store.verify_audit()
    assert (result.ok, result.first_bad_seq, result.records_checked) == (False, 4, 3)
    assert "payload" in result.reason
    await raw.hset(records_key, "4", original)
    assert (await store.verify_audit()).ok
    await raw.hdel(records_key, "7")  # cut the tail
    result = await store.verify_audit()
    assert (result.ok, result.first_bad_seq) == (False, 7) and "truncated" in result.reason
    await raw.delete(head_key)
    result = await store.verify_audit()
    assert not result.ok and "head" in result.reason
    await raw.aclose()
    await store.close()


async def test_redis_restart_with_append_only_file_keeps_everything(tmp_path: Path) -> None:
    from raygent.core.store.redis_server import RedisServer

    server = RedisServer(tmp_path / "r", appendfsync="always").start()
    store = RedisStore(server.url, namespace="{restart}", op_timeout_s=1)
    await store.create_run(RunRecord("r", "a", "s", "running", "hi", 1.0, 1.0))
    await store.append_audit([draft(1)])
    server.stop(kill=True)
    with pytest.raises(StoreError) as info:
        await store.get_run("r")
    assert info.value.retryable
    server.start()
    # The same store object reconnects by itself; nothing acknowledged was lost.
    run = await store.get_run("r")
    assert run is not None and run.input == "hi"
    assert (await store.verify_audit()).ok and (await store.append_audit([draft(2)]))[0].seq == 2
    await store.close()
    server.stop()


async def test_a_resent_write_whose_reply_was_lost_is_not_a_conflict(redis_url: str) -> None:
    """redis-py re-sends a command after a connection error; when the first send had been applied
    (Redis died after the fsync, before the reply) the re-send must succeed, not conflict with itself."""
    from raygent.core.store import CheckpointWrite

    store = fresh(redis_url)
    commands = store._checkpoint_commands(CheckpointWrite("k", b"base", 1, 1), "1.0")
    assert (await store._send(commands))[-1] == 1
    assert (await store._send(commands))[-1] == 1  # the same send again: applied once
    rival = store._checkpoint_commands(CheckpointWrite("k", b"rival", 1, 1), "1.0")
    assert (await store._send(rival))[-1] == 0  # a real rival conflicts
    stored = await store.get_checkpoint("k")
    assert stored is not None and (stored.version, stored.base) == (1, b"base")
    # The rival's staged base went with its conflict: only the winner's base is in the hash.
    raw = aioredis.Redis.from_url(redis_url)
    fields = await raw.hkeys(f"{store.namespace}:cp:k")
    assert sorted(f for f in fields if f.startswith(b"b:")) == [commands[0][2].encode()]
    await raw.aclose()
    records = await store.append_audit([draft(1)])
    head_args = [0, "0" * 64, records[-1].seq, records[-1].hash, "0" * 64]
    keys = [f"{store.namespace}:audit:head", f"{store.namespace}:audit:records"]
    # Re-sending the append that set this head is recognised as already applied.
    assert await store._script("append_audit", keys, head_args) == 1
    assert [r.seq for r in await store.query_audit(AuditQuery())] == [1]
    await store.close()


async def test_a_late_resend_of_a_base_never_removes_the_base_a_successor_built_on(redis_url: str) -> None:
    """A stale writer's re-sent full write arrives after a successor appended a delta to that very base:
    it conflicts, and the base it staged (the successor's current base) stays."""
    from raygent.core.store import CheckpointWrite

    store = fresh(redis_url)
    first = store._checkpoint_commands(CheckpointWrite("k", b"base", 1, 1), "1.0")
    assert (await store._send(first))[-1] == 1
    await store.put_checkpoints([CheckpointWrite("k", b"+d", 2, 1, delta=True)])
    assert (await store._send(first))[-1] == 0
    stored = await store.get_checkpoint("k")
    assert stored is not None and (stored.version, stored.base, stored.deltas) == (2, b"base", (b"+d",))
    await store.close()


async def test_a_base_staged_by_a_write_that_never_finished_is_invisible_and_cleaned(redis_url: str) -> None:
    """The connection died between a full write's HSET and its script: the staged base is not a
    checkpoint, and the next full write removes it."""
    from raygent.core.store import CheckpointWrite

    store = fresh(redis_url)
    lost = store._checkpoint_commands(CheckpointWrite("k", b"lost", 1, 1), "1.0")
    await store._send(lost[:1])  # only the HSET arrived
    assert await store.get_checkpoint("k") is None
    await store.put_checkpoints([CheckpointWrite("k", b"one", 1, 1)])
    await store.put_checkpoints([CheckpointWrite("k", b"+", 2, 1, delta=True)])
    await store._send(store._checkpoint_commands(CheckpointWrite("k", b"lost again", 3, 1), "1.0")[:1])
    await store.put_checkpoints([CheckpointWrite("k", b"three", 3, 1)])
    stored = await store.get_checkpoint("k")
    assert stored is not None and (stored.version, stored.base, stored.deltas) == (3, b"three", ())
    raw = aioredis.Redis.from_url(redis_url)
    fields = {f for f in await raw.hkeys(f"{store.namespace}:cp:k")}
    await raw.aclose()
    assert len([f for f in fields if f.startswith(b"b:")]) == 1 and not any(
        f.startswith(b"d") for f in fields
    )
    await store.close()


async def test_an_error_reply_in_a_batch_is_a_store_error_and_the_connection_stays_usable(
    redis_url: str,
) -> None:
    from raygent.core.store import CheckpointWrite

    store = fresh(redis_url)
    raw = aioredis.Redis.from_url(redis_url)
    await raw.set(f"{store.namespace}:cp:wrongtype", "a string, not a hash")
    await raw.aclose()
    with pytest.raises(StoreError):
        await store.put_checkpoints(
            [CheckpointWrite("wrongtype", b"x", 1, 1), CheckpointWrite("ok", b"y", 1, 1)]
        )
    stored = await store.get_checkpoint("ok")
    assert stored is not None and stored.base == b"y"
    await store.close()


async def test_a_cut_delta_chain_is_a_clear_error_not_a_wrong_state(redis_url: str) -> None:
    from raygent.core.store import CheckpointWrite

    store = fresh(redis_url)
    await store.put_checkpoints([CheckpointWrite("k", b"base", 1, 1)])
    await store.put_checkpoints([CheckpointWrite("k", b"delta", 2, 1, delta=True)])
    raw = aioredis.Redis.from_url(redis_url)
    chain = await raw.hget(f"{store.namespace}:cp:k", "d")
    assert chain is not None and chain.endswith(b"delta")
    await raw.hset(f"{store.namespace}:cp:k", "d", chain[:-1])
    await raw.aclose()
    with pytest.raises(StoreError, match="corrupt"):
        await store.get_checkpoint("k")
    await store.close()
