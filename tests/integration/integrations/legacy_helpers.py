"""Helpers of the legacy-integration tests: child processes, the example fleet with per-test names, an
in-process fleet that keeps its gateway (to close its broker connections), the order system's effects."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from raygent.actors.steploop import AgentLoop
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet, MqToolSpec, SoapToolSpec
from raygent.core.errors import NotFoundError
from raygent.core.fleetfile import load_fleet
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import SQLiteStore
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain
from raygent.integrations.resumer import ReplyResumer
from raygent.router.actor import build_model_chain
from raygent.router.router import Router

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "legacy_mainframe"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process whose stdout lines are watched (``ready``, ``committed <id>``)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float = 20.0) -> None:
        until = time.monotonic() + timeout_s
        while needle not in self.text():
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}):\n{self.text()}")
            if time.monotonic() > until:
                raise AssertionError(f"{needle!r} not seen in time:\n{self.text()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._fh.close()


def legacy_fleet(state: Path, *, queue: str, wsdl: str = "http://127.0.0.1:9/?wsdl", **mq: Any) -> Fleet:
    """The example fleet with this test's queue, SOAP address and MQ settings."""
    fleet = load_fleet(EXAMPLE / "fleet.yaml", state_dir=state)
    tools = dict(fleet.tools)
    for name in ("lookup_order", "lookup_order_async"):
        spec = tools[name]
        assert isinstance(spec, MqToolSpec)
        transport = spec.transport.model_copy(update={"request_queue": queue})
        tools[name] = spec.model_copy(update={"transport": transport, **mq.get(name, {})})
    soap = tools["customer_profile"]
    assert isinstance(soap, SoapToolSpec)
    tools["customer_profile"] = soap.model_copy(update={"wsdl": wsdl})
    return fleet.model_copy(update={"tools": tools})


class LegacyFleet:
    """The in-process fleet (same loops and chains as Serve) with the gateway kept, so its broker
    connections are closed after the test, and the reply resumer of its parking tools (if any)."""

    def __init__(self, fleet: Fleet, *, store: SQLiteStore, tracer_provider: TracerProvider) -> None:
        clock = SystemClock()
        tracer = tracer_provider.get_tracer("test")
        self.router = Router.from_fleet(fleet, clock=clock)
        model_chain = build_model_chain(self.router, store=store, tracer=tracer, clock=clock)
        self.gateway = ToolGateway(fleet, invoker=self, clock=clock)
        tools = build_tool_chain(self.gateway, store=store, tracer=tracer, clock=clock)
        self.loops = {
            name: AgentLoop(
                fleet, name, store=store, model=model_chain, tools=tools, tracer=tracer, clock=clock
            )
            for name in fleet.agents
        }
        self.fleet = fleet
        self.closed = False
        self.resumer = ReplyResumer.for_gateway(self.gateway, store=store, invoker=self, clock=clock)

    async def invoke(self, run: RunInput) -> RunOutput:
        loop = self.loops.get(run.agent)
        if loop is None:
            raise NotFoundError(f"there is no agent named {run.agent!r}")
        return await loop.run(run)

    async def run(self, agent: str, text: str) -> RunOutput:
        return await self.invoke(self.request(agent, text))

    def request(self, agent: str, text: str) -> RunInput:
        return RunInput(
            run_id=f"run_{uuid.uuid4().hex[:12]}",
            agent=agent,
            input=text,
            session_id=f"ses_{uuid.uuid4().hex[:8]}",
            deadline_ts=time.time() + self.fleet.agents[agent].deadline_s,
        )

    async def aclose(self) -> None:
        if self.closed:  # a test that restarts the fleet closes it itself; the fixture again after
            return
        self.closed = True
        if self.resumer is not None:
            self.resumer.stop()
        await self.gateway.aclose()  # stops consuming replies first: nothing new to resume
        if self.resumer is not None:
            await self.resumer.drain()
        await self.router.aclose()


def inquiries(state: Path, message_id: str | None = None) -> int:
    """Effects the order system committed (all, or for one message id)."""
    import sqlite3

    with sqlite3.connect(state / "order_system.db") as conn:
        if message_id is None:
            return int(conn.execute("SELECT count(*) FROM inquiries").fetchone()[0])
        return int(
            conn.execute("SELECT count(*) FROM inquiries WHERE message_id=?", (message_id,)).fetchone()[0]
        )


async def until(predicate: Any, *, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
    """Poll until ``predicate()`` (an async callable) is true; fail clearly if it never becomes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(poll_s)
