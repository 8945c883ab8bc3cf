"""The refund desk deployed for the chaos tests: what the tests get from the ``chaos_desk`` fixture."""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygent.core.config import Fleet
from raygent.core.store.redis_server import RedisServer

REFUND_DESK = Path(__file__).resolve().parents[3] / "examples" / "refund_desk" / "fleet.yaml"
APP_NAME = "refund-desk-chaos"
CHAOS_SEED = 20261125


@dataclass(frozen=True)
class ChaosDesk:
    fleet: Fleet
    redis: RedisServer
    app_name: str

    def handle(self, agent: str) -> Any:
        from ray import serve

        return serve.get_deployment_handle(f"agent-{agent}", app_name=self.app_name)

    def effects(self) -> dict[str, Counter[str]]:
        """Per run id: refunds written and notifications sent (the tools' own ledger)."""
        path = self.fleet.state_path("refund_desk.db")
        with sqlite3.connect(path) as conn:
            refunds = Counter(r[0] for r in conn.execute("SELECT run_id FROM refunds"))
            notes = Counter(r[0] for r in conn.execute("SELECT run_id FROM notifications"))
        return {"refunds": refunds, "notifications": notes}

    def kills(self) -> list[str]:
        """Names of the fault markers: one per SIGKILL that fired."""
        spec = self.fleet.faults
        assert spec is not None
        return sorted(p.name for p in self.fleet.state_path(spec.marker_dir).glob("*"))
