"""The credentials example's counterparts as real local HTTP services (token endpoint with 2-second
tokens, tickets API, a server for the Vault HTTP API subset) and the example fleet run in process with
every place text leaves recorded: the prompts sent to the model, spans, logs, audit, HTTP responses.

The fixtures are imported by the test modules (no conftest.py here: other test folders import their
conftest by its bare name, and a second one on the path would shadow theirs)."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from raygent.actors.steploop import AgentLoop
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError
from raygent.core.fleetfile import load_fleet
from raygent.core.interceptors import ModelCallInput, ModelCallOutput, ModelStage
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import SQLiteStore, open_store
from raygent.core.store.base import Store
from raygent.governance.gateway import ToolGateway
from raygent.governance.gateway_actor import build_tool_chain
from raygent.router.actor import build_model_chain
from raygent.router.router import Router

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "credentials"


def _load(name: str, path: Path) -> ModuleType:
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


services = _load("cred_example_services", EXAMPLE / "services.py")
devvault = _load("cred_example_devvault", EXAMPLE / "devvault.py")


@dataclass
class Stack:
    auth: Any  # services.AuthServer
    tickets: Any  # services.TicketsApi
    vault: Any  # devvault.DevVault
    auth_url: str
    tickets_url: str
    vault_url: str
    canary: str
    client_secret: str
    vault_token: str

    def fleet_text(self) -> str:
        return (
            (EXAMPLE / "fleet.yaml")
            .read_text()
            .replace("http://127.0.0.1:9100", self.auth_url)
            .replace("http://127.0.0.1:9200", self.tickets_url)
            .replace("127.0.0.1:9200", self.tickets_url.removeprefix("http://"))
            .replace("http://127.0.0.1:8200", self.vault_url)
        )


def start_stack(*, ttl_s: float = 2.0) -> tuple[Stack, list[Any]]:
    canary = f"CANARY-{uuid.uuid4().hex}"
    client_secret = f"client-secret-{uuid.uuid4().hex}"
    vault_token = f"vault-token-{uuid.uuid4().hex}"
    demo = services.DEMO
    auth = services.AuthServer(
        clients={
            demo["client_id"]: services.Client(client_secret, frozenset({"tickets:read", "tickets:write"}))
        },
        users={"alice": frozenset({"tickets:read"}), "bob": frozenset({"tickets:read", "tickets:write"})},
        signing_key=demo["signing_key"],
        assertion_key=demo["assertion_key"],
        ttl_s=ttl_s,
    )
    tickets = services.TicketsApi(demo["signing_key"], canary)
    vault = devvault.DevVault(token=vault_token)
    vault.kv["oauth/helpdesk"] = {"client_secret": client_secret}
    vault.kv["oauth/assertion"] = {"key": demo["assertion_key"]}
    vault.kv["tickets/api"] = {"api_key": canary}
    running = [
        services.serve_in_thread(services.auth_app(auth)),
        services.serve_in_thread(services.tickets_app(tickets)),
        services.serve_in_thread(devvault.vault_app(vault)),
    ]
    stack = Stack(
        auth,
        tickets,
        vault,
        running[0].url,
        running[1].url,
        running[2].url,
        canary,
        client_secret,
        vault_token,
    )
    return stack, running


class RecordingModel(ModelStage):
    """Passes model calls to the router and keeps every prompt (all messages) it was sent."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.prompts: list[str] = []

    async def call_model(self, inp: ModelCallInput) -> ModelCallOutput:
        self.prompts.append("\n".join(str(m.to_dict()) for m in inp.messages))
        return await self._router.call_model(inp)


class CredFleet:
    """The fleet in process, with the same chains as the deployments and the prompts recorded."""

    def __init__(self, fleet: Fleet, *, store: Store, tracer: Tracer) -> None:
        clock = SystemClock()
        self.router = Router.from_fleet(fleet, clock=clock)
        self.model = RecordingModel(self.router)
        model_chain = build_model_chain(self.model, store=store, tracer=tracer, clock=clock)
        self.gateway = ToolGateway(fleet, invoker=self, clock=clock)
        tools = build_tool_chain(self.gateway, store=store, tracer=tracer, clock=clock)
        self._loops = {
            name: AgentLoop(
                fleet, name, store=store, model=model_chain, tools=tools, tracer=tracer, clock=clock
            )
            for name in fleet.agents
        }

    async def invoke(self, run: RunInput) -> RunOutput:
        loop = self._loops.get(run.agent)
        if loop is None:
            raise NotFoundError(f"there is no agent named {run.agent!r}")
        return await loop.run(run)

    async def aclose(self) -> None:
        await self.gateway.aclose()
        await self.router.aclose()


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    started, running = start_stack(ttl_s=2.0)
    monkeypatch.setenv("VAULT_TOKEN", started.vault_token)
    yield started
    for r in running:
        r.stop()


@pytest.fixture
def cred_fleet(stack: Stack, tmp_path: Path) -> Fleet:
    path = tmp_path / "fleet.yaml"
    path.write_text(stack.fleet_text())
    return load_fleet(path, state_dir=tmp_path / "state")


@pytest.fixture
async def cred_store(cred_fleet: Fleet) -> AsyncIterator[SQLiteStore]:
    opened = open_store(cred_fleet)
    assert isinstance(opened, SQLiteStore)
    yield opened
    await opened.close()


@pytest.fixture
async def running(
    cred_fleet: Fleet, cred_store: SQLiteStore, tracer_provider: TracerProvider
) -> AsyncIterator[CredFleet]:
    fleet = CredFleet(cred_fleet, store=cred_store, tracer=tracer_provider.get_tracer("cred"))
    yield fleet
    await fleet.aclose()
