"""Signed alert webhooks: the detector's ``alert`` action.

Deliveries are signed like raygent's run callbacks, after the Standard Webhooks scheme
(https://www.standardwebhooks.com/): ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``), so a receiver can check origin and freshness.
The key comes from an environment variable, never from the fleet file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

import httpx

from raygent.core.clock import Clock
from raygent.core.ids import new_id
from raygent.core.obsconfig import DetectorActionsSpec

__all__ = ["AlertSender", "alert_signature"]


def alert_signature(secret: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one alert delivery."""
    mac = hmac.new(secret, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class AlertSender:
    """Posts alerts to the configured webhook; one attempt each (the detection is audited either way).

    Args:
        spec: The detector's actions section.
        clock: Time source for the timestamp header.
        transport: httpx transport seam for tests (default: real network).
    """

    def __init__(
        self, spec: DetectorActionsSpec, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._transport = transport

    async def send(self, alert: dict[str, Any]) -> dict[str, Any]:
        """Deliver ``alert``; returns what happened (for the audit record), never raises."""
        if self._spec.webhook_url is None:
            return {"delivered": False, "reason": "no webhook_url configured"}
        secret = os.environ.get(self._spec.webhook_secret_env, "")
        if not secret:
            return {
                "delivered": False,
                "reason": f"{self._spec.webhook_secret_env} is not set; not sent unsigned",
            }
        body = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
        delivery_id, ts = new_id("alrt"), int(self._clock.now())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": alert_signature(secret.encode(), delivery_id, ts, body),
        }
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=self._spec.webhook_timeout_s
            ) as client:
                response = await client.post(self._spec.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return {"delivered": False, "delivery_id": delivery_id, "reason": type(exc).__name__}
        return {"delivered": response.is_success, "delivery_id": delivery_id, "status": response.status_code}
