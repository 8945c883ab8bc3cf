"""``raygent policy test``: validate the fleet's Cedar policies against its schema and run the policy
test cases (each built exactly as the gateway builds a request)."""

from __future__ import annotations

import typer

from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, err, fail, load_fleet_or_exit, out
from raygent.governance.policytest import run_policy_tests

__all__ = ["policy_app"]

policy_app = typer.Typer(help="Cedar policies of the fleet.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("test")
def policy_test(fleet_file: FleetOpt = DEFAULT_FLEET, state_dir: StateOpt = None) -> None:
    """Validate the policies against the schema, then run every test case; exit 1 on any failure."""
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    if fleet.policies is None:
        fail(f"{fleet_file} has no 'policies' section", 2)
    errors, results = run_policy_tests(fleet)
    for message in errors:
        err.print(f"schema: {message}", highlight=False, soft_wrap=True)
    failed = 0
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        out.print(f"{mark} {result.source} {result.case.name}: {result.decision.outcome}", highlight=False)
        for problem in result.problems:
            failed += 1
            out.print(f"     {problem}", highlight=False, soft_wrap=True)
    summary = (
        f"{len(results)} case(s), {sum(not r.passed for r in results)} failed; schema errors: {len(errors)}"
    )
    if errors or failed:
        fail(summary)
    out.print(summary, highlight=False)
