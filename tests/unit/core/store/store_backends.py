"""Open a fresh store of either backend for the contract tests (see conftest.py for the Redis server)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from raygent.core.clock import Clock
from raygent.core.store import RedisStore, SQLiteStore, Store

REDIS_URL_ENV = "RAYGENT_TEST_REDIS_URL"
BACKEND_NAMES = ("redis", "sqlite")


def open_backend(name: str, directory: Path, *, clock: Clock | None = None) -> Store:
    """A fresh, empty store of backend ``name``; a Redis store gets a namespace of its own."""
    if name == "sqlite":
        return SQLiteStore(directory / "state" / "raygent.db", clock=clock)
    if name == "redis":
        url = os.environ.get(REDIS_URL_ENV)
        if url is None:
            raise RuntimeError("request the redis_url fixture before opening a redis store")
        return RedisStore(url, namespace=f"{{test:{uuid.uuid4().hex}}}", clock=clock)
    raise ValueError(f"unknown backend {name!r}")
