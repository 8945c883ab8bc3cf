"""Tools of the governed support desk: the example's refund, taking the item the customer names (so a
policy can check it against the order), plus the resource loader that gives Cedar the order's facts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from raygent.integrations import ToolContext


def _tools() -> Any:
    # tools.py sits beside this file and is not a package module; load it once under a private name.
    name = "raygent_example_support_desk_tools"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("tools.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def issue_refund(
    ctx: ToolContext, *, order_id: str, amount_usd: float | str, item: str = "", reason: str = ""
) -> dict[str, Any]:
    """Refund ``amount_usd`` of ``order_id``; ``item`` (when given) must be what the order holds."""
    order = _tools()._orders().get(order_id)
    if order is not None and item and item.strip().lower() != order["item"]:
        raise ValueError(f"order {order_id} holds a {order['item']}, not a {item}")
    result: dict[str, Any] = _tools().issue_refund(
        ctx, order_id=order_id, amount_usd=float(amount_usd), reason=reason
    )
    return result


def policy_resource(resource_type: str, resource_id: str) -> dict[str, Any] | None:
    """Attributes of a Cedar resource entity: an order's owner, total (cents), item and status."""
    if resource_type != "Order":
        return None
    order = _tools()._orders().get(resource_id)
    if order is None:
        return None
    return {
        "customer_id": order["customer_id"],
        "total_cents": round(order["total_usd"] * 100),
        "item": order["item"],
        "status": order["status"],
    }
