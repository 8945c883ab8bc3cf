"""The batch loop in one process, with the example fleet's real agents, router and gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from batch_helpers import expected_answer, ledger_rows, mixed_lines

from raygent.batch.client import BatchClient
from raygent.batch.errors import WorkerLostError
from raygent.batch.executor import LocalExecutor
from raygent.batch.items import BatchItem
from raygent.batch.manifest import BatchPaths, item_run_id
from raygent.batch.progress import ItemRecord, ProgressStore
from raygent.batch.runner import BatchRunner
from raygent.core.clock import SystemClock
from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery

InputFile = Callable[[list[str]], Path]


def runner_for(client: BatchClient, paths: BatchPaths, executor: object | None = None) -> BatchRunner:
    manifest = paths.read_manifest()
    return BatchRunner(
        paths,
        manifest,
        executor or LocalExecutor(manifest),  # type: ignore[arg-type]
        max_input_chars=client.fleet.agents[manifest.agent].max_input_chars,
        clock=SystemClock(),
    )


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_batch_runs_every_line_at_the_cheap_tier(client: BatchClient, write_input: InputFile) -> None:
    lines = mixed_lines(60, bad_every=10)
    paths = client.create(write_input(lines), agent="support", max_concurrency=8)
    runner = runner_for(client, paths)
    summary = await runner.run()
    runner.close()
    assert (summary.total, summary.completed, summary.failed, summary.invalid) == (60, 54, 0, 6)
    results = lines_of(paths.results)
    assert [r["line"] for r in results] == sorted(r["line"] for r in results)  # line order
    for result in results:
        text = lines[int(result["line"]) - 1]  # type: ignore[call-overload]
        assert str(result["output"]).startswith(expected_answer(text)), result
        assert result["backend"] == "open-small"  # the cheap model, though support is a premium agent
    errors = lines_of(paths.errors)
    assert [e["line"] for e in errors] == [10, 20, 30, 40, 50, 60]
    assert all(e["status"] == "invalid" and "line" in e for e in errors)
    # Every refund request refunded exactly once, under a key derived from its item's run.
    refunds = [r for r in results if str(r["custom_id"]).startswith("refund-")]
    rows = ledger_rows(Path(client.fleet.state_path(".")))
    assert len(rows) == len(refunds) == 18
    assert {row[0].split(".l")[1].split("-")[0] for row in rows} == {str(r["line"]) for r in refunds}
    assert summary.premium_cost_usd > summary.cost_usd > 0


async def test_tier_override_routes_to_premium(client: BatchClient, write_input: InputFile) -> None:
    paths = client.create(write_input(mixed_lines(3)), agent="orders", tier="premium")
    runner = runner_for(client, paths)
    summary = await runner.run()
    runner.close()
    assert summary.completed == 3
    assert {r["backend"] for r in lines_of(paths.results)} == {"premium"}
    assert summary.cost_usd == pytest.approx(summary.premium_cost_usd)


async def test_resume_skips_recorded_lines(client: BatchClient, write_input: InputFile) -> None:
    lines = mixed_lines(12)
    paths = client.create(write_input(lines), agent="support")
    with ProgressStore(paths.progress) as progress:  # lines 1-4 finished in an earlier run
        for line in range(1, 5):
            progress.record(ItemRecord(line, f"c{line}", "completed", 1.0, output="earlier"))
    runner = runner_for(client, paths)
    summary = await runner.run()
    runner.close()
    assert summary.completed == 12
    outputs = {r["line"]: r["output"] for r in lines_of(paths.results)}
    assert [outputs[line] for line in range(1, 5)] == ["earlier"] * 4
    store = open_store(client.fleet)
    ran = {r.run_id for r in await store.query_audit(AuditQuery(kind="prompt", limit=10_000))}
    await store.close()
    batch_id = paths.root.name
    assert not any(item_run_id(batch_id, line) in ran for line in range(1, 5))
    assert all(item_run_id(batch_id, line) in ran for line in range(5, 13))


class FlakyExecutor:
    """Loses the worker of chosen lines a number of times before running them for real."""

    def __init__(self, inner: LocalExecutor, losses: dict[int, int]) -> None:
        self.inner = inner
        self.losses = dict(losses)
        self.calls: list[tuple[int, int]] = []

    async def start(self) -> None:
        await self.inner.start()

    async def run(self, item: BatchItem, attempt: int) -> ItemRecord:
        self.calls.append((item.line, attempt))
        if self.losses.get(item.line, 0) > 0:
            self.losses[item.line] -= 1
            raise WorkerLostError(f"line {item.line}: lost")
        return await self.inner.run(item, attempt)

    async def close(self) -> None:
        await self.inner.close()


async def test_lost_workers_are_retried_then_given_up(client: BatchClient, write_input: InputFile) -> None:
    paths = client.create(write_input(mixed_lines(4)), agent="support")
    manifest = paths.read_manifest().model_copy(update={"max_item_attempts": 3, "retry_backoff_s": 0.01})
    paths.write_manifest(manifest)
    flaky = FlakyExecutor(LocalExecutor(manifest), {1: 2, 2: 5})
    runner = runner_for(client, paths, flaky)
    summary = await runner.run()
    runner.close()
    assert (summary.completed, summary.failed) == (3, 1)
    assert [a for line, a in flaky.calls if line == 1] == [1, 2, 3]
    assert [a for line, a in flaky.calls if line == 2] == [1, 2, 3]
    (error,) = lines_of(paths.errors)
    assert error["line"] == 2 and "lost" in error["error"]["detail"]  # type: ignore[index]


@pytest.mark.parametrize("crashed", ["before recording", "mid-run"])
async def test_a_rerun_item_keeps_its_run_ids_and_refunds_once(
    client: BatchClient, write_input: InputFile, crashed: str
) -> None:
    lines = mixed_lines(1)  # a refund request for a delivered order
    paths = client.create(write_input(lines), agent="support")
    manifest = paths.read_manifest()
    first = LocalExecutor(manifest)
    await first.start()
    text = json.loads(lines[0])["body"]["messages"][-1]["content"]
    record = await first.run(BatchItem(1, "refund-0", text), 1)
    await first.close()
    state = Path(client.fleet.state_path("."))
    assert record.status == "completed" and len(ledger_rows(state)) == 1
    store = open_store(client.fleet)
    if crashed == "mid-run":
        # The worker died after the refund but before the run finished: its record says running.
        run = await store.get_run(item_run_id(paths.root.name, 1))
        assert run is not None
        run.status, run.output = "running", None
        await store.save_run(run)
    # Either way progress.db has no record of line 1, so the batch runs it.
    runner = runner_for(client, paths)
    summary = await runner.run()
    runner.close()
    assert summary.completed == 1
    assert lines_of(paths.results)[0]["output"] == record.output
    assert len(ledger_rows(state)) == 1  # same run id, same call ids, same idempotency key
    prompts = await store.query_audit(AuditQuery(run_id=item_run_id(paths.root.name, 1), kind="prompt"))
    await store.close()
    assert len(prompts) == (2 if crashed == "mid-run" else 1)  # a finished run is reused, not re-run
