"""Seeded fault injection for chaos tests: SIGKILL this process at a chosen point of a chosen run.

A fleet's ``faults`` section (never set in production) names a seed, the share of runs to kill and the
points where a kill may happen. Each run id maps deterministically to at most one ``(point, step)``, so
a chaos driver knows which runs were killed where, and a marker file makes each kill fire once even
though the restarted process meets the same point again when it resumes the run.

Points: ``after_model`` (the model answered, before the checkpoint), ``after_tool`` (the step's tool
calls and their side effects are done, before the checkpoint), ``after_checkpoint`` (in the agent's
process); ``after_intent`` (the effect ledger recorded the intent, the tool has not run) and
``after_effect`` (the tool ran, its outcome is not recorded yet) in the gateway's process.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from raygent.core.config import FaultSpec

__all__ = ["FaultHook", "FaultPlan", "plan_for"]

FaultPlan = tuple[str, int]  # (point, step)


def plan_for(spec: FaultSpec, run_id: str) -> FaultPlan | None:
    """The kill planned for ``run_id`` under ``spec``, or ``None`` (deterministic in seed and run id)."""
    digest = hashlib.sha256(f"{spec.seed}:{run_id}".encode()).digest()
    draw = int.from_bytes(digest[:4], "big") / 2**32
    if draw >= spec.kill_ratio:
        return None
    point = spec.points[int.from_bytes(digest[4:6], "big") % len(spec.points)]
    step = 1 + int.from_bytes(digest[6:8], "big") % spec.max_step
    return point, step


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultHook:
    """Fires the planned kill when a run reaches its point and step.

    Args:
        spec: The fleet's fault section.
        marker_dir: Where "already fired" markers go (shared by every process of the node).
        kill: What a kill does; SIGKILL of this process by default, an exception in in-process tests.
    """

    def __init__(self, spec: FaultSpec, marker_dir: Path, *, kill: Callable[[], None] = _sigkill) -> None:
        self._spec = spec
        self._marker_dir = Path(marker_dir)
        self._marker_dir.mkdir(parents=True, exist_ok=True)
        self._kill = kill

    def at(self, point: str, *, run_id: str, step: int) -> None:
        """Kill now if ``run_id`` planned its kill here and it has not fired yet."""
        if plan_for(self._spec, run_id) != (point, step):
            return
        marker = self._marker_dir / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.{point}.{step}"
        try:
            # O_EXCL: exactly one process ever creates the marker, so the kill fires once.
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        self._kill()

    @classmethod
    def for_fleet(cls, spec: FaultSpec | None, state_dir: Path) -> FaultHook | None:
        """The hook a fleet configures (its ``faults`` section), or ``None``."""
        if spec is None:
            return None
        return cls(spec, state_dir / spec.marker_dir)
