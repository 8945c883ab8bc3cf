"""The deployment graph of a fleet: ingress → one deployment per agent → router and gateway.

Every deployment sets ``max_ongoing_requests`` and ``max_queued_requests`` explicitly (Serve's default
of 5 ongoing requests collapses throughput under concurrency) and a fractional ``num_cpus`` so a whole
fleet fits on a small machine. Agents route by session (rendezvous hashing, see
:mod:`raygent.serve.affinity`) and autoscale when the fleet file says so.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve.deployment import Application

from raygent.core.config import AgentSpec, Fleet
from raygent.governance.gateway_actor import GatewayActor, agent_deployment_name
from raygent.router.vllm_engine import build_vllm_deployments
from raygent.serve.admission import AgentLimits
from raygent.serve.affinity import SessionAffinityRouter
from raygent.serve.ingress import Ingress
from raygent.serve.replicas import ServedAgent, ServedRouter
from raygent.serve.stateful import ServedStatefulAgent

__all__ = ["SESSION_ROUTER_PATH", "agent_options", "build_app", "ingress_max_ongoing"]

SESSION_ROUTER_PATH = f"{SessionAffinityRouter.__module__}.{SessionAffinityRouter.__name__}"


def agent_options(spec: AgentSpec) -> dict[str, Any]:
    """Serve options of one agent deployment: bounds, replicas or autoscaling, request router."""
    options: dict[str, Any] = {
        "max_ongoing_requests": spec.max_ongoing_requests,
        "max_queued_requests": spec.max_queued_requests,
        "ray_actor_options": {"num_cpus": spec.num_cpus},
    }
    scaling = spec.autoscaling
    if scaling is None:
        options["num_replicas"] = spec.replicas
    else:
        # Serve 2.60 wants metrics reported more often than the look-back window (its default is 10 s).
        options["autoscaling_config"] = {
            **scaling.model_dump(),
            "metrics_interval_s": min(10.0, scaling.look_back_period_s / 2),
        }
    if spec.session_affinity:
        # By import path (not the class), so a config generated from this graph stays plain data.
        options["request_router_config"] = {"request_router_class": SESSION_ROUTER_PATH}
    return options


def ingress_max_ongoing(fleet: Fleet) -> int:
    """Requests one ingress replica holds at once: its share of every run the agents can take, plus room
    to refuse the rest itself. Were it smaller, excess requests would wait in the HTTP proxy's queue,
    where they cannot be refused fast."""
    capacity = sum(AgentLimits.of(spec, fleet.server.replicas).capacity for spec in fleet.agents.values())
    return max(fleet.server.max_ongoing_requests, capacity + 256)


def _callback_env(fleet: Fleet) -> dict[str, str]:
    """Callback secrets set where the fleet is deployed, forwarded to the ingress replica's process."""
    names = {fleet.server.callbacks.secret_env, *fleet.server.callbacks.tenant_secret_envs.values()}
    return {name: os.environ[name] for name in sorted(names) if os.environ.get(name)}


def _vllm_args(fleet: Fleet) -> tuple[Any, ...]:
    """The fleet's ``kind: vllm`` models as Serve deployments, handed to the router (none: no argument)."""
    deployments = build_vllm_deployments(fleet)
    return (deployments,) if deployments else ()


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
    )(ServedRouter).bind(fleet, *_vllm_args(fleet))
    gateway = serve.deployment(
        name="gateway",
        num_replicas=server.gateway_replicas,
        max_ongoing_requests=max(fanout, 1),
        max_queued_requests=-1,
        ray_actor_options={"num_cpus": server.gateway_num_cpus},
    )(GatewayActor).bind(fleet, name)
    agents = {
        # A stateful agent's deployment is a stateless front to one actor per live session.
        agent: serve.deployment(name=agent_deployment_name(agent), **agent_options(spec))(
            ServedStatefulAgent if spec.stateful else ServedAgent
        ).bind(fleet, agent, router, gateway)
        for agent, spec in fleet.agents.items()
    }
    ingress_cls = serve.ingress()(Ingress)
    ingress_actor: dict[str, Any] = {"num_cpus": server.num_cpus}
    env = _callback_env(fleet)
    if env:
        ingress_actor["runtime_env"] = {"env_vars": env}
    return serve.deployment(
        name="ingress",
        num_replicas=server.replicas,
        max_ongoing_requests=ingress_max_ongoing(fleet),
        max_queued_requests=server.max_queued_requests,
        ray_actor_options=ingress_actor,
    )(ingress_cls).bind(fleet, agents)
