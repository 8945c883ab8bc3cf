"""Benchmark P3: checkpoint and restore of a 100 KB agent state.

In one run, on one machine, each side checkpoints the same ~100 KB state (a conversation of 400
messages plus working memory) and restores it, one operation at a time:

- floor: raw redis-py ``SET`` then ``GET`` of the state's encoded bytes (no versioning, no encoding);
- raygent on Redis: :class:`~raygent.actors.checkpoint.Checkpointer` ``save`` (encode; ``HSET`` of the
  base plus the versioned compare-and-set script, one round trip) then ``load`` by a separate
  Checkpointer (one ``HGETALL``, decode) of the state, full writes only;
- raygent on SQLite: the same on the embedded store;
- LangGraph ``SqliteSaver`` and ``PostgresSaver``: ``put`` of a checkpoint holding the state, then
  ``get_tuple`` (LangGraph's Redis saver needs Redis Stack modules that Debian's Redis lacks). Each
  runs twice: with its defaults (an fsync per commit) and ``_matched`` to raygent's durability (SQLite
  ``synchronous=NORMAL`` like raygent's SQLite store, PostgreSQL ``synchronous_commit=off`` like Redis'
  fsync once a second), so that the comparison is of checkpoint code, not of disks.

Scenario 2, per step: what a running agent does after every step. Operation ``i`` appends one message to
the conversation (the state grows from ~100 KB by one short message a step) and each side checkpoints it
the way it naturally does per step, then restores it: the floor ``SET``/``GET`` of the whole encoded
state; raygent ``save`` (a delta of the new bytes; every ``max_deltas`` steps a full write compacts the
chain) and ``load`` by a separate Checkpointer (base plus deltas, decoded); LangGraph ``put`` of the
step's new checkpoint (parented on the previous one, as a graph does) and ``get_tuple``. Each side's
checkpoint-only time is reported beside the checkpoint + restore time.

Then throughput: checkpoints written per second when many sessions checkpoint at once, pipelined
(``Store.put_checkpoints`` of a batch in one round trip), for full 100 KB writes and for the steady-state
delta of one step (a new message appended to the same state).

Every ratio is of p50s measured in the same run, sides interleaved in rounds of ``ROUND`` operations;
the load average at start and end is recorded with the results.

Run: ``.venv/bin/python -m benchmarks.checkpoint_p3`` (about two minutes). Needs ``redis-server`` (a private
one is started on a free port) and PostgreSQL on 127.0.0.1:5432 (trust); writes
``benchmarks/results/checkpoint_p3.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from raygent.actors.checkpoint import Checkpointer, encode_full
from raygent.core.store import RedisStore, SQLiteStore
from raygent.core.store.redis_server import RedisServer

ITERATIONS = int(os.environ.get("P3_ITERATIONS", "400"))
WARMUP = 40
ROUND = 20
BATCH = 64
PG_DSN = os.environ.get("P3_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint_p3.json"
SIDES = (
    "floor_redis_set_get",
    "raygent_redis",
    "raygent_sqlite",
    "langgraph_sqlite",
    "langgraph_sqlite_matched",
    "langgraph_postgres",
    "langgraph_postgres_matched",
)


def agent_state(target_bytes: int = 100 * 1024) -> dict[str, Any]:
    """A realistic agent state of about ``target_bytes``: conversation, tool results, working memory."""
    messages: list[dict[str, Any]] = []
    n = 0
    while len(orjson.dumps(messages)) < target_bytes - 6_000:
        role = ("user", "assistant", "tool")[n % 3]
        messages.append({"role": role, "content": f"message {n}: " + "lorem ipsum dolor sit amet " * 8})
        n += 1
    memory = {f"fact_{i}": {"value": f"v{i}" * 20, "confidence": 0.5 + i / 200} for i in range(40)}
    return {"messages": messages, "memory": memory, "runs": {}}


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 4),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 4),
    }


# An operation may return the seconds its checkpoint half took (the per-step scenario reports them).
Op = Callable[[int], Awaitable[float | None]]


async def measure_interleaved(sides: dict[str, Op]) -> dict[str, dict[str, Any]]:
    """Run every side in rounds of ``ROUND`` operations, round-robin, so that load from elsewhere on the
    machine falls on all sides alike; returns percentiles per side (and of the checkpoint half, where
    the operation reports it, under ``checkpoint_only``)."""
    for op in sides.values():
        for i in range(WARMUP):
            await op(i)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    halves: dict[str, list[float]] = {name: [] for name in sides}
    for first in range(WARMUP, WARMUP + ITERATIONS, ROUND):
        for name, op in sides.items():
            for i in range(first, first + ROUND):
                start = time.perf_counter()
                half = await op(i)
                samples[name].append(time.perf_counter() - start)
                if half is not None:
                    halves[name].append(half)
    results: dict[str, dict[str, Any]] = {name: dict(percentiles(values)) for name, values in samples.items()}
    for name, values in halves.items():
        if values:
            results[name]["checkpoint_only"] = percentiles(values)
    return results


# ----- the sides: each is one checkpoint + restore per call ----------------------------------------------


def raw_floor(client: aioredis.Redis, blob: bytes) -> Op:
    async def op(i: int) -> None:
        await client.set("floor:state", blob)
        got = await client.get("floor:state")
        assert got is not None and len(got) == len(blob)

    return op


def raygent_side(store: RedisStore | SQLiteStore, state: dict[str, Any]) -> Op:
    key = f"bench/{uuid.uuid4().hex}"
    # Full writes only (delta_min_bytes above the state size): the same work as the floor's SET.
    writer = Checkpointer(store, key, max_state_bytes=1 << 24, delta_min_bytes=1 << 30)
    reader = Checkpointer(store, key, max_state_bytes=1 << 24)

    async def op(i: int) -> None:
        await writer.save(state)
        restored = await reader.load()
        assert restored is not None and len(restored["messages"]) == len(state["messages"])

    return op


def langgraph_side(saver: Any, state: dict[str, Any]) -> Op:
    from langgraph.checkpoint.base import empty_checkpoint

    thread = uuid.uuid4().hex
    config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}

    async def op(i: int) -> None:
        # The saver is synchronous: called inline, like LangGraph's own sync graphs do.
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"state": state}
        checkpoint["channel_versions"] = {"state": i + 1}
        saved = saver.put(config, checkpoint, {"source": "loop", "step": i}, {"state": i + 1})
        restored = saver.get_tuple(saved)
        assert restored is not None
        assert len(restored.checkpoint["channel_values"]["state"]["messages"]) == len(state["messages"])

    return op


# ----- scenario 2: a checkpoint per step of a growing conversation ------------------------------------


def step_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The state after each step ``i``: the 100 KB state plus ``i + 1`` short messages (shared, read-only)."""
    messages = list(state["messages"])
    states = []
    for i in range(WARMUP + ITERATIONS):
        messages = [
            *messages,
            {"role": ("assistant", "tool")[i % 2], "content": f"step {i}: looked it up, ok"},
        ]
        states.append({**state, "messages": messages})
    return states


def raw_step_floor(client: aioredis.Redis, blobs: list[bytes]) -> Op:
    async def op(i: int) -> float:
        start = time.perf_counter()
        await client.set("floor:step", blobs[i])
        half = time.perf_counter() - start
        got = await client.get("floor:step")
        assert got is not None and len(got) == len(blobs[i])
        return half

    return op


def raygent_step_side(store: RedisStore | SQLiteStore, states: list[dict[str, Any]]) -> Op:
    key = f"step/{uuid.uuid4().hex}"
    writer = Checkpointer(store, key, max_state_bytes=1 << 24)  # the defaults a stateful agent runs with
    reader = Checkpointer(store, key, max_state_bytes=1 << 24)

    async def op(i: int) -> float:
        start = time.perf_counter()
        await writer.save(states[i])
        half = time.perf_counter() - start
        restored = await reader.load()
        assert restored is not None and len(restored["messages"]) == len(states[i]["messages"])
        return half

    return op


def langgraph_step_side(saver: Any, states: list[dict[str, Any]]) -> Op:
    from langgraph.checkpoint.base import empty_checkpoint

    latest: dict[str, Any] = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}

    async def op(i: int) -> float:
        nonlocal latest
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"state": states[i]}
        checkpoint["channel_versions"] = {"state": i + 1}
        start = time.perf_counter()
        latest = saver.put(latest, checkpoint, {"source": "loop", "step": i}, {"state": i + 1})
        half = time.perf_counter() - start
        restored = saver.get_tuple(latest)
        assert restored is not None
        assert len(restored.checkpoint["channel_values"]["state"]["messages"]) == len(states[i]["messages"])
        return half

    return op


async def throughput(store: RedisStore, state: dict[str, Any], *, delta: bool) -> float:
    """Checkpoints per second, ``BATCH`` sessions checkpointing together (pipelined), for ~3 s."""
    writers = [
        Checkpointer(
            store,
            f"tp/{uuid.uuid4().hex}",
            max_state_bytes=1 << 24,
            delta_min_bytes=1024 if delta else 1 << 30,
        )
        for _ in range(BATCH)
    ]
    for writer in writers:
        await writer.save(state)
    messages = list(state["messages"])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3.0:
        if delta:
            messages = [*messages, {"role": "assistant", "content": f"step {done}"}]
        current = {**state, "messages": messages} if delta else state
        prepared = [w.prepare(current) for w in writers]
        assert all(write.delta == delta for write, _ in prepared)
        await store.put_checkpoints([write for write, _ in prepared])
        for writer, (write, segments) in zip(writers, prepared, strict=True):
            writer.committed(write, segments)
        done += len(writers)
        if delta and writers[0]._deltas >= 30:
            for writer in writers:
                await writer.save(current)
    return done / (time.perf_counter() - started)


async def raw_throughput(url: str, blob: bytes) -> float:
    client = aioredis.Redis.from_url(url)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3.0:
        pipe = client.pipeline(transaction=False)
        for i in range(BATCH):
            pipe.set(f"tp:raw:{i}", blob)
        await pipe.execute()
        done += BATCH
    await client.aclose()
    return done / (time.perf_counter() - started)


# ----- main ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import ray

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "ray": ray.__version__,
        "platform": platform.platform(),
        "load_avg_1m": os.getloadavg()[0],
    }


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return round(a["p50_ms"] / b["p50_ms"], 3)


def ratios(table: dict[str, Any], part: str | None = None) -> dict[str, float]:
    """p50 ratios of one scenario's sides (``part``: of the checkpoint half only)."""

    def p50(name: str) -> dict[str, float]:
        return table[name] if part is None else table[name][part]

    out = {
        "raygent_redis_vs_floor": ratio(p50("raygent_redis"), p50("floor_redis_set_get")),
        "raygent_sqlite_vs_floor": ratio(p50("raygent_sqlite"), p50("floor_redis_set_get")),
    }
    for saver in SIDES[3:]:
        out[f"{saver}_vs_raygent_redis"] = ratio(p50(saver), p50("raygent_redis"))
        if "sqlite" in saver:
            out[f"{saver}_vs_raygent_sqlite"] = ratio(p50(saver), p50("raygent_sqlite"))
    return out


async def main() -> dict[str, Any]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from psycopg import Connection

    state = agent_state()
    blob = encode_full({k: orjson.dumps(v) for k, v in state.items()})
    workdir = Path(tempfile.mkdtemp(prefix="p3-"))
    server = RedisServer(workdir / "redis").start()
    redis_store = RedisStore(server.url, namespace="{bench}")
    sqlite_store = SQLiteStore(workdir / "raygent.db")
    results: dict[str, Any] = {
        "state_bytes": len(blob),
        "iterations": ITERATIONS,
        "load_avg_at_start": list(os.getloadavg()),
    }
    client = aioredis.Redis.from_url(server.url)
    sqlite_conn = sqlite3.connect(workdir / "langgraph.db", check_same_thread=False)
    sqlite_matched_conn = sqlite3.connect(workdir / "langgraph-matched.db", check_same_thread=False)
    pg = Connection.connect(PG_DSN, autocommit=True, prepare_threshold=0)
    pg_matched = Connection.connect(PG_DSN, autocommit=True, prepare_threshold=0)
    # Each LangGraph saver runs twice: with its defaults (an fsync per commit: SQLite WAL at
    # synchronous=FULL, PostgreSQL synchronous_commit=on), and *matched* to raygent's durability (its
    # SQLite store runs WAL at synchronous=NORMAL, Redis appends with an fsync once a second: a process
    # crash loses nothing, an OS crash the last second or so). The defaults measure the disk as much as
    # the saver; the matched sides compare the checkpoint code.
    sqlite_matched_conn.execute("PRAGMA synchronous=NORMAL")
    pg_matched.execute("SET synchronous_commit = off")
    results["durability"] = {
        "redis": "appendonly yes, appendfsync everysec (floor and raygent)",
        "raygent_sqlite": "WAL, synchronous=NORMAL",
        "langgraph_sqlite": "WAL (SqliteSaver.setup), synchronous=FULL (default)",
        "langgraph_sqlite_matched": "WAL, synchronous=NORMAL",
        "langgraph_postgres": "synchronous_commit=on (default)",
        "langgraph_postgres_matched": "synchronous_commit=off",
    }
    try:
        lg_sqlite = SqliteSaver(sqlite_conn)
        lg_sqlite.setup()
        lg_sqlite_matched = SqliteSaver(sqlite_matched_conn)
        lg_sqlite_matched.setup()
        lg_postgres = PostgresSaver(pg)  # type: ignore[arg-type]
        lg_postgres.setup()
        lg_postgres_matched = PostgresSaver(pg_matched)  # type: ignore[arg-type]
        results.update(
            await measure_interleaved(
                {
                    "floor_redis_set_get": raw_floor(client, blob),
                    "raygent_redis": raygent_side(redis_store, state),
                    "raygent_sqlite": raygent_side(sqlite_store, state),
                    "langgraph_sqlite": langgraph_side(lg_sqlite, state),
                    "langgraph_sqlite_matched": langgraph_side(lg_sqlite_matched, state),
                    "langgraph_postgres": langgraph_side(lg_postgres, state),
                    "langgraph_postgres_matched": langgraph_side(lg_postgres_matched, state),
                }
            )
        )
        states = step_states(state)
        step_blobs = [encode_full({k: orjson.dumps(v) for k, v in st.items()}) for st in states]
        step = await measure_interleaved(
            {
                "floor_redis_set_get": raw_step_floor(client, step_blobs),
                "raygent_redis": raygent_step_side(redis_store, states),
                "raygent_sqlite": raygent_step_side(sqlite_store, states),
                "langgraph_sqlite": langgraph_step_side(lg_sqlite, states),
                "langgraph_sqlite_matched": langgraph_step_side(lg_sqlite_matched, states),
                "langgraph_postgres": langgraph_step_side(lg_postgres, states),
                "langgraph_postgres_matched": langgraph_step_side(lg_postgres_matched, states),
            }
        )
        step["state_bytes"] = {"first": len(step_blobs[WARMUP]), "last": len(step_blobs[-1])}
        results["per_step"] = step
        results["throughput_per_s"] = {
            "raw_redis_set_pipelined_100kb": round(await raw_throughput(server.url, blob), 1),
            "raygent_full_100kb_pipelined": round(await throughput(redis_store, state, delta=False), 1),
            "raygent_delta_step_pipelined": round(await throughput(redis_store, state, delta=True), 1),
        }
        # The bytes a steady-state step writes (one message appended to the 100 KB state).
        step_writer = Checkpointer(redis_store, "bench/delta-size", max_state_bytes=1 << 24)
        await step_writer.save(state)
        grown = {**state, "messages": [*state["messages"], {"role": "assistant", "content": "one more"}]}
        results["delta_step_bytes"] = (await step_writer.save(grown)).written_bytes
    finally:
        await client.aclose()
        sqlite_conn.close()
        sqlite_matched_conn.close()
        pg.close()
        pg_matched.close()
        await redis_store.close()
        await sqlite_store.close()
        server.stop()
    results["ratios"] = ratios(results)
    results["per_step"]["ratios"] = ratios(results["per_step"])
    results["per_step"]["ratios_checkpoint_only"] = ratios(results["per_step"], "checkpoint_only")
    results["load_avg_at_end"] = list(os.getloadavg())
    results["machine"] = machine()
    return results


def report(results: dict[str, Any]) -> None:
    print(
        f"P3: checkpoint + restore of a {results['state_bytes']} byte state, {results['iterations']} ops each"
    )
    print(f"{'side':<26}{'p50 ms':>10}{'p99 ms':>10}")
    for name in SIDES:
        row = results[name]
        print(f"{name:<26}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}")
    for name, value in results["ratios"].items():
        print(f"ratio {name:<48}{value:>8.2f}x")
    step = results["per_step"]
    print(
        f"\nper step: one message appended to the state ({step['state_bytes']['first']} -> "
        f"{step['state_bytes']['last']} bytes), checkpoint + restore, and the checkpoint alone"
    )
    print(f"{'side':<26}{'p50 ms':>10}{'p99 ms':>10}{'ckpt p50':>10}{'ckpt p99':>10}")
    for name in SIDES:
        row = step[name]
        half = row["checkpoint_only"]
        print(
            f"{name:<26}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{half['p50_ms']:>10.3f}{half['p99_ms']:>10.3f}"
        )
    for name, value in step["ratios"].items():
        print(
            f"ratio {name:<48}{value:>8.2f}x   checkpoint only {step['ratios_checkpoint_only'][name]:>6.2f}x"
        )
    for name, value in results["throughput_per_s"].items():
        print(f"throughput {name:<36}{value:>10.1f} /s")
    print(f"delta checkpoint of one step: {results['delta_step_bytes']} bytes")
    start, end = results["load_avg_at_start"], results["load_avg_at_end"]
    print(f"load average (1/5/15 min) at start {start}, at end {end}")


if __name__ == "__main__":
    outcome = asyncio.run(main())
    report(outcome)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"wrote {RESULTS}")
