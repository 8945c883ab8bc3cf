"""Fixtures of the governance unit tests: the governed example fleet, a clock tests can move, and a
whole governed API in process (ASGI, no Ray)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from govkit import PG_DSN, GovernedClient, MovableClock, pg_schema
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.store import SQLiteStore, open_store
from raygent.governance.pgstate import PostgresGovernanceDB
from raygent.governance.state import GovernanceDB, GovernanceState
from raygent.serve.agents import LocalAgentPort
from raygent.serve.api import ApiService, build_api
from raygent.serve.auth import governed_api

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def open_gov_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], GovernanceState]]:
    """Opens this test's governance state, on each backend. Every call is a new handle on the same
    state, as another process (or, on PostgreSQL, another machine) would open it."""
    if request.param == "sqlite":
        yield lambda: GovernanceDB(tmp_path / "gov.db")
        return
    opened: list[PostgresGovernanceDB] = []
    with pg_schema() as schema:

        def open_postgres() -> GovernanceState:
            opened.append(PostgresGovernanceDB(PG_DSN, schema=schema))
            return opened[-1]

        yield open_postgres
        for db in opened:
            db.close()


@pytest.fixture
def governed_fleet(tmp_path: Path) -> Fleet:
    return load_fleet(GOVERNED, state_dir=tmp_path / "state")


@pytest.fixture
async def gov_store(governed_fleet: Fleet) -> AsyncIterator[SQLiteStore]:
    store = open_store(governed_fleet)
    assert isinstance(store, SQLiteStore)
    yield store
    await store.close()


@pytest.fixture
async def governed(
    governed_fleet: Fleet, gov_store: SQLiteStore, clock: MovableClock
) -> AsyncIterator[GovernedClient]:
    tracer = TracerProvider().get_tracer("governed")
    port = LocalAgentPort(governed_fleet, store=gov_store, tracer=tracer, clock=clock)
    service = ApiService(governed_fleet, store=gov_store, agents=port, clock=clock, tracer=tracer)
    app = build_api(service)
    gov = governed_api(service)
    assert gov is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
        yield GovernedClient(http, gov, governed_fleet, gov_store, clock)
    await port.router.aclose()
