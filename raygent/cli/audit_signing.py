"""``raygent audit checkpoint|checkpoints|export``: signed checkpoints of the audit chain head, and a
verifiable export of the trail."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, fail, load_fleet_or_exit, out
from raygent.cli.audit import audit_app
from raygent.core.clock import SystemClock
from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery
from raygent.governance.runtime import Governance

__all__ = ["audit_checkpoint", "audit_checkpoints", "audit_export"]


@audit_app.command("checkpoint")
def audit_checkpoint(fleet_file: FleetOpt = DEFAULT_FLEET, state_dir: StateOpt = None) -> None:
    """Sign the current chain head with the fleet's Ed25519 audit key; prints the checkpoint as JSON."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    gov = Governance.open(fleet, store=open_store(fleet), clock=SystemClock())
    sys.stdout.write(json.dumps(asyncio.run(gov.checkpoints.checkpoint()).to_dict(), sort_keys=True) + "\n")


@audit_app.command("checkpoints")
def audit_checkpoints(fleet_file: FleetOpt = DEFAULT_FLEET, state_dir: StateOpt = None) -> None:
    """Check every signed checkpoint: signature valid and the record at its seq still has its hash."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    gov = Governance.open(fleet, store=open_store(fleet), clock=SystemClock())
    checks = asyncio.run(gov.checkpoints.verify())
    bad = [c for c in checks if not c.ok]
    for check in bad:
        out.print(f"checkpoint at seq {check.seq}: {check.reason}", highlight=False)
    if bad:
        fail(f"{len(bad)} of {len(checks)} checkpoint(s) do not hold")
    out.print(f"{len(checks)} checkpoint(s) verified", highlight=False)


@audit_app.command("export")
def audit_export(
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    after_seq: Annotated[int, typer.Option("--after-seq", min=0)] = 0,
) -> None:
    """Write the whole trail (from ``--after-seq``) as NDJSON with hashes, for offline verification."""
    store = open_store(load_fleet_or_exit(fleet_file, state_dir))
    seq = after_seq
    while True:
        page = asyncio.run(store.query_audit(AuditQuery(after_seq=seq, limit=5000)))
        if not page:
            return
        for record in page:
            sys.stdout.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
        seq = page[-1].seq
