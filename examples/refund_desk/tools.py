"""Tools of the refund desk. ``issue_refund`` honours the idempotency key (INSERT OR IGNORE), so a retried
call refunds once; ``notify_customer`` does not (every call sends a message), which is why the effect
ledger never repeats it when its outcome is unknown. Both also log every invocation, so tests can tell a
retried call from a repeated effect."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from typing import Any

from raygent.integrations import ToolContext


def _db(ctx: ToolContext) -> sqlite3.Connection:
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(ctx.state_dir / "refund_desk.db", timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS refunds (idempotency_key TEXT PRIMARY KEY, refund_id TEXT NOT NULL,"
        " order_id TEXT NOT NULL, amount_usd REAL NOT NULL, run_id TEXT NOT NULL, ts REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS notifications (n INTEGER PRIMARY KEY AUTOINCREMENT,"
        " idempotency_key TEXT NOT NULL, refund_id TEXT NOT NULL, run_id TEXT NOT NULL, ts REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS invocations (n INTEGER PRIMARY KEY AUTOINCREMENT, tool TEXT NOT NULL,"
        " idempotency_key TEXT NOT NULL, run_id TEXT NOT NULL, ts REAL NOT NULL)"
    )
    return conn


def _log(conn: sqlite3.Connection, tool: str, ctx: ToolContext) -> None:
    conn.execute(
        "INSERT INTO invocations (tool, idempotency_key, run_id, ts) VALUES (?, ?, ?, ?)",
        (tool, ctx.idempotency_key, ctx.run_id, time.time()),
    )


def lookup_order(ctx: ToolContext, *, order_id: str) -> dict[str, Any]:
    number = int(order_id)
    # Every order exists; those ending in 0 were never delivered and cannot be refunded.
    return {
        "found": True,
        "order_id": order_id,
        "total_usd": float(10 + number % 90),
        "status": "processing" if number % 10 == 0 else "delivered",
        "refundable": number % 10 != 0,
    }


def issue_refund(ctx: ToolContext, *, order_id: str, amount_usd: float, reason: str = "") -> dict[str, Any]:
    refund_id = "rf_" + ctx.idempotency_key.replace(":", "_")[-28:]
    with closing(_db(ctx)) as conn, conn:
        _log(conn, "issue_refund", ctx)
        conn.execute(
            "INSERT OR IGNORE INTO refunds VALUES (?, ?, ?, ?, ?, ?)",
            (ctx.idempotency_key, refund_id, order_id, amount_usd, ctx.run_id, time.time()),
        )
        row = conn.execute(
            "SELECT refund_id, amount_usd FROM refunds WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
    return {"refund_id": row[0], "order_id": order_id, "amount_usd": row[1], "status": "issued"}


def notify_customer(ctx: ToolContext, *, order_id: str, refund_id: str) -> dict[str, Any]:
    with closing(_db(ctx)) as conn, conn:
        _log(conn, "notify_customer", ctx)
        conn.execute(
            "INSERT INTO notifications (idempotency_key, refund_id, run_id, ts) VALUES (?, ?, ?, ?)",
            (ctx.idempotency_key, refund_id, ctx.run_id, time.time()),
        )
    return {"notified": True, "order_id": order_id, "refund_id": refund_id}
