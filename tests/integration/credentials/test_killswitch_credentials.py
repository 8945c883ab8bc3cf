"""With governance on, the kill switch (issue 7) is the credentials' revocation source: revoking the
agent identity there drops the gateway's cached tokens and Vault leases at the identity's next call,
which is refused before anything credentialed is sent; restoring it brings the identity back."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import cred_stack
import pytest
from cred_stack import CredFleet, Stack
from opentelemetry.sdk.trace import TracerProvider

from raygent.core.clock import SystemClock
from raygent.core.fleetfile import load_fleet
from raygent.core.runs import RunInput, RunOutput
from raygent.core.store import SQLiteStore, open_store
from raygent.governance.runtime import Governance

pytestmark = pytest.mark.integration

# Fixtures shared by the credentials tests (no conftest.py here, see cred_stack).
stack = cred_stack.stack

IDENTITY = "svc-helpdesk@acme"
GOVERNED = """
roles:
  helpdesk-agent: {identities: [svc-helpdesk@acme], permissions: ["tools:call:*"]}
"""
# A tool holding a leased (dynamic) secret, so revocation has a Vault lease to take away.
LEASED_TOOL = """
  get_ticket_leased:
    kind: http
    method: GET
    url: "{tickets}/tickets/{{ticket_id}}"
    parameters: {{type: object, properties: {{ticket_id: {{type: string}}}}, required: [ticket_id]}}
    scopes: [tickets:read]
    auth: {{kind: oauth2}}
    secret_headers:
      X-Api-Key: "vault:tickets/api#api_key"
      X-Db-Password: {{provider: vault, path: database/creds/tickets, key: password, lease: true}}
"""


@pytest.fixture
async def governed(
    stack: Stack, tmp_path: Path, tracer_provider: TracerProvider
) -> AsyncIterator[tuple[CredFleet, Governance, SQLiteStore]]:
    stack.vault.dynamic["database/creds/tickets"] = 60.0
    text = stack.fleet_text().replace("\nmodels:", GOVERNED + "\nmodels:")
    text = text.replace(
        "\n  tickets_api:", LEASED_TOOL.format(tickets=stack.tickets_url) + "\n  tickets_api:"
    )
    text = text.replace(
        "      - match: '(?i)ticket #?(?P<ticket_id>\\d+)'",
        "      - match: '(?i)leased ticket (?P<ticket_id>\\d+)'\n        call: get_ticket_leased\n"
        '        args: {ticket_id: "{ticket_id}"}\n'
        "      - after_tool: get_ticket_leased\n        say: 'leased: {result}'\n"
        "      - match: '(?i)ticket #?(?P<ticket_id>\\d+)'",
    )
    text = text.replace("tools: [create_ticket,", "tools: [get_ticket_leased, create_ticket,")
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    fleet = load_fleet(path, state_dir=tmp_path / "state")
    store = open_store(fleet)
    assert isinstance(store, SQLiteStore)
    running = CredFleet(fleet, store=store, tracer=tracer_provider.get_tracer("gov"))
    gov = Governance.open(fleet, store=store, clock=SystemClock())
    yield running, gov, store
    await running.aclose()
    await store.close()


async def run(fleet: CredFleet, text: str) -> RunOutput:
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    return await fleet.invoke(
        RunInput(run_id=run_id, agent="helpdesk", input=text, session_id=run_id, deadline_ts=time.time() + 30)
    )


async def test_kill_switch_drops_tokens_and_leases_and_fails_closed(
    stack: Stack, governed: tuple[CredFleet, Governance, SQLiteStore]
) -> None:
    running, gov, _ = governed
    assert (await run(running, "open a ticket: first")).output.startswith("Ticket 1 is open")  # type: ignore[union-attr]
    out = await run(running, "leased ticket 1")
    assert out.output is not None and out.output.startswith("leased:"), out.output
    creds = running.gateway.credentials
    assert creds.tokens.cached(IDENTITY) and len(creds.secrets.leases(IDENTITY)) == 1
    assert len(stack.vault.active_leases()) == 1

    await gov.killswitch.revoke(IDENTITY, actor="secops", reason="token theft suspected")
    seen, issued = len(stack.tickets.seen), len(stack.auth.issued)
    refused = await run(running, "what about ticket 1?")
    assert refused.output is not None and "revoked" in refused.output
    # Dropped at the identity's next call, before the kill switch refused it; nothing was sent.
    assert creds.tokens.cached(IDENTITY) == [] and creds.secrets.leases(IDENTITY) == []
    assert stack.vault.active_leases() == []
    assert len(stack.tickets.seen) == seen and len(stack.auth.issued) == issued

    await gov.killswitch.restore(IDENTITY, actor="secops")
    assert (await run(running, "what about ticket 1?")).output == "Ticket 1 (first) is open."
    assert len(stack.auth.issued) == issued + 1  # a fresh token, never the dropped one
