"""``raygent audit``: query and verify the tamper-evident audit trail."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.store import Store, open_store
from raygent.core.store.base import AuditQuery

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Query and verify the tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _store(fleet_file: Path, state_dir: Path | None) -> Store:
    return open_store(load_fleet_or_exit(fleet_file, state_dir))


@audit_app.command("verify")
def audit_verify(fleet_file: FleetOpt = DEFAULT_FLEET, state_dir: StateOpt = None) -> None:
    """Recompute the hash chain; names the first bad record."""
    store = _store(fleet_file, state_dir)
    result = asyncio.run(store.verify_audit())
    if result.ok:
        out.print(f"audit trail ok: {result.records_checked} records, chain intact", highlight=False)
        return
    fail(f"audit trail broken at seq {result.first_bad_seq}: {result.reason}")


@audit_app.command("query")
def audit_query(
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    run_id: Annotated[str | None, typer.Option("--run")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    tool: Annotated[str | None, typer.Option("--tool")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    since: Annotated[float | None, typer.Option("--since", help="Epoch seconds.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """Print matching audit records as NDJSON."""
    store = _store(fleet_file, state_dir)
    query = AuditQuery(run_id=run_id, agent=agent, tool=tool, kind=kind, since_ts=since, limit=limit)
    for record in asyncio.run(store.query_audit(query)):
        sys.stdout.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
