"""Batch test helpers: inputs built from the example's orders, and the example's refund ledger."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DIR = REPO / "examples" / "support_desk"
ORDERS = json.loads((EXAMPLE_DIR / "orders.json").read_text())
DELIVERED = sorted(k for k, v in ORDERS.items() if v["status"] == "delivered")
NOT_DELIVERED = sorted(k for k, v in ORDERS.items() if v["status"] != "delivered")


def mixed_lines(count: int, *, bad_every: int = 0) -> list[str]:
    """Refund requests for delivered orders (OpenAI format), status questions, greetings, and every
    ``bad_every``-th line malformed."""
    lines = []
    for i in range(count):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append('{"input": "unterminated' if i % 2 else "[]")
        elif i % 3 == 0:
            order = DELIVERED[i % len(DELIVERED)]
            body = {"messages": [{"role": "user", "content": f"Please refund order {order}"}]}
            lines.append(
                json.dumps(
                    {
                        "custom_id": f"refund-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
            )
        elif i % 3 == 1:
            lines.append(json.dumps({"input": f"where is order {NOT_DELIVERED[i % len(NOT_DELIVERED)]}?"}))
        else:
            lines.append(json.dumps({"input": "hello there"}))
    return lines


def expected_answer(line_text: str) -> str:
    """What the offline model must answer for one of :func:`mixed_lines` (a prefix of it)."""
    data = json.loads(line_text)
    text = data["body"]["messages"][-1]["content"] if "body" in data else data["input"]
    if text.startswith("Please refund order"):
        return "Refund rf_"
    if text.startswith("where is order"):
        order = ORDERS[text.split()[-1].rstrip("?")]
        return f"Order {order['order_id']} ({order['item']}) is {order['status']}."
    return "Hello! I can tell you where an order is"


def ledger_rows(state_dir: Path) -> list[tuple[str, str, str]]:
    """(idempotency_key, order_id, run_id) of every refund the example's tool wrote."""
    path = state_dir / "ledger.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT idempotency_key, order_id, run_id FROM refunds"))
