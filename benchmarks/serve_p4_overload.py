"""P4: offered load at 2x measured capacity for a bounded time.

One agent (one model step, 50 ms simulated backend latency) with a tight bound (8 running + 8
queued). First a closed loop at the bound measures capacity C (answers per second); then an open loop
offers 2C for 20 s. Reported, in one run:

* goodput (answers per second during overload) against C — target >= 0.95 C;
* latency of the 503 refusals — target p99 < 50 ms;
* accepted runs lost — every 200's run must be ``completed`` in the store, and the store must hold no
  run for a refused request — target 0;
* the most runs ever in flight at the agent (admission high-water mark) against its bound.

    .venv/bin/python -m benchmarks.serve_p4_overload [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_common import free_port, one_agent_fleet, start_serve, stop_serve, write_result
from raygent.serve.loadgen import percentile, run_closed_loop, run_open_loop

ONGOING, QUEUED = 8, 8


def body(i: int) -> dict[str, Any]:
    return {"input": f"question {i}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the overload")
    args = parser.parse_args()
    from ray import serve

    from raygent.serve.app import build_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/agents/bench/runs"
    fleet = one_agent_fleet(
        "p4",
        Path(tempfile.mkdtemp(prefix="raygent-p4-")),
        latency_ms=50,
        max_ongoing_requests=ONGOING,
        max_queued_requests=QUEUED,
    )
    start_serve(port)
    try:
        serve.run(build_app(fleet), name=fleet.name, route_prefix="/")
        asyncio.run(run_closed_loop(url, clients=ONGOING, requests=50, body=body))  # warm up
        probe = asyncio.run(run_closed_loop(url, clients=ONGOING + QUEUED, duration_s=8, body=body))
        capacity = probe.summary(200)["per_s"]
        print(
            f"capacity {capacity:.1f} answers/s; offering {2 * capacity:.1f}/s for {args.seconds:g} s",
            flush=True,
        )
        with sqlite3.connect(fleet.state_path("raygent.db")) as conn:
            runs_before = int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        report = asyncio.run(
            run_open_loop(url, rate_per_s=2 * capacity, duration_s=args.seconds, body=body, keep_bodies=True)
        )
        stats = httpx.get(f"{base}/v1/serving/stats", timeout=10).json()["agents"]["bench"]
    finally:
        stop_serve()

    ok = [s for s in report.samples if s.status == 200]
    refused = [s for s in report.samples if s.status == 503]
    run_ids = [s.body["run_id"] for s in ok if s.body]
    with sqlite3.connect(fleet.state_path("raygent.db")) as conn:
        statuses = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
    completed = sum(1 for r in run_ids if statuses.get(r) == "completed")
    goodput = len(ok) / report.elapsed_s
    refusal_ms = [s.latency_s * 1000 for s in refused]
    result = {
        "bound": {"max_ongoing_requests": ONGOING, "max_queued_requests": QUEUED},
        "capacity_per_s": round(capacity, 2),
        "offered_per_s": round(len(report.samples) / report.elapsed_s, 2),
        "overload_s": args.seconds,
        "statuses": {str(k): v for k, v in report.statuses().items()},
        "goodput_per_s": round(goodput, 2),
        "goodput_ratio": round(goodput / capacity, 3),
        "answers_ms": {
            "p50": round(report.summary(200)["p50_ms"], 1),
            "p99": round(report.summary(200)["p99_ms"], 1),
        },
        "refusals_503_ms": {
            "count": len(refusal_ms),
            "p50": round(percentile(refusal_ms, 50), 1),
            "p99": round(percentile(refusal_ms, 99), 1),
            "max": round(max(refusal_ms), 1) if refusal_ms else None,
        },
        "accepted_runs_lost": len(ok) - completed,
        "runs_in_store_for_refused_requests": len(statuses) - runs_before - len(ok),
        "inflight_high_water": stats["high_water"],
        "inflight_bound": stats["capacity"],
        "targets": {"goodput_ratio_min": 0.95, "refusal_p99_ms_max": 50, "accepted_runs_lost": 0},
    }
    for key, value in result.items():
        print(f"{key:36} {value}")
    print(f"wrote {write_result('serve_p4_overload', result)}")


if __name__ == "__main__":
    main()
