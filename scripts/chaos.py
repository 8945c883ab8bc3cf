"""Chaos run of the stateful refund desk on real Ray and real Redis: 1000+ seeded runs, SIGKILLs at seeded
points (session actors and gateway replicas), optional Redis restarts, then the invariants:

- 0 lost runs: every run comes back, completed or parked as ``needs_approval`` with its progress still
  in its session's checkpoint;
- 0 duplicated effects: at most one refund and one notification per run (the tools' own ledger);
- the audit chain verifies.

Usage::

    .venv/bin/python scripts/chaos.py --runs 1000 --seed 7 [--kill-ratio 0.3] [--redis-restarts 3]

Starts a private redis-server on a free port and a local Ray (2 CPUs); writes
``benchmarks/results/chaos.json``. Exit status 0 when every invariant holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from raygent.actors.stateful import checkpoint_key
from raygent.core.config import FAULT_POINTS, FaultSpec, Fleet
from raygent.core.errors import RaygentError
from raygent.core.faults import plan_for
from raygent.core.fleetfile import load_fleet
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import RedisStore, open_store
from raygent.core.store.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "examples" / "refund_desk" / "fleet.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "chaos.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=8, help="sessions driven in parallel")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kill-ratio", type=float, default=0.3)
    parser.add_argument("--redis-restarts", type=int, default=2, help="SIGKILL + restart Redis mid-run")
    parser.add_argument("--json", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def build_fleet(state: Path, redis_url: str, seed: int, kill_ratio: float) -> Fleet:
    fleet = load_fleet(FLEET, state_dir=state)
    faults = FaultSpec(seed=seed, kill_ratio=kill_ratio, points=list(FAULT_POINTS), max_step=4)  # type: ignore[arg-type]
    return fleet.model_copy(
        update={"store": fleet.store.model_copy(update={"url": redis_url}), "faults": faults}
    )


async def drive(
    handle: Any, reqs: list[RunInput], errors: list[str], answered: list[int] | None = None
) -> dict[str, Any]:
    """Send a session's runs one after another; a clear error is answered by sending the run again."""
    results: dict[str, Any] = {}
    for req in reqs:
        for _attempt in range(10):
            try:
                results[req.run_id] = await handle.run.remote(req)
                break
            except RaygentError as exc:  # e.g. Redis restarting: the same request resumes the run
                errors.append(f"{type(exc).__name__}: {exc.detail}"[:200])
                await asyncio.sleep(0.5)
            except Exception as exc:
                results[req.run_id] = exc
                break
        if answered is not None:
            answered[0] += 1
    return results


async def report_progress(answered: list[int], total: int, errors: list[str], every_s: float = 10.0) -> None:
    """A line on stderr every ``every_s`` while runs are answered (a 1000-run chaos takes ~25 minutes)."""
    start = time.monotonic()
    while answered[0] < total:
        await asyncio.sleep(every_s)
        print(
            f"chaos: {answered[0]}/{total} runs answered, {len(errors)} clear errors sent again, "
            f"{time.monotonic() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )


async def restart_redis(server: RedisServer, times: int, span_s: float, rng: random.Random) -> int:
    done, start = 0, time.monotonic()
    for at in sorted(rng.uniform(0.1, 0.9) * span_s for _ in range(times)):
        await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
        server.stop(kill=True)
        await asyncio.sleep(0.3)
        server.start()
        done += 1
    return done


async def verify(fleet: Fleet, results: dict[str, Any]) -> dict[str, Any]:
    store = open_store(fleet)
    assert isinstance(store, RedisStore)
    with sqlite3.connect(fleet.state_path("refund_desk.db")) as conn:
        refunds = Counter(r[0] for r in conn.execute("SELECT run_id FROM refunds"))
        notes = Counter(r[0] for r in conn.execute("SELECT run_id FROM notifications"))
    lost = [r for r, out in results.items() if not isinstance(out, RunOutput)]
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    for run_id, out in results.items():
        if not isinstance(out, RunOutput):
            continue
        statuses[out.status] += 1
        record = await store.get_run(run_id)
        refundable = int(run_id.rsplit("_", 1)[1]) % 10 != 0
        if record is None or record.status != out.status:
            problems.append(f"{run_id}: stored run does not match its answer")
        elif out.status == "completed":
            if refunds[run_id] != int(refundable) or notes[run_id] != int(refundable):
                problems.append(f"{run_id}: {refunds[run_id]} refunds, {notes[run_id]} notifications")
        elif out.status == "needs_approval":
            effect = await store.get_effect(f"{run_id}:s3:c0")
            checkpoint = await store.get_checkpoint(checkpoint_key("desk", record.session_id))
            kept = checkpoint is not None and run_id.encode() in checkpoint.base + b"".join(checkpoint.deltas)
            if effect is None or effect.status != "needs_approval" or not kept:
                problems.append(f"{run_id}: parked without an in-doubt effect or without its progress")
        else:
            problems.append(f"{run_id}: ended {out.status}: {out.error}")
    audit = await store.verify_audit()
    await store.close()
    return {
        "lost_runs": len(lost),
        "lost_examples": [f"{r}: {results[r]!r}"[:200] for r in lost[:5]],
        "statuses": dict(statuses),
        "duplicated_refunds": sum(1 for n in refunds.values() if n > 1),
        "duplicated_notifications": sum(1 for n in notes.values() if n > 1),
        "problems": problems[:20],
        "problem_count": len(problems),
        "audit_ok": audit.ok,
        "audit_records": audit.records_checked,
    }


async def chaos(args: argparse.Namespace) -> dict[str, Any]:
    from raygent.serve.runtime import start_local, stop_local

    work = Path(tempfile.mkdtemp(prefix="raygent-chaos-"))
    server = RedisServer(work / "redis", appendfsync="always").start()
    fleet = build_fleet(work / "state", server.url, args.seed, args.kill_ratio)
    rng = random.Random(args.seed)
    started = time.monotonic()
    local = start_local(fleet, http=False, num_cpus=2)
    ready_s = time.monotonic() - started
    handle = local.agent_handle("desk")
    # The order number is the run id's suffix, so the checker knows which orders are refundable.
    orders = [rng.randint(1, 99_999) for _ in range(args.runs)]
    reqs = [
        RunInput(
            run_id=f"chaos_{n:05d}_{order}",
            agent="desk",
            input=f"please refund order {order}",
            session_id=f"s{n % args.sessions}",
            deadline_ts=time.time() + 3600,
        )
        for n, order in enumerate(orders)
    ]
    errors: list[str] = []
    per_session = [reqs[i :: args.sessions] for i in range(args.sessions)]
    t0 = time.monotonic()
    expected_s = max(10.0, args.runs * 0.05)
    answered = [0]
    progress = asyncio.ensure_future(report_progress(answered, args.runs, errors))
    parts, restarts = await asyncio.gather(
        asyncio.gather(*(drive(handle, chunk, errors, answered) for chunk in per_session)),
        restart_redis(server, args.redis_restarts, expected_s, rng),
    )
    progress.cancel()
    runs_s = time.monotonic() - t0
    results = {k: v for part in parts for k, v in part.items()}
    summary = await verify(fleet, results)
    spec = fleet.faults
    assert spec is not None
    markers = sorted(p.name for p in fleet.state_path(spec.marker_dir).glob("*"))
    summary.update(
        runs=args.runs,
        sessions=args.sessions,
        seed=args.seed,
        kill_ratio=args.kill_ratio,
        kills_planned=sum(plan_for(spec, r.run_id) is not None for r in reqs),
        kills_fired=len(markers),
        kills_by_point=dict(Counter(m.split(".")[1] for m in markers)),
        redis_restarts=restarts,
        clear_errors_then_resumed=len(errors),
        error_examples=sorted(set(errors))[:5],
        deploy_s=round(ready_s, 1),
        runs_wall_s=round(runs_s, 1),
    )
    stop_local()
    server.stop()
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    summary = asyncio.run(chaos(args))
    ok = (
        summary["lost_runs"] == 0
        and summary["duplicated_refunds"] == 0
        and summary["duplicated_notifications"] == 0
        and summary["problem_count"] == 0
        and summary["audit_ok"]
    )
    summary["ok"] = ok
    print(json.dumps(summary, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
