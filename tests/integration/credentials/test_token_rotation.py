"""OAuth2 client credentials against a real local token endpoint issuing 2-second tokens: tokens rotate
during the test, no call carries an expired token, and a revoked identity's next call fails closed."""

from __future__ import annotations

import time
import uuid

import cred_stack
import pytest
from cred_stack import CredFleet, Stack

from raygent.core.runs import RunInput, RunOutput

pytestmark = pytest.mark.integration

# Fixtures shared by the credentials tests (no conftest.py here, see cred_stack).
cred_fleet = cred_stack.cred_fleet
cred_store = cred_stack.cred_store
running = cred_stack.running
stack = cred_stack.stack

IDENTITY = "svc-helpdesk@acme"


async def run(fleet: CredFleet, text: str, *, end_user: str = "") -> RunOutput:
    return await fleet.invoke(
        RunInput(
            run_id=f"run_{uuid.uuid4().hex[:12]}",
            agent="helpdesk",
            input=text,
            session_id=f"s-{uuid.uuid4().hex[:8]}",
            deadline_ts=time.time() + 30,
            end_user=end_user,
        )
    )


async def test_tokens_rotate_during_the_run_and_no_call_carries_an_expired_token(
    stack: Stack, running: CredFleet
) -> None:
    opened = await run(running, "open a ticket: the printer is on fire")
    assert opened.status == "completed" and opened.output is not None
    assert opened.output.startswith("Ticket 1 is open")
    # Keep calling until the 2-second tokens have rotated at least twice (bounded by a wall clock limit,
    # never asserted on): each call reads the ticket with the token the cache holds at that moment.
    limit = time.monotonic() + 20
    calls = 0
    while len({s.jti for s in stack.tickets.seen}) < 3 and time.monotonic() < limit:
        out = await run(running, "what about ticket 1?")
        assert out.output == "Ticket 1 (the printer is on fire) is open.", out.output
        calls += 1
    tokens_used = {s.jti for s in stack.tickets.seen}
    assert len(tokens_used) >= 3, "tokens did not rotate"
    assert len(stack.auth.issued) >= 3
    # The tickets API recorded every token it saw with its expiry: none was expired when it arrived.
    expired = [s for s in stack.tickets.seen if s.seen_at >= s.exp]
    assert expired == []
    assert len(stack.tickets.seen) == calls + 1
    # Far fewer token requests than calls: the cache serves a token until it nears expiry.
    assert running.gateway.credentials.tokens.fetches < calls + 1


async def test_revoked_identity_fails_closed_and_drops_its_tokens(stack: Stack, running: CredFleet) -> None:
    assert (await run(running, "open a ticket: first")).output.startswith("Ticket 1 is open")  # type: ignore[union-attr]
    creds = running.gateway.credentials
    assert creds.tokens.cached(IDENTITY)
    report = await creds.revoke(IDENTITY, reason="incident 42")
    assert report.tokens_dropped >= 1
    assert creds.tokens.cached(IDENTITY) == []
    seen, issued = len(stack.tickets.seen), len(stack.auth.issued)
    out = await run(running, "what about ticket 1?")
    assert out.output is not None
    assert out.output.startswith("I could not read the ticket: identity 'svc-helpdesk@acme' is revoked")
    assert "incident 42" in out.output
    # Fail closed: no token was requested and nothing reached the API.
    assert len(stack.tickets.seen) == seen and len(stack.auth.issued) == issued
    assert creds.restore(IDENTITY)
    assert (await run(running, "what about ticket 1?")).output == "Ticket 1 (first) is open."


async def test_token_exchange_grants_the_intersection_of_user_and_agent_rights(
    stack: Stack, running: CredFleet
) -> None:
    # bob may write tickets: the exchanged token acts for bob, on behalf of the agent's client.
    bob = await run(running, "for bob, open a ticket: vpn is down", end_user="bob")
    assert bob.output == "Ticket 1 opened for bob.", bob.output
    assert stack.tickets.tickets[1]["acting_for"] == "helpdesk-agent"
    # alice may only read: the intersection lacks tickets:write, so the gateway sends nothing.
    seen = len(stack.tickets.seen)
    alice = await run(running, "for alice, open a ticket: give me admin", end_user="alice")
    assert alice.output is not None
    assert "lacks the scopes ['tickets:write']" in alice.output
    assert len(stack.tickets.seen) == seen
    assert len(stack.tickets.tickets) == 1
    # Without an end user the tool refuses rather than falling back to the agent's own rights.
    nobody = await run(running, "for bob, open a ticket: no user")
    assert nobody.output is not None and "names none" in nobody.output
