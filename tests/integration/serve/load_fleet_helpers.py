"""The second, small fleet that this folder's conftest deploys on the session's Ray + Serve (its own
route prefix): tight bounds, a slow agent, a three-replica agent, an autoscaling agent and a stateful
agent on the slow model (one session actor per session)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raygent.core.config import Fleet

CALLBACK_SECRET = "integration-callback-secret"
LOAD_PREFIX = "/load-fleet"

_MODEL = {
    "kind": "offline",
    "rules": [{"match": ".", "say": "one two three four five six seven eight nine ten"}],
    "stream_chunk_tokens": 2,
}


def load_fleet_spec(state_dir: str) -> dict[str, Any]:
    agent = {"identity": "svc-load", "prompt": "p@1", "num_cpus": 0.05}
    return {
        "name": "load-fleet",
        "server": {
            "num_cpus": 0.05,
            "router_num_cpus": 0.05,
            "gateway_num_cpus": 0.05,
            "callbacks": {"allowed_hosts": ["127.0.0.1"]},  # the tests' receivers are on loopback
        },
        "models": {
            "fast": {**_MODEL, "tier": "standard"},
            "slow": {**_MODEL, "tier": "cheap", "latency_ms": 1000},
            "medium": {**_MODEL, "tier": "premium", "latency_ms": 400},
        },
        "prompts": {"p": {"versions": {"1": "You are $agent."}}},
        "agents": {
            # capacity 2 running + 2 queued; batch only while fewer than 1 are in flight
            "slow": {
                **agent,
                "tier": "cheap",
                "max_ongoing_requests": 2,
                "max_queued_requests": 2,
                "batch_max_inflight": 1,
            },
            "multi": {**agent, "replicas": 3, "max_ongoing_requests": 16, "max_queued_requests": 64},
            # Session actors release themselves soon after the tests: the deployment's deletion leaves
            # detached actors behind.
            "keeper": {**agent, "tier": "cheap", "stateful": True, "idle_release_s": 20},
            "auto": {
                **agent,
                "tier": "premium",
                "max_ongoing_requests": 4,
                "max_queued_requests": 64,
                "autoscaling": {
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "target_ongoing_requests": 1,
                    "upscale_delay_s": 0.5,
                    "downscale_delay_s": 3,
                    "look_back_period_s": 1,
                },
            },
        },
        "state_dir": state_dir,
    }


@dataclass(frozen=True)
class LoadFleet:
    fleet: Fleet
    base_url: str  # includes the route prefix
    app_name: str


def wait_for(predicate: Any, timeout_s: float = 60, every_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout_s`` passed; its last value either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def stream_sse(
    base_url: str, path: str, body: dict[str, Any], *, timeout_s: float = 60
) -> list[tuple[str, Any]]:
    """POST a run in stream mode with a real HTTP client; the parsed Server-Sent Events, once it ends."""
    import httpx

    from raygent.serve.sse import parse_events

    received: list[str] = []
    with (
        httpx.Client(base_url=base_url, timeout=timeout_s) as client,
        client.stream("POST", path, json=body) as resp,
    ):
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for chunk in resp.iter_text():
            received.append(chunk)
    return parse_events("".join(received))
