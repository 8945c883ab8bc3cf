"""The refund desk (a stateful agent, exactly-once tools) on the session's Ray, with its own Redis.

Deployed as a second Serve application next to the session's example fleet (one Ray per pytest
process). Its store is a test-owned redis-server on a free port, with the append-only file fsynced on
every write so the tests can SIGKILL and restart it without losing acknowledged writes. The fleet's
``faults`` section SIGKILLs session actors and gateway replicas at seeded points of seeded runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from chaos_desk import APP_NAME, CHAOS_SEED, REFUND_DESK, ChaosDesk

from raygent.core.config import FAULT_POINTS, FaultSpec
from raygent.core.fleetfile import load_fleet
from raygent.core.store.redis_server import RedisServer


# Package scope: the app and its Redis go away after this directory's tests, so the session's Ray has
# its CPUs back for the tests that follow.
@pytest.fixture(scope="package")
def chaos_desk(served_fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosDesk]:
    from ray import serve

    from raygent.serve.app import build_app

    state = tmp_path_factory.mktemp("refund-desk")
    redis = RedisServer(state / "redis", appendfsync="always").start()
    fleet = load_fleet(REFUND_DESK, state_dir=state)
    faults = FaultSpec(seed=CHAOS_SEED, kill_ratio=0.3, points=list(FAULT_POINTS), max_step=4)  # type: ignore[arg-type]
    agents = dict(fleet.agents)
    # A second stateful agent that releases its session actors after a short idle time.
    agents["brief"] = agents["desk"].model_copy(update={"idle_release_s": 1.5, "identity": "svc-brief@acme"})
    fleet = fleet.model_copy(
        update={
            "store": fleet.store.model_copy(update={"url": redis.url}),
            # Small CPU reservations: this app shares the session's 2-CPU Ray with the other tests' apps.
            "server": fleet.server.model_copy(
                update={"num_cpus": 0.01, "router_num_cpus": 0.01, "gateway_num_cpus": 0.01}
            ),
            "faults": faults,
            "agents": agents,
        }
    )
    fleet.state_path(".").mkdir(parents=True, exist_ok=True)
    serve.run(build_app(fleet, app_name=APP_NAME), name=APP_NAME, route_prefix=None)
    try:
        yield ChaosDesk(fleet=fleet, redis=redis, app_name=APP_NAME)
    finally:
        serve.delete(APP_NAME)
        _kill_session_actors(APP_NAME)
        redis.stop()


def _kill_session_actors(app_name: str) -> None:
    """Session actors are detached (they outlive the deployment that made them): end this app's."""
    import ray

    from raygent.actors.session_actor import NAMESPACE

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(f"{app_name}/"):
            with contextlib.suppress(ValueError):  # released on its own meanwhile
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
