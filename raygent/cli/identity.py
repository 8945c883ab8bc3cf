"""``raygent identity revoke|restore|list``: the kill switch, on the fleet's state directory.

Takes effect at once for a running fleet: the gateway checks revocations on every tool call and the
ingress on every new run. Each change is audited with the operating-system user as the actor.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.errors import NotFoundError
from raygent.core.store import open_store
from raygent.governance.runtime import Governance, governance_enabled

__all__ = ["identity_app"]

identity_app = typer.Typer(
    help="Take agent identities out of service and back (kill switch).", no_args_is_help=True
)
app.add_typer(identity_app, name="identity")


def _governance(fleet: Fleet) -> Governance:
    if not governance_enabled(fleet):
        fail("this fleet has no governance sections; the kill switch is not enforced for it", 2)
    return Governance.open(fleet, store=open_store(fleet), clock=SystemClock())


@identity_app.command("revoke")
def identity_revoke(
    agent: Annotated[str, typer.Argument(help="Agent name or agent identity.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")] = "",
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
) -> None:
    """Revoke AGENT's identity: its tool calls fail closed, new runs are refused."""
    gov = _governance(load_fleet_or_exit(fleet_file, state_dir))
    try:
        rev = asyncio.run(gov.killswitch.revoke(agent, actor=f"cli:{getpass.getuser()}", reason=reason))
    except NotFoundError as exc:
        fail(exc.detail, 2)
    out.print(f"revoked {rev.identity}", highlight=False)


@identity_app.command("restore")
def identity_restore(
    agent: Annotated[str, typer.Argument(help="Agent name or agent identity.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")] = "",
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
) -> None:
    """Put AGENT's identity back in service."""
    gov = _governance(load_fleet_or_exit(fleet_file, state_dir))
    try:
        was = asyncio.run(gov.killswitch.restore(agent, actor=f"cli:{getpass.getuser()}", reason=reason))
    except NotFoundError as exc:
        fail(exc.detail, 2)
    out.print(f"restored {agent}" if was else f"{agent} was not revoked", highlight=False)


@identity_app.command("list")
def identity_list(fleet_file: FleetOpt = DEFAULT_FLEET, state_dir: StateOpt = None) -> None:
    """Print the revoked identities."""
    gov = _governance(load_fleet_or_exit(fleet_file, state_dir))
    for rev in asyncio.run(gov.killswitch.revoked()):
        out.print(f"{rev.identity}\t{rev.actor}\t{rev.reason}", highlight=False)
