"""``raygent token issue``: mint a bearer token from the fleet's local issuer (embedded mode)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, fail, load_fleet_or_exit
from raygent.core.clock import SystemClock
from raygent.governance.auth import build_verifier

__all__ = ["token_app"]

token_app = typer.Typer(help="Bearer tokens of the fleet's local issuer.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(
    role: Annotated[list[str], typer.Option("--role", help="Role(s) the token grants; repeat for more.")],
    sub: Annotated[str, typer.Option("--sub", help="Subject: who the token is for.")],
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="Lifetime in seconds.", min=1)] = 3600,
    customer: Annotated[
        str | None, typer.Option("--customer", help="End user the caller acts for (default: --sub).")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant of the caller (default: tenant 'default').")
    ] = None,
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
) -> None:
    """Print a signed JWT for SUB with ROLE(s); only fleets with ``auth: {mode: local}`` issue tokens."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    if fleet.auth is None:
        fail(f"{fleet_file} has no 'auth' section; its API takes no tokens", 2)
    if fleet.auth.mode != "local":
        fail("tokens come from the external issuer in 'jwks' mode; raygent issues none", 2)
    unknown = [r for r in role if r not in fleet.roles]
    if unknown:
        fail(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(fleet.roles) or 'none'}", 2)
    _, issuer = build_verifier(
        fleet.auth, fleet_name=fleet.name, state_dir=fleet.state_path("."), clock=SystemClock()
    )
    assert issuer is not None  # local mode always has one
    token = issuer.issue(subject=sub, roles=list(role), ttl_s=ttl_s, end_user=customer, tenant=tenant)
    sys.stdout.write(token + "\n")
