"""What an agent replica sends back to the ingress: a run's result with the replica that ran it, or the
events of a streamed run (:class:`~raygent.core.runs.RunEvent`); :func:`~raygent.core.streams.bridge`
turns a callback-style producer into such a stream. Both live in ``raygent.core`` because a stateful
session's actor streams them too; they are re-exported here for the serving layer."""

from __future__ import annotations

from dataclasses import dataclass

from raygent.core.runs import RunEvent, RunOutput
from raygent.core.streams import Final, bridge

__all__ = ["Final", "RunEvent", "ServedRun", "bridge"]


@dataclass(frozen=True, slots=True)
class ServedRun:
    """A finished run and the replica that ran it (for affinity checks and debugging)."""

    output: RunOutput
    replica: str | None = None
