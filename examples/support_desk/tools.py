"""Tools of the support-desk example: an order lookup over a bundled data set and a refund that writes
to the example's own ledger (a SQLite table), keyed by the call's idempotency key so that a retried call
refunds once."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import Any

from raygent.integrations import ToolContext

_ORDERS = Path(__file__).with_name("orders.json")


@lru_cache(maxsize=1)
def _orders() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(_ORDERS.read_text())
    return data


def lookup_order(ctx: ToolContext, *, order_id: str) -> dict[str, Any]:
    order = _orders().get(order_id)
    if order is None:
        return {"found": False, "order_id": order_id}
    return {"found": True, **order, "refundable": order["status"] == "delivered"}


def _ledger(ctx: ToolContext) -> sqlite3.Connection:
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(ctx.state_dir / "ledger.db", timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS refunds (idempotency_key TEXT PRIMARY KEY, refund_id TEXT NOT NULL,"
        " order_id TEXT NOT NULL, amount_usd REAL NOT NULL, reason TEXT, agent TEXT, run_id TEXT, ts REAL)"
    )
    return conn


def issue_refund(ctx: ToolContext, *, order_id: str, amount_usd: float, reason: str = "") -> dict[str, Any]:
    order = _orders().get(order_id)
    if order is None:
        raise ValueError(f"order {order_id} does not exist")
    if amount_usd > order["total_usd"]:
        raise ValueError(f"refund of {amount_usd} exceeds the {order['total_usd']} paid for order {order_id}")
    refund_id = "rf_" + ctx.idempotency_key.replace(":", "_")[-24:]
    with closing(_ledger(ctx)) as conn, conn:
        conn.execute(
            "INSERT OR IGNORE INTO refunds VALUES (?,?,?,?,?,?,?,?)",
            (
                ctx.idempotency_key,
                refund_id,
                order_id,
                amount_usd,
                reason,
                ctx.agent,
                ctx.run_id,
                time.time(),
            ),
        )
        row = conn.execute(
            "SELECT refund_id, amount_usd FROM refunds WHERE idempotency_key=?", (ctx.idempotency_key,)
        ).fetchone()
    return {"refund_id": row[0], "order_id": order_id, "amount_usd": row[1], "status": "issued"}
