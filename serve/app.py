"""The deployment graph of a fleet: ingress → one deployment per agent → router and gateway.

Every deployment sets ``max_ongoing_requests`` and ``max_queued_requests`` explicitly (Serve's default
of 5 ongoing requests collapses throughput under concurrency) and a fractional ``num_cpus`` so a whole
fleet fits on a small machine.
"""

from __future__ import annotations

from ray import serve
from ray.serve.deployment import Application

from raygent.actors.agent import AgentActor
from raygent.core.config import Fleet
from raygent.governance.gateway_actor import GatewayActor, agent_deployment_name
from raygent.router.actor import RouterActor
from raygent.serve.ingress import Ingress

__all__ = ["build_app"]

# The router and gateway multiplex every agent's calls: their bounds are the sum of the agents'.


def build_app(fleet: Fleet, *, app_name: str | None = None) -> Application:
    """The Serve application for ``fleet`` (named ``app_name``, default the fleet's name)."""
    name = app_name or fleet.name
    server = fleet.server
    fanout = sum(a.max_ongoing_requests for a in fleet.agents.values())
    router = serve.deployment(
        name="router",
        max_ongoing_requests=max(fanout, 1),
        max_queued_requests=-1,  # bounded upstream by the agents' own queues
        ray_actor_options={"num_cpus": server.router_num_cpus},
    )(RouterActor).bind(fleet)
    gateway = serve.deployment(
        name="gateway",
        num_replicas=server.gateway_replicas,
        max_ongoing_requests=max(fanout, 1),
        max_queued_requests=-1,
        ray_actor_options={"num_cpus": server.gateway_num_cpus},
    )(GatewayActor).bind(fleet, name)
    agents = {
        agent: serve.deployment(
            name=agent_deployment_name(agent),
            num_replicas=spec.replicas,
            max_ongoing_requests=spec.max_ongoing_requests,
            max_queued_requests=spec.max_queued_requests,
            ray_actor_options={"num_cpus": spec.num_cpus},
        )(AgentActor).bind(fleet, agent, router, gateway)
        for agent, spec in fleet.agents.items()
    }
    ingress_cls = serve.ingress()(Ingress)
    return serve.deployment(
        name="ingress",
        max_ongoing_requests=server.max_ongoing_requests,
        max_queued_requests=server.max_queued_requests,
        ray_actor_options={"num_cpus": server.num_cpus},
    )(ingress_cls).bind(fleet, agents)
