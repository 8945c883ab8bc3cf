"""``raygent cluster up|down|status`` (thin wrappers over ``ray up/down/status`` with cluster.yaml) and
``raygent deploy`` (the fleet as a Serve config for ``serve deploy``).

The wrappers run Ray's own launcher, so every ``ray up`` behaviour (SSH, file mounts, setup commands,
the autoscaler) is Ray's; ``--dry-run`` prints the command instead of running it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from raygent.cli._app import DEFAULT_FLEET, StateOpt, app, err, fail, load_fleet_or_exit, out

__all__ = ["DEFAULT_CLUSTER_YAML", "cluster_app", "ray_command"]

cluster_app = typer.Typer(help="Operate a Ray cluster described by cluster.yaml.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

DEFAULT_CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Ray cluster launcher file.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the ray command instead of running it.")]


def ray_command(
    verb: str, config: Path | None, *, yes: bool = False, address: str | None = None
) -> list[str]:
    """The ``ray`` command line for ``verb`` (up, down or status); the ray next to this interpreter."""
    ray = str(Path(sys.executable).with_name("ray"))
    if verb == "status":
        if address is not None:
            return [ray, "status", "--address", address]
        # `ray status` runs where Ray runs: on the head node, reached through the launcher.
        return [ray, "exec", str(config), "ray status"]
    return [ray, verb, str(config), *(["--yes"] if yes else [])]


def _run(command: list[str], dry_run: bool) -> None:
    if dry_run:
        out.print(shlex.join(command), highlight=False, soft_wrap=True)
        return
    try:
        code = subprocess.call(command)
    except OSError as exc:
        fail(f"cannot run {command[0]}: {exc.strerror or exc}")
    if code != 0:
        fail(f"`{shlex.join(command[:3])}` exited with status {code}")


def _config_or_exit(config: Path) -> Path:
    if not config.is_file():
        fail(f"cluster config {config} does not exist", 2)
    return config


@cluster_app.command("up")
def up(
    config: ConfigOpt = DEFAULT_CLUSTER_YAML,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Start or update the cluster (`ray up`): head, worker types, setup commands, Serve on the head."""
    _run(ray_command("up", _config_or_exit(config), yes=yes), dry_run)


@cluster_app.command("down")
def down(
    config: ConfigOpt = DEFAULT_CLUSTER_YAML,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Tear the cluster down (`ray down`)."""
    _run(ray_command("down", _config_or_exit(config), yes=yes), dry_run)


@cluster_app.command("status")
def status(
    config: ConfigOpt = DEFAULT_CLUSTER_YAML,
    address: Annotated[
        str | None, typer.Option("--address", help="GCS address of a cluster this machine is part of.")
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Nodes, resources and pending demand (`ray status`, on the head via `ray exec`, or at --address)."""
    _run(ray_command("status", None if address else _config_or_exit(config), address=address), dry_run)


@app.command("deploy")
def deploy(
    file: Annotated[Path, typer.Argument(help="Fleet file.")] = DEFAULT_FLEET,
    output: Annotated[Path, typer.Option("--output", "-o", help="Serve config to write.")] = Path(
        "serve_config.yaml"
    ),
    state_dir: StateOpt = None,
    host: Annotated[str, typer.Option(help="Where Serve's HTTP proxies listen.")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default: the fleet's port.")] = None,
    agents_resource: Annotated[
        str, typer.Option(help="Custom resource of agent replicas ('' for none).")
    ] = "agents",
) -> None:
    """Write the fleet's Serve config; apply it to a running cluster with `serve deploy FILE`."""
    from raygent.serve.builder import serve_config

    fleet = load_fleet_or_exit(file, state_dir)
    config = serve_config(
        fleet,
        fleet_file=str(file.expanduser().resolve()),
        state_dir=str(state_dir.resolve()) if state_dir else None,
        host=host,
        port=port,
        agents_resource=agents_resource or None,
    )
    text = f"# Written by `raygent deploy {file}`; apply with: serve deploy {output}\n"
    text += yaml.safe_dump(config, sort_keys=False)
    try:
        output.write_text(text)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    names = [d["name"] for d in config["applications"][0]["deployments"]]
    out.print(f"wrote {output}: application {fleet.name!r} with {len(names)} deployments", highlight=False)
    err.print(f"apply it on the cluster with: serve deploy {output}", highlight=False)
