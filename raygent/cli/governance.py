"""``raygent governance copy-to-postgres``: carry a fleet's governance state over to shared PostgreSQL.

For a fleet whose fleet file now names ``store.governance_dsn``: copies what its SQLite
``governance.db`` (in the state directory) holds — approvals, spending reservations, revoked
identities, parked runs, signed checkpoints — into that database, keeping any row already there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.errors import StoreError
from raygent.governance.state import GovernanceDB, open_governance_db
from raygent.governance.statecopy import copy_governance_state

__all__ = ["governance_app"]

governance_app = typer.Typer(help="The fleet's governance state.", no_args_is_help=True)
app.add_typer(governance_app, name="governance")


@governance_app.command("copy-to-postgres")
def governance_copy(
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    source: Annotated[
        Path | None,
        typer.Option("--from", help="The SQLite file to copy (default: governance.db in the state dir)."),
    ] = None,
) -> None:
    """Copy the SQLite governance state into store.governance_dsn; rows already there are kept.

    Safe to run again. Stop the fleet's old processes first: what they write afterwards is not copied.
    """
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    if fleet.store.governance_dsn is None:
        fail("the fleet file names no store.governance_dsn (postgresql://…) to copy to", 2)
    path = source if source is not None else fleet.state_path("governance.db")
    if not path.is_file():
        fail(f"there is no governance state to copy at {path}", 2)
    try:
        report = copy_governance_state(GovernanceDB(path), open_governance_db(fleet))
    except StoreError as exc:
        fail(exc.detail)
    for table, read in report.read.items():
        out.print(f"{table}: {read} read, {report.written[table]} copied", highlight=False)
