"""A bounded HTTP load generator: closed loop (N clients, each sends its next request when the last is
answered) or open loop (requests start at a set rate whatever the answers do). Both stop at a request
count or a duration, whichever comes first; the open loop also caps requests in flight so the
generator's own memory stays bounded when the target stalls (those arrivals count as ``dropped``)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["LoadReport", "Sample", "percentile", "run_closed_loop", "run_open_loop"]

BodyFn = Callable[[int], dict[str, Any]]
ERROR = 0  # status of a request that got no HTTP answer (connect error, timeout)
DROPPED = -1  # open loop: not sent because max_inflight requests were outstanding


@dataclass(frozen=True, slots=True)
class Sample:
    start_s: float  # since the run started
    latency_s: float
    status: int
    index: int = -1  # the request's number (what the body function was called with)
    body: dict[str, Any] | None = None  # the answer's JSON, kept only when asked (keep_bodies)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class LoadReport:
    mode: str
    elapsed_s: float
    samples: list[Sample] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        return dict(sorted(Counter(s.status for s in self.samples).items()))

    def latencies_ms(self, status: int | None = None) -> list[float]:
        return [s.latency_s * 1000 for s in self.samples if status is None or s.status == status]

    def summary(self, status: int | None = None) -> dict[str, float]:
        lat = self.latencies_ms(status)
        return {
            "count": len(lat),
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else float("nan"),
            "per_s": len(lat) / self.elapsed_s if self.elapsed_s > 0 else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": len(self.samples),
            "statuses": {str(k): v for k, v in self.statuses().items()},
            "throughput_per_s": round(len(self.samples) / self.elapsed_s, 3) if self.elapsed_s else 0.0,
            "all": _rounded(self.summary()),
            "by_status": {str(k): _rounded(self.summary(k)) for k in self.statuses()},
        }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}


async def _one(
    client: httpx.AsyncClient,
    url: str,
    index: int,
    body: dict[str, Any],
    headers: dict[str, str],
    t0: float,
    keep_bodies: bool,
) -> Sample:
    start = time.perf_counter()
    try:
        resp = await client.post(url, json=body, headers=headers)
        status = resp.status_code
        data = resp.json() if keep_bodies and resp.headers.get("content-type", "").endswith("json") else None
    except httpx.HTTPError:
        status, data = ERROR, None
    end = time.perf_counter()
    return Sample(start - t0, end - start, status, index, data)


async def run_closed_loop(
    url: str,
    *,
    clients: int,
    body: BodyFn,
    requests: int | None = None,
    duration_s: float | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    keep_bodies: bool = False,
) -> LoadReport:
    """``clients`` concurrent clients, each sending its next request when its last one is answered."""
    if requests is None and duration_s is None:
        raise ValueError("give requests, duration_s or both: the load must be bounded")
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    samples: list[Sample] = []
    counter = iter(range(requests if requests is not None else 1 << 62))
    t0 = time.perf_counter()
    stop_at = t0 + duration_s if duration_s is not None else float("inf")

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                index = next(counter, None)
                if index is None:
                    return
                samples.append(await _one(client, url, index, body(index), headers or {}, t0, keep_bodies))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return LoadReport("closed", time.perf_counter() - t0, samples)


async def run_open_loop(
    url: str,
    *,
    rate_per_s: float,
    body: BodyFn,
    requests: int | None = None,
    duration_s: float | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    max_inflight: int = 2000,
    poisson: bool = True,
    seed: int = 0,
    keep_bodies: bool = False,
    first_index: int = 0,
) -> LoadReport:
    """Requests start at ``rate_per_s`` (Poisson arrivals by default) until the count or time is up."""
    if requests is None and duration_s is None:
        raise ValueError("give requests, duration_s or both: the load must be bounded")
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=min(max_inflight, 256))
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    stop_at = t0 + duration_s if duration_s is not None else float("inf")
    total = requests if requests is not None else 1 << 62

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def send(index: int) -> None:
            samples.append(await _one(client, url, index, body(index), headers or {}, t0, keep_bodies))

        next_at = t0
        for index in range(first_index, first_index + total):
            next_at += rng.expovariate(rate_per_s) if poisson else 1 / rate_per_s
            if next_at >= stop_at:
                break
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if len(tasks) >= max_inflight:
                samples.append(Sample(time.perf_counter() - t0, 0.0, DROPPED, index))
                continue
            task = asyncio.create_task(send(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return LoadReport("open", time.perf_counter() - t0, samples)
