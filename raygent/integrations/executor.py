"""The protocol every non-python tool kind implements, and the registry the gateway dispatches through."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from raygent.core.clock import Clock
from raygent.core.config import Fleet, MqToolSpec, SoapToolSpec, TerminalToolSpec
from raygent.integrations.context import ToolContext

if TYPE_CHECKING:
    from raygent.integrations.mq.pending import PendingReplies

__all__ = ["ToolExecutor", "build_executors"]


class ToolExecutor(Protocol):
    """Executes one tool of a fleet. Built once per gateway replica; connects lazily on the first call."""

    async def call(self, ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float) -> Any:
        """Run the tool with schema-checked ``arguments`` within ``timeout_s``; returns JSON-safe data.

        Raises:
            ToolError: A subclass from :mod:`raygent.integrations.errors` saying what failed.
        """
        ...

    async def aclose(self) -> None: ...


def build_executors(fleet: Fleet, *, clock: Clock) -> dict[str, ToolExecutor]:
    """An executor for every ``mq``, ``soap`` and ``terminal`` tool of ``fleet``, by tool name.

    Nothing connects here: a broker or WSDL that is down fails the call that needs it, not the gateway.
    """
    # Imported here so a fleet without these kinds never imports aio-pika, zeep or pexpect.
    from raygent.integrations.mq.tool import MqToolExecutor
    from raygent.integrations.soap import SoapToolExecutor
    from raygent.integrations.terminal import TerminalToolExecutor

    base_dir, state_dir = Path(fleet.base_dir), fleet.state_path(".")
    executors: dict[str, ToolExecutor] = {}
    for name, spec in fleet.tools.items():
        if isinstance(spec, MqToolSpec):
            executors[name] = MqToolExecutor(
                name,
                spec,
                base_dir=base_dir,
                state_dir=state_dir,
                clock=clock,
                pending=_pending_store(fleet, name, spec),
            )
        elif isinstance(spec, SoapToolSpec):
            executors[name] = SoapToolExecutor(name, spec, base_dir=base_dir)
        elif isinstance(spec, TerminalToolSpec):
            executors[name] = TerminalToolExecutor(name, spec, base_dir=base_dir)
    return executors


def _pending_store(fleet: Fleet, tool: str, spec: MqToolSpec) -> PendingReplies | None:
    """Pending replies of an asynchronous MQ tool in the fleet's Redis when its store is Redis (gateway
    replicas on several machines share them); None: the executor's SQLite file in the state directory."""
    store = fleet.store
    if not spec.async_after_ms or store.kind != "redis" or store.url is None:
        return None
    from raygent.core.store.redis import redis_namespace
    from raygent.integrations.mq.pending_redis import RedisPendingReplies

    return RedisPendingReplies(
        store.url,
        namespace=f"{redis_namespace(store.tenant, fleet.name)}:{tool}",
        op_timeout_s=store.op_timeout_s,
    )
