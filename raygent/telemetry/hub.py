"""The fleet's telemetry hub: where every process's metric events meet.

One hub per fleet. Processes push batched events (see :mod:`raygent.telemetry.client`); the hub folds
them into the fleet-wide :class:`~raygent.telemetry.metrics.MetricsAggregate` (served as Prometheus text
at ``/metrics``), runs the :class:`~raygent.telemetry.detector.AnomalyDetector` over them in arrival
order, carries out the configured actions, audits every detection and action, and answers each push with
the current :class:`~raygent.telemetry.controls.ControlSnapshot`, so a control reaches every process on
its next push.

Why a hub actor rather than Ray's own metrics (``ray.util.metrics``): Ray's metrics are scraped from
each node's metrics agent (the dashboard stack, off in embedded mode), aggregate only what Prometheus
computes later, and give the detector no event stream to act on. The hub is one small async actor with
no CPU reserved; pushes are batched (default once a second per process), so its load is a few calls per
second whatever the request rate.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from raygent.core.clock import Clock
from raygent.core.config import TelemetrySpec
from raygent.core.store.base import AuditDraft, Store
from raygent.telemetry.alerts import AlertSender
from raygent.telemetry.controls import ControlBoard, ControlSnapshot
from raygent.telemetry.detector import AnomalyDetector, Detection
from raygent.telemetry.metrics import Gauge, MetricEvent, MetricsAggregate

__all__ = ["DETECTOR_IDENTITY", "TelemetryHub"]

log = logging.getLogger("raygent.telemetry")

DETECTOR_IDENTITY = "raygent-detector"


class TelemetryHub:
    """Aggregate, detect, act. Plain async Python: a Ray actor wraps it, tests use it directly.

    Args:
        spec: The fleet's telemetry section.
        store: Where detections and actions are audited (``None``: not audited, e.g. a benchmark).
        clock: Time source for control expiry and records.
        alerts: Sends the ``alert`` action's webhook (default: built from ``spec.detector.actions``).
    """

    def __init__(
        self, spec: TelemetrySpec, *, store: Store | None, clock: Clock, alerts: AlertSender | None = None
    ) -> None:
        self._spec = spec
        self._store = store
        self._clock = clock
        self.metrics = MetricsAggregate()
        self.controls = ControlBoard()
        detector = spec.detector
        self._detector = AnomalyDetector(detector) if detector is not None else None
        self._alerts = alerts or (
            AlertSender(detector.actions, clock=clock) if detector is not None else None
        )
        self._recent: deque[dict[str, Any]] = deque(maxlen=detector.max_recent if detector else 1)
        self.pushes = 0

    async def push(
        self, events: Sequence[MetricEvent], gauges: Sequence[Gauge] = (), *, component: str = ""
    ) -> ControlSnapshot:
        """Take one batch from a process; returns the controls now in force."""
        self.pushes += 1
        self.metrics.set_gauges(gauges)
        detections: list[Detection] = []
        for event in events:
            self.metrics.add(event)
            if self._detector is not None:
                detections.extend(self._detector.observe(event))
        for detection in detections:
            await self._act(detection)
        self.controls.expire(self._clock.now())
        return self.controls.snapshot()

    def snapshot(self) -> ControlSnapshot:
        self.controls.expire(self._clock.now())
        return self.controls.snapshot()

    def render(self, extra_gauges: Iterable[Gauge] = ()) -> str:
        """Prometheus text of the whole fleet."""
        return self.metrics.render(extra_gauges)

    def recent(self) -> list[dict[str, Any]]:
        """The latest detections with the actions taken, newest last."""
        return list(self._recent)

    async def lift(self, *, agent: str | None = None, session_id: str | None = None) -> bool:
        """Lift controls by hand (an operator decided); audited."""
        removed = self.controls.lift(agent=agent, session_id=session_id)
        if removed:
            await self._audit(
                [
                    self._draft(
                        agent or "", session_id or "", "", {"stage": "anomaly_action", "action": "lift"}
                    )
                ]
            )
        return removed

    # ----------------------------------------------------------------------------------------- actions

    async def _act(self, d: Detection) -> None:
        assert self._spec.detector is not None  # only called when a detector exists
        actions = self._spec.detector.actions
        now = self._clock.now()
        results: list[dict[str, Any]] = []
        for action in d.actions:
            if action == "throttle":
                self.controls.throttle(d.agent, now + actions.throttle_s)
                result: dict[str, Any] = {"agent": d.agent, "until": now + actions.throttle_s}
            elif action == "reroute":
                self.controls.reroute(d.agent, actions.reroute_tier, now + actions.reroute_s)
                result = {"agent": d.agent, "tier": actions.reroute_tier, "until": now + actions.reroute_s}
            elif action == "quarantine":
                if not d.session_id:
                    result = {"skipped": "the detection has no session"}
                else:
                    self.controls.quarantine(d.session_id, now + actions.quarantine_s)
                    result = {"session_id": d.session_id, "until": now + actions.quarantine_s}
            else:
                assert self._alerts is not None
                result = await self._alerts.send({"type": "raygent.anomaly", **d.to_json()})
            self.metrics.note_anomaly(d.detector, action)
            results.append({"action": action, **result})
        if not d.actions:
            self.metrics.note_anomaly(d.detector, "none")
        self._recent.append({**d.to_json(), "results": results})
        drafts = [
            self._draft(
                d.agent,
                d.session_id,
                d.run_id,
                {"stage": "anomaly", "outcome": "detected", **d.to_json()},
            )
        ]
        drafts += [
            self._draft(
                d.agent,
                d.session_id,
                d.run_id,
                {"stage": "anomaly_action", "detector": d.detector, "key": d.key, **r},
            )
            for r in results
        ]
        await self._audit(drafts)

    def _draft(self, agent: str, session_id: str, run_id: str, payload: dict[str, Any]) -> AuditDraft:
        return AuditDraft(
            ts=self._clock.now(),
            kind="policy_decision",
            run_id=run_id,
            session_id=session_id,
            agent=agent,
            identity=DETECTOR_IDENTITY,
            payload=payload,
        )

    async def _audit(self, drafts: list[AuditDraft]) -> None:
        if self._store is None:
            return
        try:
            await self._store.append_audit(drafts)
        except Exception:  # a store outage must not stop detection; the action already took effect
            log.exception("could not audit %d anomaly record(s)", len(drafts))
