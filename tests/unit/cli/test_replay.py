"""`raygent replay`: a recorded run re-executes against its recorded model and tool responses; a changed
prompt or changed code shows up at the first step it touches; the CLI exits 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from opentelemetry.trace import NoOpTracer

from raygent.actors.inprocess import InProcessFleet
from raygent.cli.replay import replay_run
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.ids import new_id
from raygent.core.runs import RunInput
from raygent.core.store import SQLiteStore

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")


async def record(fleet: Fleet, *turns: str, session: str = "ses-1") -> list[str]:
    store = SQLiteStore(fleet.state_path("raygent.db"))
    inproc = InProcessFleet(fleet, store=store, tracer=NoOpTracer(), clock=SystemClock())
    ids = []
    for text in turns:
        run_id = new_id("run")
        out = await inproc.invoke(
            RunInput(
                run_id=run_id, agent="support", input=text, session_id=session, deadline_ts=time.time() + 60
            )
        )
        assert out.status == "completed", out.error
        ids.append(run_id)
    await inproc.aclose()
    await store.close()
    return ids


def edited_fleet(tmp_path: Path, state: Path, edit: dict[str, str]) -> Fleet:
    """Today's fleet file: the example with the support prompt's text changed."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["prompts"]["support"]["versions"].update(edit)
    path = tmp_path / "today" / "fleet.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    for extra in EXAMPLE.parent.iterdir():  # tool code and data beside the fleet file
        if extra.is_file() and extra.name != "fleet.yaml":
            (path.parent / extra.name).write_bytes(extra.read_bytes())
    path.write_text(yaml.safe_dump(data))
    return load_fleet(path, state_dir=state)


async def test_a_recorded_run_replays_identically_including_delegation_and_history(tmp_path: Path) -> None:
    fleet = load_fleet(EXAMPLE, state_dir=tmp_path / "state")
    first, second = await record(fleet, "where is order 1042?", "and where is order 1043?")
    store = SQLiteStore(fleet.state_path("raygent.db"))
    for run_id in (first, second):  # the second starts from the first's history
        report = await replay_run(fleet, store, run_id)
        assert report.first_divergence is None, report.to_json()
        assert report.replayed_output == report.recorded_output and report.stopped is None
        kinds = [c.kind for c in report.checks]
        assert kinds == ["prompt", "model_input", "tool_call", "model_input", "answer"]
    # Replay never writes to the real trail.
    assert (await store.verify_audit()).ok
    await store.close()


async def test_a_changed_prompt_diverges_at_step_one_and_names_the_prompt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    [run_id] = await record(load_fleet(EXAMPLE, state_dir=state), "where is order 1042?")
    pinned = yaml.safe_load(EXAMPLE.read_text())["agents"]["support"]["prompt"].split("@")[1]
    today = edited_fleet(tmp_path, state, {pinned: "You are $agent. Be curt."})
    store = SQLiteStore(today.state_path("raygent.db"))
    report = await replay_run(today, store, run_id)
    await store.close()
    first = report.first_divergence
    assert first is not None and first.kind == "prompt" and first.step == 0
    step1 = next(c for c in report.checks if c.kind == "model_input")
    assert not step1.ok and "the prompt changed" in step1.detail
    # The recorded answers keep the replay on the recorded path: the same tool call, the same answer.
    assert [c.ok for c in report.checks if c.kind in ("tool_call", "answer")] == [True, True]


def test_cli_exit_codes_and_json_report(tmp_path: Path) -> None:
    import asyncio

    state = tmp_path / "state"
    [run_id] = asyncio.run(record(load_fleet(EXAMPLE, state_dir=state), "where is order 1042?"))
    ok = subprocess.run(
        [RAYGENT, "replay", run_id, "--fleet", str(EXAMPLE), "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["identical"] is True
    today = edited_fleet(tmp_path, state, {"1": "changed", "2": "changed too $agent"})
    changed = subprocess.run(
        [
            RAYGENT,
            "replay",
            run_id,
            "--fleet",
            str(Path(today.base_dir) / "fleet.yaml"),
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert (
        "first divergence at step 0 (prompt)" in changed.stdout and "different text today" in changed.stdout
    )
    missing = subprocess.run(
        [RAYGENT, "replay", "run_nope", "--fleet", str(EXAMPLE), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "there is no run 'run_nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
