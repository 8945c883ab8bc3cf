"""The JSON shapes of a run as the HTTP API returns it (sync answers, ``GET /v1/runs/{id}``, callbacks)."""

from __future__ import annotations

from typing import Any

from raygent.core.store.asyncruns import AsyncRunEntry
from raygent.core.store.base import RunRecord
from raygent.serve.events import ServedRun

__all__ = ["FINAL_STATES", "async_view", "record_view", "served_view"]

FINAL_STATES = frozenset({"completed", "failed", "timed_out", "cancelled"})


def served_view(served: ServedRun) -> dict[str, Any]:
    return {**served.output.to_json(), "replica": served.replica}


def record_view(record: RunRecord) -> dict[str, Any]:
    data = record.to_dict()
    data["cost_usd"] = round(record.cost_usd, 8)
    data["usage"] = {
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "total_tokens": record.input_tokens + record.output_tokens,
    }
    return data


def async_view(entry: AsyncRunEntry) -> dict[str, Any]:
    """What the async ledger adds to a run: mode, priority, deadline and the callback's deliveries."""
    view: dict[str, Any] = {
        "mode": "async",
        "priority": entry.priority,
        "accepted_at": entry.accepted_at,
        "deadline_ts": entry.deadline_ts,
        "cancel_requested": entry.cancel_requested,
    }
    if entry.callback_url is not None:
        view["callback"] = {
            "url": entry.callback_url,
            "state": entry.delivery,
            "attempts": list(entry.deliveries),
        }
    return view
