"""The refund-desk example fleet for in-process tests: SQLite store, shortened tool timeouts, and a fault
hook that raises instead of killing the process (an in-process "crash")."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from raygent.core.config import FaultSpec, Fleet, StoreSpec
from raygent.core.fleetfile import load_fleet
from raygent.core.runs import RunInput

REFUND_DESK = Path(__file__).resolve().parents[3] / "examples" / "refund_desk" / "fleet.yaml"


class SimulatedCrash(BaseException):
    """Stands in for SIGKILL: a BaseException, so no `except Exception` in the code under test stops it."""


def crash() -> None:
    raise SimulatedCrash()


def refund_fleet(
    state_dir: Path, *, tool_timeout_s: float = 0.3, faults: FaultSpec | None = None, **agent: Any
) -> Fleet:
    """The refund desk on SQLite under ``state_dir``; ``agent`` overrides fields of the ``desk`` agent."""
    fleet = load_fleet(REFUND_DESK, state_dir=state_dir)
    tools = {
        name: tool.model_copy(update={"timeout_s": tool_timeout_s}) if tool.side_effect else tool
        for name, tool in fleet.tools.items()
    }
    agents = dict(fleet.agents)
    agents["desk"] = agents["desk"].model_copy(update=agent)
    return fleet.model_copy(update={"store": StoreSpec(), "tools": tools, "agents": agents, "faults": faults})


def run_input(text: str, *, run_id: str, session: str = "cust-1", agent: str = "desk") -> RunInput:
    return RunInput(run_id=run_id, agent=agent, input=text, session_id=session, deadline_ts=time.time() + 60)


def ledger(state_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What the refund desk's tools did: refunds, notifications and every invocation."""
    path = state_dir / "refund_desk.db"
    if not path.exists():
        return {"refunds": [], "notifications": [], "invocations": []}
    with sqlite3.connect(path) as conn:
        return {
            "refunds": conn.execute("SELECT run_id, idempotency_key, amount_usd FROM refunds").fetchall(),
            "notifications": conn.execute("SELECT run_id, idempotency_key FROM notifications").fetchall(),
            "invocations": conn.execute("SELECT tool, idempotency_key, run_id FROM invocations").fetchall(),
        }
