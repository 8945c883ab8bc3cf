"""Rate limits: token buckets per caller/tenant/agent, and 429 + Retry-After over the HTTP API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import serve_in_process, tiny_fleet

from raygent.core.config import Fleet, RateLimitSpec
from raygent.core.errors import RateLimitedError
from raygent.core.fleetfile import check_fleet_file
from raygent.serve.ratelimit import RateLimiter

RUNS = "/v1/agents/a/runs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, **spec: object) -> RateLimiter:
    return RateLimiter({"a": RateLimitSpec.model_validate(spec)}, clock=clock)


def test_burst_then_the_rate_and_retry_after_is_the_time_to_the_next_token() -> None:
    clock = FakeClock()
    rates = limiter(clock, requests_per_s=0.5, burst=3)
    for _ in range(3):
        rates.take("a", caller="alice")
    with pytest.raises(RateLimitedError) as refused:
        rates.take("a", caller="alice")
    assert refused.value.status == 429 and refused.value.retry_after_s == 2.0
    clock.now += 1.0  # half a token: still refused, one more second to wait
    with pytest.raises(RateLimitedError) as again:
        rates.take("a", caller="alice")
    assert again.value.retry_after_s == 1.0
    clock.now += 1.0
    rates.take("a", caller="alice")  # refilled one token
    clock.now += 3600  # never more than the burst after a long pause
    for _ in range(3):
        rates.take("a", caller="alice")
    with pytest.raises(RateLimitedError):
        rates.take("a", caller="alice")
    assert rates.stats()["a"]["refused"] == 3


def test_buckets_per_caller_per_tenant_and_per_agent() -> None:
    clock = FakeClock()
    per_caller = limiter(clock, requests_per_s=1, burst=1)
    per_caller.take("a", caller="alice")
    per_caller.take("a", caller="bob")  # bob's own bucket
    with pytest.raises(RateLimitedError):
        per_caller.take("a", caller="alice")

    per_tenant = limiter(clock, requests_per_s=1, burst=1, per="tenant")
    per_tenant.take("a", caller="alice", tenant="acme")
    with pytest.raises(RateLimitedError):
        per_tenant.take("a", caller="bob", tenant="acme")  # same tenant, same bucket
    per_tenant.take("a", caller="carol", tenant="globex")

    per_agent = limiter(clock, requests_per_s=1, burst=1, per="agent")
    per_agent.take("a", caller="alice")
    with pytest.raises(RateLimitedError):
        per_agent.take("a", caller="zed", tenant="other")

    per_agent.take("unlimited", caller="alice")  # an agent without a limit is never refused
    per_agent.take("unlimited", caller="alice")


def test_the_number_of_buckets_is_bounded() -> None:
    clock = FakeClock()
    rates = RateLimiter({"a": RateLimitSpec(requests_per_s=1, burst=1)}, clock=clock, max_buckets=100)
    for n in range(10_000):
        rates.take("a", caller=f"caller-{n}")
    assert len(rates._buckets) == 100
    with pytest.raises(RateLimitedError):  # the most recent callers are still remembered
        rates.take("a", caller="caller-9999")


def test_agent_limit_overrides_the_server_default(tmp_path: Path) -> None:
    fleet = tiny_fleet(
        tmp_path, server={"rate_limit": {"requests_per_s": 100}}, rate_limit={"requests_per_s": 2, "burst": 5}
    )
    stats = RateLimiter.for_agents(fleet.agents, fleet.server.rate_limit).stats()
    assert stats == {"a": {"requests_per_s": 2, "burst": 5, "per": "caller", "refused": 0}}
    default = tiny_fleet(tmp_path, server={"rate_limit": {"requests_per_s": 2.5}})
    assert RateLimiter.for_agents(default.agents, default.server.rate_limit).stats()["a"]["burst"] == 3


def test_each_ingress_replica_keeps_its_share_of_an_in_memory_limit(tmp_path: Path) -> None:
    from raygent.serve.serving import open_rate_limits

    spec = RateLimitSpec(requests_per_s=3, burst=5)
    assert spec.share(1) is spec
    assert (spec.share(2).requests_per_s, spec.share(2).capacity) == (1.5, 3)
    assert spec.share(10).capacity == 1  # never an empty bucket
    fleet = tiny_fleet(tmp_path, server={"replicas": 2}, rate_limit={"requests_per_s": 3, "burst": 5})
    rates = open_rate_limits(fleet)
    assert isinstance(rates, RateLimiter)
    assert rates.stats()["a"] == {"requests_per_s": 1.5, "burst": 3, "per": "caller", "refused": 0}
    clock = FakeClock()
    limiter = RateLimiter({"a": spec.share(2)}, clock=clock)
    for _ in range(3):
        limiter.take("a", caller="c")
    with pytest.raises(RateLimitedError):
        limiter.take("a", caller="c")


def test_bad_rate_limits_are_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: f\nmodels: {m: {kind: offline}}\nprompts: {p: {versions: {'1': x}}}\n"
        "agents:\n  a:\n    identity: svc-a\n    prompt: p@1\n"
        "    rate_limit: {requests_per_s: 0, per: everyone}\n"
    )
    fleet, issues = check_fleet_file(path)
    assert fleet is None
    assert {(i.line, i.message.split(":")[0]) for i in issues} == {
        (8, "agents.a.rate_limit.requests_per_s"),
        (8, "agents.a.rate_limit.per"),
    }, issues


async def test_over_the_limit_is_429_with_retry_after_and_leaves_no_run(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet: Fleet = tiny_fleet(tmp_path, rate_limit={"requests_per_s": 0.01, "burst": 2})
    async with serve_in_process(fleet, tracer_provider) as served:
        ok = [await served.client.post(RUNS, json={"input": "hi"}) for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200]
        refused = await served.client.post(RUNS, json={"input": "hi"}, headers={"Idempotency-Key": '"k1"'})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        problem = refused.json()
        assert problem["type"].endswith("rate-limited") and "per caller" in problem["detail"]
        stats = (await served.client.get("/v1/serving/stats")).json()["rate_limits"]["a"]
    assert stats["refused"] == 1
    with sqlite3.connect(fleet.state_path("raygent.db")) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2  # the refused one left none
