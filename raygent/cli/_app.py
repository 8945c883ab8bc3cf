"""The ``raygent`` command line. Exit codes: 0 ok, 1 failure, 2 usage or configuration error.

No command prints a traceback: errors are one plain message (set ``RAYGENT_DEBUG=1`` to see the trace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from raygent.core.config import Fleet
from raygent.core.errors import ConfigError, RaygentError
from raygent.core.fleetfile import check_fleet_file
from raygent.core.runs import RunInput, RunOutput

__all__ = [
    "DEFAULT_FLEET",
    "CliExit",
    "FleetOpt",
    "StateOpt",
    "app",
    "err",
    "fail",
    "load_fleet_or_exit",
    "main",
    "out",
]

app = typer.Typer(
    name="raygent",
    help="Governed enterprise AI agents on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# soft_wrap: never hard-wrap lines into pipes and logs (a long path would split a message).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_FLEET = Path(__file__).resolve().parents[2] / "examples" / "support_desk" / "fleet.yaml"

FleetOpt = Annotated[Path, typer.Option("--fleet", "-f", help="Fleet file (YAML).")]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the store and state files go (default: beside the fleet)."),
]


class CliExit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise CliExit(code)


def load_fleet_or_exit(path: Path, state_dir: Path | None) -> Fleet:
    fleet, issues = check_fleet_file(path, state_dir=state_dir)
    if fleet is None:
        for issue in issues:
            err.print(str(issue), highlight=False, soft_wrap=True)
        fail(f"{len(issues)} problem(s) in {path}; fix them and try again (raygent check {path})", 2)
    return fleet


@app.command()
def check(file: Annotated[Path, typer.Argument(help="Fleet file to validate.")]) -> None:
    """Validate a fleet file; every problem is printed as file:line:column: sentence."""
    fleet, issues = check_fleet_file(file)
    if fleet is None:
        for issue in issues:
            out.print(str(issue), highlight=False, soft_wrap=True)
        err.print(f"{len(issues)} problem(s) found", highlight=False)
        raise CliExit(2)
    out.print(
        f"{file}: ok — {len(fleet.agents)} agents, {len(fleet.tools)} tools, {len(fleet.models)} models",
        highlight=False,
    )


@app.command()
def up(
    file: Annotated[Path, typer.Argument(help="Fleet file to serve.")] = DEFAULT_FLEET,
    host: Annotated[str | None, typer.Option(help="Bind address (default from the fleet file).")] = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port (default from the fleet file).", min=1, max=65535)
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """Serve a fleet on local Ray with embedded defaults (SQLite, offline models) until Ctrl-C."""
    from raygent.serve.runtime import install_shutdown_handlers, start_local

    fleet = load_fleet_or_exit(file, state_dir)
    out.print(f"starting fleet [bold]{fleet.name}[/bold] on local Ray …", highlight=False)
    started = time.monotonic()
    install_shutdown_handlers()
    local = start_local(fleet, host=host, port=port)
    base = local.base_url
    first = next(iter(fleet.agents))
    table = Table(
        title=f"raygent · {fleet.name} · ready in {time.monotonic() - started:.1f} s", show_header=False
    )
    table.add_row("runs", f"{base}/v1/agents/{{agent}}/runs   agents: {', '.join(fleet.agents)}")
    table.add_row("run status", f"{base}/v1/runs/{{run_id}}")
    table.add_row("OpenAPI", f"{base}/openapi.json   docs: {base}/docs")
    table.add_row("health", f"{base}/healthz   {base}/readyz")
    table.add_row("state", str(fleet.state_path(".")))
    auth_header = ""
    if fleet.auth is not None:
        table.add_row("approvals", f"{base}/ui/approvals")
        hint = _token_hint(fleet, file, state_dir, first)
        if hint:
            table.add_row("auth", f"bearer tokens required: TOKEN=$({hint})")
            auth_header = ' -H "authorization: Bearer $TOKEN"'
        else:
            table.add_row("auth", f"bearer tokens from {fleet.auth.jwks_url or fleet.auth.issuer} required")
    out.print(table)
    out.print(
        f"try: curl -s {base}/v1/agents/{first}/runs -H 'content-type: application/json'{auth_header} "
        f'-d \'{{"input": "where is order 1042?"}}\'',
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def _token_hint(fleet: Fleet, file: Path, state_dir: Path | None, agent: str) -> str:
    """The command that issues a token allowed to run ``agent`` (local issuers only), or ''."""
    from raygent.core.govconfig import permission_matches

    if fleet.auth is None or fleet.auth.mode != "local":
        return ""
    wanted = f"agents:run:{agent}"
    role = next(
        (
            name
            for name, spec in fleet.roles.items()
            if not spec.identities and any(permission_matches(p, wanted) for p in spec.permissions)
        ),
        None,
    )
    if role is None:
        return ""
    state = f" --state-dir {state_dir}" if state_dir is not None else ""
    return f"raygent token issue -f {file}{state} --role {role} --sub you"


@app.command()
def run(
    agent: Annotated[str, typer.Argument(help="Agent to run.")],
    text: Annotated[str, typer.Argument(metavar="INPUT", help="The user's message.")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    session: Annotated[str | None, typer.Option("--session", help="Session id to continue.")] = None,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole run as JSON.")] = False,
) -> None:
    """Run one agent request on local Ray, without HTTP (same actors, audit and spans as over HTTP)."""
    from raygent.serve.runtime import install_shutdown_handlers

    fleet = load_fleet_or_exit(fleet_file, state_dir)
    if agent not in fleet.agents:
        fail(f"there is no agent {agent!r} in {fleet_file} (agents: {', '.join(fleet.agents)})", 2)
    spec = fleet.agents[agent]
    if not text.strip() or len(text) > spec.max_input_chars:
        fail(f"INPUT must be 1 to {spec.max_input_chars} characters", 2)
    install_shutdown_handlers()
    err.print(f"starting fleet {fleet.name} on local Ray …", highlight=False)
    # Ray writes its own notices to stdout; keep stdout for the result alone (it may be piped as JSON).
    with _stdout_to_stderr():
        result = _run_once(fleet, agent, text, session)
    if as_json:
        # Plain JSON, never re-wrapped or coloured, so it can be piped into another program.
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif result.status == "completed":
        out.print(result.output or "", highlight=False)
        err.print(
            f"run {result.run_id} · session {result.session_id} · "
            f"{result.input_tokens}+{result.output_tokens} tokens · ${result.cost_usd:.6f}",
            highlight=False,
        )
    if result.status != "completed":
        detail = (result.error or {}).get("detail", result.status)
        fail(f"run {result.run_id} {result.status}: {detail}")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run_once(fleet: Fleet, agent: str, text: str, session: str | None) -> RunOutput:
    from raygent.core.ids import new_id
    from raygent.serve.runtime import start_local, stop_local

    try:
        local = start_local(fleet, http=False)
        # The deadline starts when the fleet is ready, not while Ray and Serve are still starting.
        req = RunInput(
            run_id=new_id("run"),
            agent=agent,
            input=text,
            session_id=session or new_id("ses"),
            deadline_ts=time.time() + fleet.agents[agent].deadline_s,
        )

        async def go() -> RunOutput:
            result: RunOutput = await local.agent_handle(agent).run.remote(req)
            return result

        return asyncio.run(go())
    finally:
        stop_local()


def main() -> None:
    """Entry point: maps every failure to a message and an exit code, never a traceback."""
    try:
        app(standalone_mode=False)
    except CliExit as exc:
        sys.exit(exc.code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc.detail}", highlight=False)
        sys.exit(2)
    except RaygentError as exc:
        err.print(f"[red]error:[/red] {exc.detail}", highlight=False)
        sys.exit(1)
    except Exception as exc:
        # Typer may ship its own copy of click, so its exceptions are recognised by shape, not class.
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if os.environ.get("RAYGENT_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
