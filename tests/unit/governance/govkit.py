"""Helpers of the governance tests (imported by name: the tests have no packages)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from raygent.core.config import Fleet
from raygent.core.store import SQLiteStore
from raygent.governance.pgstate import close_shared_governance_dbs
from raygent.serve.auth import GovernedApi

__all__ = ["PG_DSN", "GovernedClient", "MovableClock", "pg_schema"]

# The local PostgreSQL the tests use (trust auth); each test gets its own schema in it.
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class MovableClock:
    """Wall clock plus an offset a test can advance (approval timeouts, token expiry)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s


@dataclass
class GovernedClient:
    http: httpx.AsyncClient
    gov: GovernedApi
    fleet: Fleet
    store: SQLiteStore
    clock: MovableClock

    def token(self, sub: str, *roles: str, customer: str | None = None, ttl_s: int = 600) -> str:
        assert self.gov.issuer is not None
        return self.gov.issuer.issue(subject=sub, roles=list(roles), ttl_s=ttl_s, end_user=customer)

    def auth(self, sub: str, *roles: str, customer: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(sub, *roles, customer=customer)}"}

    def customer(self, customer_id: str) -> dict[str, str]:
        return self.auth(customer_id, "customer", customer=customer_id)

    async def ask(self, customer_id: str, text: str) -> httpx.Response:
        return await self.http.post(
            "/v1/agents/support/runs", json={"input": text}, headers=self.customer(customer_id)
        )


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL, dropped afterwards with this process' shared pools."""
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} ({exc}); the shared governance tests need it")
    name = f"rg_gov_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        close_shared_governance_dbs()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
