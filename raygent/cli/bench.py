"""``raygent bench load``: a bounded load generator against any run endpoint."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from raygent.cli._app import app, fail, out
from raygent.serve.loadgen import DROPPED, ERROR, LoadReport, run_closed_loop, run_open_loop

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Measure a running fleet.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            fail(f"--header must look like 'Name: value', got {value!r}", 2)
        headers[name.strip()] = content.strip()
    return headers


def _parse_body(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--body is not valid JSON: {exc.msg} (column {exc.colno})", 2)
    if not isinstance(body, dict):
        fail("--body must be a JSON object", 2)
    return body


def _label(status: int) -> str:
    return {ERROR: "no answer", DROPPED: "not sent (max in flight)"}.get(status, str(status))


def print_report(report: LoadReport) -> None:
    table = Table(title=f"{report.mode} loop · {len(report.samples)} requests in {report.elapsed_s:.1f} s")
    for column in ("status", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "per s"):
        table.add_column(column, justify="right")
    rows = [(_label(status), report.summary(status)) for status in report.statuses()]
    rows.append(("all", report.summary()))
    for label, s in rows:
        table.add_row(
            label,
            str(int(s["count"])),
            *(f"{s[k]:.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            f"{s['per_s']:.1f}",
        )
    out.print(table)


@bench_app.command("load")
def bench_load(
    url: Annotated[
        str, typer.Argument(help="Endpoint to POST to, e.g. http://127.0.0.1:8000/v1/agents/support/runs")
    ],
    body: Annotated[
        str, typer.Option(help="JSON body of every request.")
    ] = '{"input": "where is order 1042?"}',
    clients: Annotated[int, typer.Option(min=1, max=10_000, help="Closed loop: concurrent clients.")] = 8,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Open loop: requests per second (replaces --clients).")
    ] = None,
    requests: Annotated[int | None, typer.Option(min=1, help="Stop after this many requests.")] = None,
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", min=0.1, help="Stop after this long.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.1)] = 60.0,
    max_inflight: Annotated[int, typer.Option(min=1, help="Open loop: cap on requests outstanding.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Send a bounded load (closed loop by default, open loop with --rate); print the status histogram,
    p50/p90/p99 latency and throughput."""
    if not url.startswith(("http://", "https://")):
        fail("URL must start with http:// or https://", 2)
    if requests is None and duration_s is None:
        requests = 100
    payload = _parse_body(body)
    headers = _parse_headers(header or [])

    def make(_: int) -> dict[str, Any]:
        return payload

    if rate is None:
        report = asyncio.run(
            run_closed_loop(
                url,
                clients=clients,
                body=make,
                requests=requests,
                duration_s=duration_s,
                headers=headers,
                timeout_s=timeout_s,
            )
        )
    else:
        report = asyncio.run(
            run_open_loop(
                url,
                rate_per_s=rate,
                body=make,
                requests=requests,
                duration_s=duration_s,
                headers=headers,
                timeout_s=timeout_s,
                max_inflight=max_inflight,
            )
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    print_report(report)
    if report.statuses().get(ERROR):
        fail(f"{report.statuses()[ERROR]} request(s) got no answer from {url}")
