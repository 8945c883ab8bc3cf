"""The seed's burst: 500 customer inquiries arriving within 30 s against the example fleet.

1. Capacity probe: a closed loop of mixed inquiries measures what the fleet answers per second here.
2. The support agent's bound (running + queued runs) is sized from that capacity so a full queue drains
   within the interactive latency budget (Little's law: wait ≈ bound / throughput), and redeployed.
3. The burst: 500 inquiries within 30 s, front-loaded (250 in the first 5 s, 250 spread over 30 s);
   10 % are internal batch re-checks (priority batch), the rest customers (interactive) who send a
   2 s ``latency_budget_ms``: the ingress refuses at once what it could not answer in time.

Reports every status, latency of answers and of refusals, the share of interactive answers within 2 s,
and checks that every accepted inquiry was answered and its run is completed in the store.

    .venv/bin/python -m benchmarks.serve_burst
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.serve_common import free_port, start_serve, stop_serve, write_result
from raygent.serve.loadgen import LoadReport, Sample, percentile, run_closed_loop, run_open_loop

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_desk" / "fleet.yaml"
BUDGET_S = 2.0
INQUIRIES = [
    "where is order {n}?",
    "hello there",
    "what is the status of order {n}",
    "refund order {n}, it arrived broken",
    "when will order {n} arrive?",
]


def inquiry(i: int) -> dict[str, Any]:
    text = INQUIRIES[i % len(INQUIRIES)].format(n=1001 + i % 20)
    if i % 10 == 9:  # an internal re-check: no latency budget, shed first under pressure
        return {"input": text, "session_id": f"ops-{i % 7}", "priority": "batch"}
    budget_ms = BUDGET_S * 1000
    return {
        "input": text,
        "session_id": f"cust-{i % 97}",
        "priority": "interactive",
        "latency_budget_ms": budget_ms,
    }


def stored_status(db: Path, run_ids: list[str]) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            f"SELECT run_id, status FROM runs WHERE run_id IN ({','.join('?' * len(run_ids))})", run_ids
        ).fetchall()
    return dict(rows)


def main() -> None:
    from ray import serve

    from raygent.core.fleetfile import load_fleet
    from raygent.serve.app import build_app

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/agents/support/runs"
    state = Path(tempfile.mkdtemp(prefix="raygent-burst-"))
    fleet = load_fleet(EXAMPLE, state_dir=state)
    start_serve(port)
    try:
        serve.run(build_app(fleet), name=fleet.name, route_prefix="/")
        asyncio.run(run_closed_loop(url, clients=8, requests=40, body=inquiry))  # warm up
        probe = asyncio.run(run_closed_loop(url, clients=16, duration_s=8, body=inquiry))
        capacity = probe.summary(200)["per_s"]
        bound = max(4, int(capacity * BUDGET_S * 0.6))
        ongoing = max(2, min(16, bound // 2))
        support = fleet.agents["support"].model_copy(
            update={"max_ongoing_requests": ongoing, "max_queued_requests": bound - ongoing}
        )
        fleet = fleet.model_copy(update={"agents": {**fleet.agents, "support": support}})
        serve.run(build_app(fleet), name=fleet.name, route_prefix="/")
        print(f"capacity {capacity:.1f} answers/s; support bound {bound} ({ongoing} running)")

        async def burst() -> LoadReport:
            spike, steady = await asyncio.gather(
                run_open_loop(
                    url,
                    rate_per_s=50,
                    requests=250,
                    duration_s=5.5,
                    body=inquiry,
                    keep_bodies=True,
                    poisson=False,
                ),
                run_open_loop(
                    url,
                    rate_per_s=250 / 30,
                    requests=250,
                    first_index=250,
                    duration_s=30.5,
                    body=inquiry,
                    keep_bodies=True,
                    poisson=False,
                ),
            )
            return LoadReport("open", max(spike.elapsed_s, steady.elapsed_s), spike.samples + steady.samples)

        report = asyncio.run(burst())
    finally:
        stop_serve()

    answered = [s for s in report.samples if s.status == 200]
    refused = [s for s in report.samples if s.status == 503]
    run_ids = [s.body["run_id"] for s in answered if s.body]
    stored = stored_status(fleet.state_path("raygent.db"), run_ids) if run_ids else {}
    interactive = [s for s in answered if not _is_batch(s)]
    within = sum(1 for s in interactive if s.latency_s <= BUDGET_S)
    completed = sum(1 for r in run_ids if stored.get(r) == "completed")
    result = {
        "inquiries": len(report.samples),
        "window_s": 30,
        "capacity_probe_per_s": round(capacity, 2),
        "support_bound": {"max_ongoing_requests": ongoing, "max_queued_requests": bound - ongoing},
        "statuses": {str(k): v for k, v in report.statuses().items()},
        "accepted": len(answered),
        "accepted_completed_in_store": completed,
        "accepted_lost": len(answered) - completed,
        "answers_ms": _lat(answered),
        "interactive_answers_ms": _lat(interactive),
        "interactive_within_budget": f"{within}/{len(interactive)}",
        "refusals_503_ms": _lat(refused),
        "refused_by_priority": {
            "interactive": sum(1 for s in refused if not _is_batch(s)),
            "batch": sum(1 for s in refused if _is_batch(s)),
        },
        "offered_by_priority": {
            "interactive": sum(1 for s in report.samples if not _is_batch(s)),
            "batch": sum(1 for s in report.samples if _is_batch(s)),
        },
    }
    for key, value in result.items():
        print(f"{key:28} {value}")
    print(f"wrote {write_result('serve_burst', result)}")


def _is_batch(sample: Sample) -> bool:
    # Spike arrivals are numbered 0..249, steady ones 250..499 (see burst()).
    return inquiry(sample.index)["priority"] == "batch"


def _lat(samples: list[Sample]) -> dict[str, float]:
    values = [s.latency_s * 1000 for s in samples]
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1) if values else float("nan"),
    }


if __name__ == "__main__":
    main()
