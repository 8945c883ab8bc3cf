"""The governed support desk deployed beside the example fleet on the session's Ray + Serve, under the
route prefix ``/governed`` (a second Serve application, its own state directory)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.governance.auth import LocalIssuer, build_verifier

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"
APP = "governed"
PREFIX = "/governed"


@dataclass
class GovernedServe:
    fleet: Fleet
    base_url: str
    issuer: LocalIssuer

    def deploy(self) -> None:
        from ray import serve

        from raygent.serve.app import build_app

        serve.run(build_app(self.fleet, app_name=APP), name=APP, route_prefix=PREFIX)

    def restart(self) -> None:
        """Delete the application (every replica stops) and deploy it again from the fleet file."""
        from ray import serve

        serve.delete(APP)
        self.deploy()

    def auth(self, sub: str, *roles: str, customer: str | None = None) -> dict[str, str]:
        token = self.issuer.issue(subject=sub, roles=list(roles), ttl_s=600, end_user=customer)
        return {"authorization": f"Bearer {token}"}

    def ledger(self) -> list[tuple[Any, ...]]:
        path = self.fleet.state_path("ledger.db")
        if not path.exists():
            return []
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT order_id, amount_usd, run_id FROM refunds ORDER BY ts").fetchall()

    def reset_spending(self) -> None:
        """Tests share one fleet; each starts with the day's refund budget unspent."""
        with sqlite3.connect(self.fleet.state_path("governance.db")) as conn:
            conn.execute("DELETE FROM spend")


@pytest.fixture(scope="session")
def governed_serve(served_fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernedServe]:
    from ray import serve

    fleet = load_fleet(GOVERNED, state_dir=tmp_path_factory.mktemp("governed"))
    assert fleet.auth is not None
    _, issuer = build_verifier(
        fleet.auth, fleet_name=fleet.name, state_dir=fleet.state_path("."), clock=SystemClock()
    )
    assert issuer is not None
    served = GovernedServe(fleet, served_fleet.base_url + PREFIX, issuer)
    served.deploy()
    try:
        yield served
    finally:
        serve.delete(APP)
