"""What the detector's actions change: throttled agents, rerouted agents, quarantined sessions.

The hub owns the state; every process holds the latest :class:`ControlSnapshot` it got back from its last
push (plain data, so it pickles across Ray processes) and consults it on each call: the router for
throttles and reroutes, the gateway for quarantines. An entry lapses on its own at ``until``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ControlBoard", "ControlSnapshot"]


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """Active controls at ``version``; each maps a subject to the epoch second its control lapses."""

    version: int = 0
    throttled: dict[str, float] = field(default_factory=dict)  # agent -> until
    rerouted: dict[str, tuple[str, float]] = field(default_factory=dict)  # agent -> (tier, until)
    quarantined: dict[str, float] = field(default_factory=dict)  # session id -> until

    def throttle_left_s(self, agent: str, now: float) -> float:
        """Seconds the agent stays throttled (0 when it is not)."""
        return max(0.0, self.throttled.get(agent, 0.0) - now)

    def reroute_tier(self, agent: str, now: float) -> str | None:
        tier, until = self.rerouted.get(agent, ("", 0.0))
        return tier if until > now else None

    def quarantined_until(self, session_id: str, now: float) -> float | None:
        until = self.quarantined.get(session_id)
        return until if until is not None and until > now else None

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "throttled": dict(self.throttled),
            "rerouted": {
                agent: {"tier": tier, "until": until} for agent, (tier, until) in self.rerouted.items()
            },
            "quarantined": dict(self.quarantined),
        }


class ControlBoard:
    """The hub's mutable controls; :meth:`snapshot` hands out immutable copies."""

    def __init__(self) -> None:
        self._version = 0
        self._throttled: dict[str, float] = {}
        self._rerouted: dict[str, tuple[str, float]] = {}
        self._quarantined: dict[str, float] = {}
        self._snapshot = ControlSnapshot()

    def throttle(self, agent: str, until: float) -> None:
        self._throttled[agent] = max(until, self._throttled.get(agent, 0.0))
        self._changed()

    def reroute(self, agent: str, tier: str, until: float) -> None:
        self._rerouted[agent] = (tier, until)
        self._changed()

    def quarantine(self, session_id: str, until: float) -> None:
        self._quarantined[session_id] = max(until, self._quarantined.get(session_id, 0.0))
        self._changed()

    def lift(self, *, agent: str | None = None, session_id: str | None = None) -> bool:
        """Remove the controls on ``agent`` and/or ``session_id``; whether anything was removed."""
        removed = False
        if agent is not None:
            removed |= self._throttled.pop(agent, None) is not None
            removed |= self._rerouted.pop(agent, None) is not None
        if session_id is not None:
            removed |= self._quarantined.pop(session_id, None) is not None
        if removed:
            self._changed()
        return removed

    def expire(self, now: float) -> None:
        """Forget lapsed entries so the snapshot stays small."""
        before = len(self._throttled) + len(self._rerouted) + len(self._quarantined)
        self._throttled = {k: v for k, v in self._throttled.items() if v > now}
        self._rerouted = {k: v for k, v in self._rerouted.items() if v[1] > now}
        self._quarantined = {k: v for k, v in self._quarantined.items() if v > now}
        if len(self._throttled) + len(self._rerouted) + len(self._quarantined) != before:
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._snapshot = ControlSnapshot(
            self._version, dict(self._throttled), dict(self._rerouted), dict(self._quarantined)
        )

    def snapshot(self) -> ControlSnapshot:
        return self._snapshot
