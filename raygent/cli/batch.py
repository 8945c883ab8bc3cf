"""``raygent batch``: submit a JSONL file as a Ray job, follow it, read its results, cancel, resume.

Exit codes: 0 ok (``--follow``: the batch completed), 1 failure (or the batch ended otherwise),
2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from raygent.batch.client import BatchClient, BatchView
from raygent.batch.errors import JobSubmitError
from raygent.batch.executor import LocalExecutor
from raygent.batch.manifest import BatchPaths
from raygent.batch.progress import ProgressStore, ProgressSummary
from raygent.batch.runner import BatchRunner
from raygent.cli._app import DEFAULT_FLEET, FleetOpt, StateOpt, app, err, fail, load_fleet_or_exit, out
from raygent.core.clock import SystemClock

__all__ = ["batch_app", "cost_report"]

batch_app = typer.Typer(
    help="Batch jobs: many agent runs from a JSONL file, on Ray Jobs.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")

AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray Jobs address (dashboard URL); default $RAY_ADDRESS or :8265."),
]
FollowOpt = Annotated[bool, typer.Option("--follow", help="Show a live progress bar until the batch ends.")]
TierOpt = Annotated[
    str | None,
    typer.Option("--tier", help="premium|standard|cheap, or 'agent' for each agent's own (default: cheap)."),
]
_TERMINAL = ("completed", "cancelled", "failed", "interrupted")
_TIERS = ("premium", "standard", "cheap", "agent")


def _client(fleet_file: Path, state_dir: Path | None, address: str | None) -> BatchClient:
    fleet = load_fleet_or_exit(fleet_file, state_dir)
    return BatchClient(
        fleet, fleet_file, clock=SystemClock(), address=address, on_wait=lambda why: err.print(why)
    )


def _check_tier(tier: str | None) -> None:
    if tier is not None and tier not in _TIERS:
        fail(f"--tier must be one of {', '.join(_TIERS)}", 2)


def cost_report(summary: ProgressSummary, *, title: str) -> Table:
    """Spend at the batch's tier against the same tokens at premium prices."""
    table = Table(title=title, show_header=False)
    table.add_row(
        "items", f"{summary.completed} completed · {summary.failed} failed · {summary.invalid} invalid lines"
    )
    table.add_row("tokens", f"{summary.input_tokens} in · {summary.output_tokens} out")
    table.add_row("spend", f"${summary.cost_usd:.6f}")
    table.add_row("all-premium estimate", f"${summary.premium_cost_usd:.6f}")
    saved = summary.premium_cost_usd - summary.cost_usd
    share = saved / summary.premium_cost_usd if summary.premium_cost_usd else 0.0
    table.add_row("saved", f"${saved:.6f} ({share:.0%})")
    if summary.first_finished_at and summary.last_finished_at and summary.state.started_at:
        elapsed = max(summary.last_finished_at - summary.state.started_at, 1e-9)
        table.add_row("throughput", f"{summary.finished / elapsed:.1f} lines/s over {elapsed:.1f} s")
    return table


class _Rate:
    """Lines per second over the last ``window_s`` seconds of samples (a resumed batch's idle gap and
    the job's start-up do not drag the rate down)."""

    def __init__(self, window_s: float = 15.0) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._window_s = window_s

    def add(self, now: float, finished: int) -> float:
        self._samples.append((now, finished))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _eta(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "0:00"
    if rate <= 0:
        return "-:--"
    seconds = int(remaining / rate)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _follow(client: BatchClient, batch_id: str, interval_s: float) -> BatchView:
    rate = _Rate()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:.1f}/s · ETA {task.fields[eta]} · ${task.fields[spend]:.4f}"),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task(batch_id, total=None, rate=0.0, eta="-:--", spend=0.0, status="")
        while True:
            view = client.view(batch_id)
            summary = view.summary
            per_s = rate.add(time.monotonic(), summary.finished)
            bar.update(
                task,
                total=summary.total or None,
                completed=summary.finished,
                rate=per_s,
                eta=_eta(summary.total - summary.finished, per_s),
                spend=summary.cost_usd,
                status=view.status,
            )
            if view.status in _TERMINAL:
                return view
            time.sleep(interval_s)


def _print_view(view: BatchView, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(view.to_json()) + "\n")
        return
    s = view.summary
    out.print(
        f"batch {view.manifest.batch_id} · agent {view.manifest.agent} · tier {view.manifest.tier} · "
        f"{view.status} · {s.finished}/{s.total} lines ({s.completed} completed, {s.failed} failed, "
        f"{s.invalid} invalid) · spend ${s.cost_usd:.6f} · "
        f"job {view.job_id} ({view.job_status or 'unknown'})",
        highlight=False,
        soft_wrap=True,
    )
    if view.summary.state.message:
        out.print(view.summary.state.message, highlight=False)


def _end(client: BatchClient, batch_id: str, interval_s: float) -> None:
    view = _follow(client, batch_id, interval_s)
    out.print(cost_report(view.summary, title=f"batch {batch_id} · {view.status}"))
    paths = client.locate(batch_id)
    out.print(f"results: {paths.results}\nerrors:  {paths.errors}", highlight=False)
    if view.status != "completed":
        fail(f"batch {batch_id} is {view.status}; `raygent batch resume {batch_id}` runs the rest")


@batch_app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help='JSONL: OpenAI Batch lines or {"input": …} lines.')],
    agent: Annotated[str, typer.Option("--agent", help="Agent that runs every line.")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    address: AddressOpt = None,
    tier: TierOpt = None,
    max_concurrency: Annotated[int | None, typer.Option(min=1, max=10_000, help="Lines in flight.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=1000, help="Worker actors.")] = None,
    follow: FollowOpt = False,
    interval_s: Annotated[float, typer.Option("--interval-s", min=0.1)] = 1.0,
) -> None:
    """Submit FILE as a Ray job; prints the batch id."""
    _check_tier(tier)
    client = _client(fleet_file, state_dir, address)
    client.jobs()  # no cluster: fail before the batch directory is made
    paths = client.create(file, agent=agent, tier=tier, max_concurrency=max_concurrency, workers=workers)
    try:
        client.submit(paths)
    except JobSubmitError as exc:
        # The batch directory exists (input copied, nothing run): say how to start it later.
        batch_id = paths.root.name
        fail(f"{exc.detail}; batch {batch_id} is saved, start it with: raygent batch resume {batch_id}")
    sys.stdout.write(paths.root.name + "\n")
    sys.stdout.flush()
    err.print(f"submitted to {client.address}; follow with: raygent batch status {paths.root.name} --follow")
    if follow:
        _end(client, paths.root.name, interval_s)


@batch_app.command("run")
def run_here(
    file: Annotated[Path, typer.Argument(help="JSONL input.")],
    agent: Annotated[str, typer.Option("--agent")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    tier: TierOpt = None,
    max_concurrency: Annotated[int | None, typer.Option(min=1, max=10_000)] = None,
) -> None:
    """Run FILE in this process, without Ray (same runner, progress and files); prints the batch id."""
    _check_tier(tier)
    client = _client(fleet_file, state_dir, None)
    paths = client.create(file, agent=agent, tier=tier, max_concurrency=max_concurrency)
    sys.stdout.write(paths.root.name + "\n")
    sys.stdout.flush()
    _run_local(client, paths)


def _run_local(client: BatchClient, paths: BatchPaths) -> None:
    manifest = paths.read_manifest()
    runner = BatchRunner(
        paths,
        manifest,
        LocalExecutor(manifest),
        max_input_chars=client.fleet.agents[manifest.agent].max_input_chars,
        clock=SystemClock(),
    )
    try:
        summary = asyncio.run(runner.run())
    finally:
        runner.close()
    out.print(cost_report(summary, title=f"batch {paths.root.name} · completed"))
    out.print(f"results: {paths.results}\nerrors:  {paths.errors}", highlight=False)


@batch_app.command("status")
def status(
    batch_id: Annotated[str, typer.Argument(metavar="ID")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    address: AddressOpt = None,
    follow: FollowOpt = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    interval_s: Annotated[float, typer.Option("--interval-s", min=0.1)] = 1.0,
) -> None:
    """Progress of a batch; with --follow a live bar (rate, ETA, spend) and the cost report at the end."""
    client = _client(fleet_file, state_dir, address)
    if follow:
        _end(client, batch_id, interval_s)
        return
    _print_view(client.view(batch_id), as_json)


@batch_app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(metavar="ID")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    errors: Annotated[bool, typer.Option("--errors", help="Print the errors instead.")] = False,
) -> None:
    """Print the results (or errors) recorded so far as JSONL, in line order."""
    client = _client(fleet_file, state_dir, None)
    paths = client.locate(batch_id)
    if not paths.progress.exists():
        fail(f"batch {batch_id} has not started")
    with ProgressStore(paths.progress, readonly=True) as progress:
        for record in progress.records():
            ok = record.status == "completed"
            if ok != errors:
                line = record.error_line() if errors else record.result_line()
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


@batch_app.command("cancel")
def cancel(
    batch_id: Annotated[str, typer.Argument(metavar="ID")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    address: AddressOpt = None,
) -> None:
    """Stop a running batch; what finished is kept and `resume` runs the rest."""
    client = _client(fleet_file, state_dir, address)
    view = client.cancel(batch_id)
    out.print(f"cancelling batch {batch_id} (job {view.job_id})", highlight=False)


@batch_app.command("resume")
def resume(
    batch_id: Annotated[str, typer.Argument(metavar="ID")],
    fleet_file: FleetOpt = DEFAULT_FLEET,
    state_dir: StateOpt = None,
    address: AddressOpt = None,
    follow: FollowOpt = False,
    interval_s: Annotated[float, typer.Option("--interval-s", min=0.1)] = 1.0,
    local: Annotated[bool, typer.Option("--local", help="Run here, without Ray (as `batch run`).")] = False,
) -> None:
    """Run the lines a crashed or cancelled batch did not finish (finished lines are skipped)."""
    client = _client(fleet_file, state_dir, address)
    if local:
        paths = client.locate(batch_id)
        with ProgressStore(paths.progress, readonly=True) as progress:
            if progress.state().status == "completed":
                fail(f"batch {batch_id} is already completed; nothing to resume")
        _run_local(client, paths)
        return
    job_id = client.resume(batch_id)
    out.print(f"resumed batch {batch_id} as job {job_id}", highlight=False)
    if follow:
        _end(client, batch_id, interval_s)
