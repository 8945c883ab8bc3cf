"""In a governed fleet a session belongs to the end user of its first run: nobody else can continue it
(their run would put that customer's conversation in front of the model)."""

from __future__ import annotations

from typing import Any

from govkit import GovernedClient

from raygent.core.store.base import AuditQuery

RUNS = "/v1/agents/support/runs"


async def ask(
    client: GovernedClient, headers: dict[str, str], text: str, session: str | None
) -> dict[str, Any]:
    body: dict[str, str] = {"input": text}
    if session is not None:
        body["session_id"] = session
    resp = await client.http.post(RUNS, json=body, headers=headers)
    return {**resp.json(), "http": resp.status_code}


async def test_a_session_is_continued_only_by_its_end_user(governed: GovernedClient) -> None:
    c105, c106 = governed.customer("C105"), governed.customer("C106")
    first = await ask(governed, c105, "where is order 1004?", "shared-name")
    assert first["http"] == 200 and first["session_id"] == "shared-name"
    runs_before = len(await governed.store.list_runs(limit=100))

    stolen = await ask(governed, c106, "what did I ask before?", "shared-name")
    assert stolen["http"] == 403 and stolen["type"].endswith("/session-not-yours")
    assert len(await governed.store.list_runs(limit=100)) == runs_before  # no run, nothing shown to a model

    again = await ask(governed, c105, "and order 1004 again?", "shared-name")
    assert again["http"] == 200
    # A service acting for C105 may continue C105's session too.
    portal = governed.auth("svc-portal", "customer", customer="C105")
    assert (await ask(governed, portal, "thanks", "shared-name"))["http"] == 200
    prompts = await governed.store.query_audit(AuditQuery(kind="prompt", agent="support", limit=50))
    history = [p.payload["history_messages"] for p in prompts if p.session_id == "shared-name"]
    assert history == sorted(history) and history[0] == 0 and history[-1] > 0  # one growing conversation


async def test_a_generated_session_is_claimed_too(governed: GovernedClient) -> None:
    mine = await ask(governed, governed.customer("C105"), "where is order 1004?", None)
    assert mine["http"] == 200 and mine["session_id"].startswith("ses_")
    theirs = await ask(governed, governed.customer("C106"), "hello", mine["session_id"])
    assert theirs["http"] == 403
