"""Admission control in the ingress: bounded in-flight runs per agent, batch shed before interactive.

Each agent has two limits on the runs this ingress replica has in flight to it (running or queued in
Serve):

* ``capacity`` — the agent's running slots at its largest size plus its queue
  (``max_ongoing_requests * replicas + max_queued_requests``). An *interactive* run is admitted while
  the agent holds fewer runs than that, the same bound Serve's handle enforces (Serve's
  ``BackPressureError`` stays as the backstop while autoscaling has fewer replicas up).
* ``batch_limit`` — by default the running slots of the agent's minimum size. A *batch* run is
  admitted only below it, so batch work never waits in the queue: under pressure it is refused first
  and the queue is kept for interactive runs.

A request that carries a latency budget is also refused when the runs ahead of it cannot be done
within that budget: the expected time to answer is ``(runs in flight + 1) / recent completions per
second`` (Little's law), so under a burst the queue holds only what can be answered in time and the
rest is told at once to retry, instead of being answered late.

A refusal is an :class:`~raygent.core.errors.OverloadedError` (503 with ``Retry-After``) raised before
anything is recorded, so a refused request leaves no run behind. Counters are per ingress replica,
like Serve's own queue bound (which is per handle); with ``server.replicas`` replicas each admits its
share of every limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from raygent.core.config import AgentSpec
from raygent.core.errors import OverloadedError

__all__ = ["PRIORITIES", "AdmissionController", "AgentLimits", "Priority", "Ticket"]

_RATE_WINDOW_S = 5.0  # completions counted for the throughput estimate
_MIN_COMPLETIONS = 10  # fewer than this in the window: no estimate, admit
_MAX_COMPLETIONS = 100_000

Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


@dataclass(frozen=True, slots=True)
class AgentLimits:
    capacity: int
    batch_limit: int

    @classmethod
    def of(cls, spec: AgentSpec, shares: int = 1) -> AgentLimits:
        """The limits the fleet file implies for one agent, for one of ``shares`` ingress replicas (Serve
        spreads requests evenly over them, so each holds its share and the sum stays the agent's)."""
        scaling = spec.autoscaling
        most = scaling.max_replicas if scaling else spec.replicas
        least = max(1, scaling.min_replicas) if scaling else spec.replicas
        capacity = spec.max_ongoing_requests * most + spec.max_queued_requests
        batch = spec.batch_max_inflight
        batch_limit = spec.max_ongoing_requests * least if batch is None else batch
        if shares > 1:
            capacity, batch_limit = -(-capacity // shares), max(1, -(-batch_limit // shares))
        return cls(capacity=capacity, batch_limit=min(capacity, batch_limit))

    def limit(self, priority: Priority) -> int:
        return self.capacity if priority == "interactive" else self.batch_limit


@dataclass(slots=True)
class _AgentLoad:
    inflight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    high_water: int = 0
    admitted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    shed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    shed_late: int = 0
    completions: deque[float] = field(default_factory=lambda: deque(maxlen=_MAX_COMPLETIONS))

    @property
    def total(self) -> int:
        return sum(self.inflight.values())


class Ticket:
    """One admitted run; :meth:`release` (or leaving the ``with`` block) frees its slot exactly once."""

    __slots__ = ("_controller", "_released", "agent", "priority")

    def __init__(self, controller: AdmissionController, agent: str, priority: Priority) -> None:
        self._controller = controller
        self._released = False
        self.agent = agent
        self.priority = priority

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._controller._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AdmissionController:
    """Counts in-flight runs per agent and class; refuses fast, or waits (for async dispatch).

    Args:
        limits: Limits per agent name.
        retry_after_s: ``Retry-After`` hint of a refusal.
    """

    def __init__(
        self,
        limits: Mapping[str, AgentLimits],
        *,
        retry_after_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._limits = dict(limits)
        self._loads = {agent: _AgentLoad() for agent in limits}
        self._retry_after_s = retry_after_s
        # Set (and replaced) whenever a slot frees, waking every waiter to re-check; made lazily so it
        # belongs to the replica's event loop.
        self._freed: asyncio.Event | None = None

    @classmethod
    def for_agents(
        cls, agents: Mapping[str, AgentSpec], *, retry_after_s: float, shares: int = 1
    ) -> AdmissionController:
        limits = {name: AgentLimits.of(spec, shares) for name, spec in agents.items()}
        return cls(limits, retry_after_s=retry_after_s)

    def limits(self, agent: str) -> AgentLimits:
        return self._limits[agent]

    def has_room(self, agent: str, priority: Priority) -> bool:
        return self._loads[agent].total < self._limits[agent].limit(priority)

    def expected_wait_s(self, agent: str) -> float | None:
        """Expected time until a run admitted now is answered, or None without enough history."""
        load = self._loads[agent]
        horizon = self._monotonic() - _RATE_WINDOW_S
        while load.completions and load.completions[0] < horizon:
            load.completions.popleft()
        if len(load.completions) < _MIN_COMPLETIONS:
            return None
        return (load.total + 1) / (len(load.completions) / _RATE_WINDOW_S)

    def try_admit(self, agent: str, priority: Priority, *, budget_s: float | None = None) -> Ticket:
        """Admit now or raise.

        Args:
            agent: The agent.
            priority: The run's class.
            budget_s: The caller's latency budget; refused when the expected wait is longer.

        Raises:
            OverloadedError: The agent holds as many runs as ``priority`` may use, or cannot answer
                within ``budget_s``.
        """
        load = self._loads[agent]
        if budget_s is not None:
            expected = self.expected_wait_s(agent)
            if expected is not None and expected > budget_s:
                load.shed[priority] += 1
                load.shed_late += 1
                raise OverloadedError(
                    f"agent {agent!r} would answer in about {expected:.1f} s, past the latency budget of "
                    f"{budget_s:g} s; retry shortly",
                    retry_after_s=self._retry_after_s,
                    extra={"agent": agent, "priority": priority, "expected_wait_s": round(expected, 3)},
                )
        if not self.has_room(agent, priority):
            load.shed[priority] += 1
            limit = self._limits[agent].limit(priority)
            raise OverloadedError(
                f"agent {agent!r} is at its limit of {limit} {priority} runs in flight; retry shortly",
                retry_after_s=self._retry_after_s,
                extra={"agent": agent, "priority": priority},
            )
        return self._take(agent, priority)

    async def admit_wait(self, agent: str, priority: Priority, *, timeout_s: float) -> Ticket:
        """Admit as soon as there is room, waiting at most ``timeout_s``.

        Raises:
            TimeoutError: No room within ``timeout_s``.
        """
        async with asyncio.timeout(max(0.0, timeout_s)):
            while not self.has_room(agent, priority):
                if self._freed is None:
                    self._freed = asyncio.Event()
                await self._freed.wait()
            return self._take(agent, priority)

    def _take(self, agent: str, priority: Priority) -> Ticket:
        load = self._loads[agent]
        load.inflight[priority] += 1
        load.admitted[priority] += 1
        load.high_water = max(load.high_water, load.total)
        return Ticket(self, agent, priority)

    def _release(self, ticket: Ticket) -> None:
        load = self._loads[ticket.agent]
        load.inflight[ticket.priority] -= 1
        load.completions.append(self._monotonic())
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()

    def stats(self) -> dict[str, Any]:
        """Per agent: limits, runs in flight by class, the most ever in flight, admitted and shed."""
        return {
            agent: {
                "capacity": self._limits[agent].capacity,
                "batch_limit": self._limits[agent].batch_limit,
                "inflight": dict(load.inflight),
                "high_water": load.high_water,
                "admitted": dict(load.admitted),
                "shed": dict(load.shed),
                "shed_past_budget": load.shed_late,
                "expected_wait_s": self.expected_wait_s(agent),
            }
            for agent, load in self._loads.items()
        }
