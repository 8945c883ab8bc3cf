"""Store backends for the contract tests: SQLite in a temp dir, Redis on a test-owned redis-server.

The Redis server runs on a free loopback port for the whole test session; each store gets its own key
namespace (store_backends.open_backend), so tests never see each other's keys nor the shared Redis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from store_backends import REDIS_URL_ENV

from raygent.core.store.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-unit")).start()
    # The hypothesis machine builds stores from a plain factory; it finds the server through this.
    os.environ[REDIS_URL_ENV] = server.url
    try:
        yield server.url
    finally:
        os.environ.pop(REDIS_URL_ENV, None)
        server.stop()
