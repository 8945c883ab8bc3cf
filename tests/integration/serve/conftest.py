"""A second, small fleet on the session's Ray + Serve (its own route prefix); see load_fleet_helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from load_fleet_helpers import CALLBACK_SECRET, LOAD_PREFIX, LoadFleet, load_fleet_spec

from raygent.core.config import Fleet


@pytest.fixture(scope="session")
def load_fleet(served_fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadFleet]:
    """Deployed beside the example fleet on the same Serve instance (shares its HTTP port)."""
    from ray import serve

    from raygent.serve.app import build_app

    fleet = Fleet.model_validate(load_fleet_spec(str(tmp_path_factory.mktemp("load-fleet"))))
    # build_app forwards the callback secret from this environment to the ingress replica.
    os.environ["RAYGENT_CALLBACK_SECRET"] = CALLBACK_SECRET
    try:
        serve.run(build_app(fleet), name=fleet.name, route_prefix=LOAD_PREFIX)
    finally:
        os.environ.pop("RAYGENT_CALLBACK_SECRET", None)
    try:
        yield LoadFleet(fleet=fleet, base_url=served_fleet.base_url + LOAD_PREFIX, app_name=fleet.name)
    finally:
        serve.delete(fleet.name)
