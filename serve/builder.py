"""The fleet as a Ray Serve config file, for ``serve deploy`` on a running cluster (``raygent deploy``).

The config names :func:`app_builder` as its ``import_path`` with the fleet file in ``args``, so the
cluster builds the same deployment graph as ``raygent up``; the ``deployments`` section, generated from
that graph the way ``serve build`` does, carries every replica count and bound from the fleet file and
adds a custom resource (``agents`` by default, declared by the CPU worker type in ``cluster.yaml``) to
the agent, router and gateway deployments, so the autoscaler places them on agent nodes and starts such
nodes when they are missing. The ingress asks for no custom resource: it may run on the head, beside
Serve's HTTP proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve.deployment import Application

from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.serve.app import build_app

__all__ = ["BUILDER_IMPORT_PATH", "app_builder", "serve_config"]

BUILDER_IMPORT_PATH = "raygent.serve.builder:app_builder"


def app_builder(args: dict[str, str]) -> Application:
    """What ``serve deploy`` imports: the fleet's application, from ``args['fleet_file']`` (and
    optionally ``args['state_dir']``), paths as the cluster's nodes see them."""
    state_dir = args.get("state_dir")
    fleet = load_fleet(
        Path(args["fleet_file"]).expanduser(), state_dir=Path(state_dir).expanduser() if state_dir else None
    )
    return build_app(fleet)


def serve_config(
    fleet: Fleet,
    *,
    fleet_file: str,
    state_dir: str | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
    agents_resource: str | None = "agents",
    agents_resource_per_replica: float = 0.1,
) -> dict[str, Any]:
    """A ``ServeDeploySchema`` document (validated) for ``fleet``.

    Args:
        fleet: The loaded fleet (its deployments are built to read their options).
        fleet_file: The fleet file's path on the cluster (``~/fleet/fleet.yaml`` with cluster.yaml).
        state_dir: The state directory on the cluster (default: beside the fleet file).
        host: Where Serve's HTTP proxies listen.
        port: HTTP port (default: the fleet's ``server.port``).
        agents_resource: Custom resource the agent, router and gateway replicas ask for; None for none.
        agents_resource_per_replica: How much of it each replica takes.
    """
    from ray.serve._private.build_app import build_app as build_graph  # what `serve build` uses
    from ray.serve.deployment import deployment_to_schema
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    built = build_graph(build_app(fleet), name=fleet.name)
    deployments = []
    for deployment in built.deployments:
        schema = deployment_to_schema(deployment).model_dump(exclude_unset=True)
        if agents_resource and deployment.name != "ingress":
            options = schema.setdefault("ray_actor_options", {})
            options.setdefault("resources", {})[agents_resource] = agents_resource_per_replica
        deployments.append(schema)
    args = {"fleet_file": fleet_file}
    if state_dir:
        args["state_dir"] = state_dir
    app = ServeApplicationSchema(
        name=fleet.name, route_prefix="/", import_path=BUILDER_IMPORT_PATH, args=args, deployments=deployments
    ).model_dump(exclude_unset=True)
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port or fleet.server.port},
        "applications": [app],
    }
    ServeDeploySchema.model_validate(config)
    return config
