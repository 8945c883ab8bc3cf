"""Helpers for the serving tests: a callback receiver record, small fleets, the API over ASGI."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.store import open_store
from raygent.core.store.base import Store
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.callbacks import CallbackSender
from raygent.serve.serving import build_serving

SECRET = "test-callback-secret"


@asynccontextmanager
async def api_client(
    fleet: Fleet, store: Store, invoker: Any, tracer_provider: TracerProvider
) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGI to ``fleet``'s API with a plain invoker (no Ray, default serving parts)."""
    tracer = tracer_provider.get_tracer("api")
    service = ApiService(fleet, store=store, invoker=invoker, clock=SystemClock(), tracer=tracer)
    transport = httpx.ASGITransport(app=build_api(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@dataclass
class Receiver:
    """A real HTTP server on loopback that answers callbacks with the statuses it is told to."""

    url: str
    statuses: list[int] = field(default_factory=list)  # answers in order; 200 once exhausted
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    got: threading.Event = field(default_factory=threading.Event)


def tiny_fleet(
    tmp_path: Path, *, latency_ms: float = 0, server: dict[str, Any] | None = None, **agent: Any
) -> Fleet:
    """One agent ``a`` on an offline model that answers every message with ten words."""
    return Fleet.model_validate(
        {
            "name": "tiny",
            # The tests' callback receivers listen on loopback, which callbacks may not reach by default.
            "server": {"callbacks": {"allowed_hosts": ["127.0.0.1"]}, **(server or {})},
            "models": {
                "m": {
                    "kind": "offline",
                    "latency_ms": latency_ms,
                    "stream_chunk_tokens": 2,
                    "rules": [{"match": ".", "say": "one two three four five six seven eight nine ten"}],
                }
            },
            "prompts": {"p": {"versions": {"1": "x"}}},
            "agents": {"a": {"identity": "svc-a", "prompt": "p@1", **agent}},
            "state_dir": str(tmp_path),
        }
    )


@dataclass
class Served:
    client: httpx.AsyncClient
    service: ApiService
    store: Store


@asynccontextmanager
async def serve_in_process(
    fleet: Fleet, tracer_provider: TracerProvider, *, environ: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """The HTTP API over ASGI with every agent in process (no Ray)."""
    clock = SystemClock()
    tracer = tracer_provider.get_tracer("test")
    store = open_store(fleet)  # SQLite in the state dir, or the fleet's Redis
    port = LocalAgentPort(fleet, store=store, tracer=tracer, clock=clock)

    async def fast_sleep(_: float) -> None:
        return None

    sender = CallbackSender(
        fleet.server.callbacks,
        clock=clock,
        environ={"RAYGENT_CALLBACK_SECRET": SECRET} if environ is None else environ,
        sleep=fast_sleep,
    )
    serving = build_serving(
        fleet, store=store, agents=port, clock=clock, tracer=tracer, sender=sender, sweep_interval_s=0.05
    )
    service = ApiService(fleet, store=store, agents=port, clock=clock, tracer=tracer, serving=serving)
    transport = httpx.ASGITransport(app=build_api(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
        try:
            yield Served(client, service, store)
        finally:
            await serving.aclose()
            await port.aclose()
            await store.close()
