"""One local Ray + Serve for the whole test session, serving the example fleet over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raygent.core.config import Fleet, TelemetrySpec
from raygent.core.fleetfile import load_fleet

EXAMPLE_FLEET = Path(__file__).resolve().parents[2] / "examples" / "support_desk" / "fleet.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServedFleet:
    fleet: Fleet
    base_url: str
    app_name: str


@pytest.fixture(scope="session")
def served_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFleet]:
    from raygent.serve.runtime import start_local, stop_local

    state = tmp_path_factory.mktemp("served")
    fleet = load_fleet(EXAMPLE_FLEET, state_dir=state)
    fleet = fleet.model_copy(update={"telemetry": TelemetrySpec(exporter="jsonl")})
    # Logical CPUs, not cores: several test apps stay deployed on this one Ray for the whole session and
    # their fractional, mostly idle replicas must all be schedulable (2 logical CPUs ran out and hung).
    local = start_local(fleet, port=free_port(), num_cpus=16)
    assert local.base_url is not None
    try:
        yield ServedFleet(fleet=fleet, base_url=local.base_url, app_name=local.app_name)
    finally:
        stop_local()
