"""P1: one raygent agent step over HTTP vs a bare Ray Serve ingress → backend app, same offline model.

Both run side by side on one local Ray + Serve, in one run:

* bare: FastAPI ingress deployment → backend deployment that calls ``OfflineModel.complete``.
* bare with a relay: ingress → relay → backend, bare Serve with raygent's number of hops (the
  second ratio printed: what raygent's own work per run costs beyond the deployment graph's shape).
* raygent: the fleet's graph (ingress → agent → router) for an agent whose one step answers; with
  everything raygent does per run (run record, session, audit chain, spans when enabled).

For backend latency 0 and 50 ms and concurrency 1/8/32 it measures a closed loop for a fixed time and
prints p50/p99, throughput and the ratios raygent/bare. Targets: p50 <= 1.3x at 0 ms, <= 1.05x at 50 ms,
throughput >= 0.8x.

    .venv/bin/python -m benchmarks.serve_p1_overhead [--seconds 5]
"""

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from benchmarks.serve_common import ANSWER, free_port, one_agent_fleet, start_serve, stop_serve, write_result

LATENCIES_MS = (0, 50)
CONCURRENCY = (1, 8, 32)


def bare_app(latency_ms: float, *, relay: bool = False) -> Any:
    """Bare Serve: ingress → backend; with ``relay``, ingress → relay → backend (raygent's hop count:
    ingress → agent → router), which separates what the extra hop costs from what raygent's code costs."""
    # No `from __future__ import annotations` in this file: Serve pickles this locally defined class by
    # value, and FastAPI could not resolve postponed (string) annotations in the pickled copy.
    from ray import serve

    from raygent.core.config import OfflineModelSpec
    from raygent.core.messages import Message
    from raygent.router.model import ModelRequest
    from raygent.router.offline import OfflineModel

    spec = OfflineModelSpec(kind="offline", latency_ms=latency_ms, rules=[{"match": ".", "say": ANSWER}])

    @serve.deployment(max_ongoing_requests=64, max_queued_requests=256, ray_actor_options={"num_cpus": 0.1})
    class Backend:
        def __init__(self) -> None:
            self._model = OfflineModel("m", spec)

        async def complete(self, text: str) -> dict[str, Any]:
            messages = (
                Message(role="system", content="You are bench. Be brief."),
                Message(role="user", content=text),
            )
            resp = await self._model.complete(ModelRequest(messages=messages))
            return {"output": resp.text, "input_tokens": resp.usage.input_tokens}

    @serve.deployment(max_ongoing_requests=64, max_queued_requests=256, ray_actor_options={"num_cpus": 0.1})
    class Relay:
        def __init__(self, backend: Any) -> None:
            self._backend = backend

        async def complete(self, text: str) -> dict[str, Any]:
            result: dict[str, Any] = await self._backend.complete.remote(text)
            return result

    api = FastAPI()

    @serve.deployment(max_ongoing_requests=512, max_queued_requests=1024, ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(api)
    class Ingress:
        def __init__(self, backend: Any) -> None:
            self._backend = backend

        @api.post("/v1/agents/bench/runs")
        async def run(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            result: dict[str, Any] = await self._backend.complete.remote(body["input"])
            return result

    return Ingress.bind(Relay.bind(Backend.bind()) if relay else Backend.bind())


def measure(url: str, clients: int, seconds: float) -> dict[str, Any]:
    from raygent.serve.loadgen import run_closed_loop

    def body(i: int) -> dict[str, Any]:
        return {"input": f"question {i}"}

    asyncio.run(run_closed_loop(url, clients=clients, requests=max(20, clients * 3), body=body))  # warm up
    report = asyncio.run(run_closed_loop(url, clients=clients, duration_s=seconds, body=body))
    ok = report.summary(200)
    return {
        "requests": len(report.samples),
        "ok": int(ok["count"]),
        "p50_ms": round(ok["p50_ms"], 2),
        "p99_ms": round(ok["p99_ms"], 2),
        "throughput_per_s": round(ok["per_s"], 1),
    }


def _line(cell: dict[str, Any]) -> str:
    bare, rg, relay = cell["bare"], cell["raygent"], cell["bare_relay"]

    def side(name: str, m: dict[str, Any]) -> str:
        return f"{name} p50 {m['p50_ms']:7.2f} p99 {m['p99_ms']:7.2f} {m['throughput_per_s']:6.1f}/s"

    return (
        f"latency {cell['backend_latency_ms']:>2} ms c={cell['concurrency']:<2} | {side('bare', bare)} | "
        f"{side('raygent', rg)} | p50 x{cell['p50_ratio']:.2f} p99 x{cell['p99_ratio']:.2f} "
        f"tput x{cell['throughput_ratio']:.2f}\n"
        f"{'':21}| {side('relay', relay)} | raygent / bare with raygent's hops: "
        f"p50 x{cell['vs_relay']['p50_ratio']:.2f} tput x{cell['vs_relay']['throughput_ratio']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per cell and system")
    args = parser.parse_args()
    from ray import serve

    from raygent.serve.app import build_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state = Path(tempfile.mkdtemp(prefix="raygent-p1-"))
    start_serve(port)
    cells: list[dict[str, Any]] = []
    try:
        for latency in LATENCIES_MS:
            serve.run(bare_app(latency), name=f"bare-{latency}", route_prefix=f"/bare-{latency}")
            relay_app = bare_app(latency, relay=True)
            serve.run(relay_app, name=f"relay-{latency}", route_prefix=f"/relay-{latency}")
            fleet = one_agent_fleet(f"rg-{latency}", state / str(latency), latency_ms=latency)
            serve.run(build_app(fleet), name=fleet.name, route_prefix=f"/rg-{latency}")
            for clients in CONCURRENCY:
                bare = measure(f"{base}/bare-{latency}/v1/agents/bench/runs", clients, args.seconds)
                rg = measure(f"{base}/rg-{latency}/v1/agents/bench/runs", clients, args.seconds)
                relay = measure(f"{base}/relay-{latency}/v1/agents/bench/runs", clients, args.seconds)
                cell = {
                    "backend_latency_ms": latency,
                    "concurrency": clients,
                    "bare": bare,
                    "raygent": rg,
                    "p50_ratio": round(rg["p50_ms"] / bare["p50_ms"], 3),
                    "p99_ratio": round(rg["p99_ms"] / bare["p99_ms"], 3),
                    "throughput_ratio": round(rg["throughput_per_s"] / bare["throughput_per_s"], 3),
                    "bare_relay": relay,
                    "vs_relay": {
                        "p50_ratio": round(rg["p50_ms"] / relay["p50_ms"], 3),
                        "throughput_ratio": round(rg["throughput_per_s"] / relay["throughput_per_s"], 3),
                    },
                }
                cells.append(cell)
                print(_line(cell), flush=True)
            serve.delete(f"bare-{latency}")
            serve.delete(f"relay-{latency}")
            serve.delete(fleet.name)
    finally:
        stop_serve()
    targets = {"p50_ratio_at_0ms": 1.3, "p50_ratio_at_50ms": 1.05, "throughput_ratio_min": 0.8}
    path = write_result(
        "serve_p1_overhead", {"seconds_per_cell": args.seconds, "targets": targets, "cells": cells}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
