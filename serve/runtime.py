"""Start and stop a fleet on local Ray (embedded defaults): ``raygent up`` and ``raygent run`` use this.

Ray is kept on loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` must be in the environment before Ray is
imported, otherwise the node registers the machine's external address. Shutdown goes through
``serve.shutdown()`` then ``ray.shutdown()`` on SIGINT and SIGTERM, because Ray's own SIGTERM handling
can leave worker processes behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from raygent.core.config import Fleet
from raygent.core.errors import ConfigError

__all__ = ["LocalFleet", "install_shutdown_handlers", "port_is_free", "start_local", "stop_local"]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class LocalFleet:
    app_name: str
    base_url: str | None  # None when started without HTTP

    def agent_handle(self, agent: str) -> Any:
        from ray import serve

        from raygent.governance.gateway_actor import agent_deployment_name

        return serve.get_deployment_handle(agent_deployment_name(agent), app_name=self.app_name)


def _init_ray(num_cpus: int | None) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray prints usage-stats prompts and dashboard banners; neither is wanted for an embedded run.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=num_cpus,
            logging_level=logging.WARNING,
            log_to_driver=os.environ.get("RAYGENT_RAY_LOGS", "0") == "1",
        )


def start_local(
    fleet: Fleet,
    *,
    http: bool = True,
    host: str | None = None,
    port: int | None = None,
    num_cpus: int | None = None,
) -> LocalFleet:
    """Start local Ray and Serve and deploy ``fleet``; returns once every replica is ready."""
    host = host or fleet.server.host
    port = fleet.server.port if port is None else port
    if http and not port_is_free(host, port):
        raise ConfigError(f"port {port} on {host} is already in use; pick another with --port")
    fleet.state_path(".").mkdir(parents=True, exist_ok=True)
    _init_ray(num_cpus)
    from ray import serve

    from raygent.serve.app import build_app

    if http:
        serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
    else:
        serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    serve.run(build_app(fleet), name=fleet.name, route_prefix="/" if http else None)
    return LocalFleet(app_name=fleet.name, base_url=f"http://{host}:{port}" if http else None)


def stop_local() -> None:
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        ray.shutdown()


def install_shutdown_handlers(on_stop: Callable[[], None] = stop_local) -> None:
    """Stop Serve and Ray cleanly on SIGINT/SIGTERM, then exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        on_stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
