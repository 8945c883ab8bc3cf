"""``raygent report cost``: spend per agent, model and tier, and the always-premium counterfactual."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, fail, load_fleet_or_exit, out
from raygent.core.errors import ConfigError
from raygent.core.store import open_store
from raygent.core.store.base import RunRecord
from raygent.router.costreport import CostLine, CostReport, build_cost_report

__all__ = ["report_app"]

report_app = typer.Typer(help="Reports over recorded runs.", no_args_is_help=True)
app.add_typer(report_app, name="report")


async def _runs(fleet_file: FleetOpt, state_dir: StateOpt, agent: str | None, limit: int) -> list[RunRecord]:
    store = open_store(load_fleet_or_exit(fleet_file, state_dir))
    try:
        return await store.list_runs(agent=agent, limit=limit)
    finally:
        await store.close()


def _table(title: str, lines: dict[str, CostLine]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("", "steps", "tokens in", "tokens out", "spend USD", "all-premium USD", "saved"):
        table.add_column(column, justify="left" if not column else "right")
    for line in sorted(lines.values(), key=lambda item: -item.cost_usd):
        table.add_row(
            line.key,
            str(line.steps),
            str(line.input_tokens),
            str(line.output_tokens),
            f"{line.cost_usd:.6f}",
            f"{line.premium_cost_usd:.6f}",
            f"{line.savings_ratio:.0%}",
        )
    return table


def _print(report: CostReport) -> None:
    for title, group in (
        ("by agent", report.by_agent),
        ("by model", report.by_model),
        ("by tier", report.by_tier),
    ):
        out.print(_table(title, group))
    total = report.total
    out.print(
        f"{report.runs} runs, {total.steps} model steps: spent ${total.cost_usd:.6f}; "
        f"every step on {report.premium_backend!r} would have cost ${total.premium_cost_usd:.6f} "
        f"(saved {total.savings_ratio:.0%})",
        highlight=False,
    )


@report_app.command("cost")
def report_cost(
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    premium: Annotated[
        str | None,
        typer.Option("--premium", help="Model to price the counterfactual at (default: dearest premium)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000_000, help="Most recent runs to read.")] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Spend per agent, model and tier, and the counterfactual had every step gone to premium."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    if agent is not None and agent not in fleet.agents:
        fail(f"unknown agent {agent!r}; the fleet has: {', '.join(fleet.agents)}", 2)
    runs = asyncio.run(_runs(fleet_file, state_dir, agent, limit))
    try:
        report = build_cost_report(runs, fleet.models, premium=premium)
    except ConfigError as exc:
        fail(exc.detail, 2)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    _print(report)
