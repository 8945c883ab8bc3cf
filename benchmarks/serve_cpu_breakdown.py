"""Where P1's time goes: CPU milliseconds per request, by process, for bare Serve, bare Serve with a relay
(raygent's hop count) and raygent, side by side on one local Ray + Serve.

P1 compares latencies; on a machine with few cores the latency of a closed loop is mostly CPU spent on
the request's path, so this prints that CPU per process (user + system time from ``/proc``, divided by
the requests answered in the window): the HTTP proxy, each deployment's replica, and Ray's own daemons.
Processes that were idle during a side's window (the other apps' replicas, ~0.1-0.3 ms/request of
background work each) are left out of its sum. Sides run in rounds (bare, relay, raygent) so that load
from elsewhere falls on all of them alike.

    .venv/bin/python -m benchmarks.serve_cpu_breakdown [--clients 1] [--seconds 5] [--rounds 2]

Linux only (reads ``/proc``). Writes ``benchmarks/results/serve_cpu_breakdown.json``.
"""

import argparse
import asyncio
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.serve_common import free_port, one_agent_fleet, start_serve, stop_serve, write_result
from benchmarks.serve_p1_overhead import bare_app

_TICKS = os.sysconf("SC_CLK_TCK")
_IDLE_MS = 0.5  # below this per request, a process was not on the request's path


def ray_processes() -> dict[str, str]:
    """pid -> name of every Ray process (workers show as ``ray::<actor>``)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    procs: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if args.startswith("ray::"):
            procs[pid] = args.split()[0]
        elif "raylet" in args or "gcs_server" in args:
            procs[pid] = "raylet" if "raylet" in args else "gcs_server"
    return procs


def cpu_s(pid: str) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def measure(url: str, clients: int, seconds: float) -> dict[str, Any]:
    from raygent.serve.loadgen import run_closed_loop

    def body(i: int) -> dict[str, Any]:
        return {"input": f"question {i}"}

    asyncio.run(run_closed_loop(url, clients=clients, requests=max(20, clients * 3), body=body))  # warm up
    procs = ray_processes()
    before = {pid: cpu_s(pid) for pid in procs}
    me = cpu_s(str(os.getpid()))
    report = asyncio.run(run_closed_loop(url, clients=clients, duration_s=seconds, body=body))
    ok = report.summary(200)
    n = max(1, int(ok["count"]))
    per_process: dict[str, float] = {}
    for pid, name in procs.items():
        ms = (cpu_s(pid) - before[pid]) / n * 1000
        if ms >= _IDLE_MS:
            per_process[name] = round(per_process.get(name, 0.0) + ms, 2)
    return {
        "requests": n,
        "p50_ms": round(ok["p50_ms"], 2),
        "cpu_ms_per_request": dict(sorted(per_process.items(), key=lambda kv: -kv[1])),
        "cpu_ms_total": round(sum(per_process.values()), 2),
        "load_generator_cpu_ms": round((cpu_s(str(os.getpid())) - me) / n * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from ray import serve

    from raygent.serve.app import build_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_serve(port)
    rounds: list[dict[str, Any]] = []
    try:
        serve.run(bare_app(0), name="bare", route_prefix="/bare")
        serve.run(bare_app(0, relay=True), name="relay", route_prefix="/relay")
        fleet = one_agent_fleet("rg", Path(tempfile.mkdtemp(prefix="raygent-cpu-")))
        serve.run(build_app(fleet), name=fleet.name, route_prefix="/rg")
        for n in range(args.rounds):
            sides = {
                side: measure(f"{base}/{side}/v1/agents/bench/runs", args.clients, args.seconds)
                for side in ("bare", "relay", "rg")
            }
            rounds.append(sides)
            for side, m in sides.items():
                parts = ", ".join(f"{name} {ms:.2f}" for name, ms in m["cpu_ms_per_request"].items())
                head = f"round {n + 1} {side:5} p50 {m['p50_ms']:6.2f} ms"
                print(f"{head} | CPU {m['cpu_ms_total']:6.2f} ms/request: {parts}", flush=True)
            ratio = sides["rg"]["cpu_ms_total"] / sides["bare"]["cpu_ms_total"]
            print(f"round {n + 1} raygent / bare CPU per request x{ratio:.2f}", flush=True)
    finally:
        stop_serve()
    path = write_result(
        "serve_cpu_breakdown",
        {"clients": args.clients, "seconds": args.seconds, "rounds": rounds},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
