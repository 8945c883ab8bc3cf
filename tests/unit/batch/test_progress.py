"""Durable progress: a line is recorded once, summaries add up, the files come out in line order."""

from __future__ import annotations

import json
from pathlib import Path

from raygent.batch.items import LineError
from raygent.batch.progress import ItemRecord, ProgressStore


def done(line: int, *, cost: float = 0.001, status: str = "completed") -> ItemRecord:
    return ItemRecord(
        line=line,
        custom_id=f"c{line}",
        status=status,  # type: ignore[arg-type]
        finished_at=100.0 + line,
        run_id=f"batch_x.l{line}",
        output=f"answer {line}",
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        premium_cost_usd=cost * 10,
        node_id="n1" if line % 2 else "n2",
        error=None if status == "completed" else {"status": 500, "detail": "boom"},
    )


def test_a_line_is_recorded_once(tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "progress.db") as progress:
        assert progress.record(done(1, cost=0.5))
        assert not progress.record(done(1, cost=9.0))  # a second record of the line is ignored
        assert progress.finished_lines() == {1}
        assert [r.cost_usd for r in progress.records()] == [0.5]


def test_summary_counts_and_spend(tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "progress.db") as progress:
        progress.set_state("running", now=1.0, total=5)
        for line in (1, 2, 3):
            progress.record(done(line))
        progress.record(done(4, status="failed"))
        progress.record(ItemRecord.invalid(LineError(5, "not valid JSON"), 2.0))
        summary = progress.summary()
    assert (summary.total, summary.finished, summary.completed, summary.failed, summary.invalid) == (
        5,
        5,
        3,
        1,
        1,
    )
    assert summary.input_tokens == 40 and summary.output_tokens == 20
    assert round(summary.cost_usd, 6) == 0.004
    assert round(summary.premium_cost_usd, 6) == 0.04
    assert summary.to_json()["savings_usd"] == 0.036
    assert summary.state.status == "running"


def test_state_keeps_its_start_and_collects_job_ids(tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "progress.db") as progress:
        progress.set_state("submitted", now=1.0)
        progress.add_job("batch_x")
        progress.set_state("running", now=2.0, total=7)
        progress.set_state("cancelled", now=3.0, message="stopped")
        progress.add_job("batch_x-r1")
        progress.add_job("batch_x-r1")
        state = progress.state()
    assert state.status == "cancelled"
    assert (state.started_at, state.finished_at, state.total) == (1.0, 3.0, 7)
    assert state.job_ids == ["batch_x", "batch_x-r1"]
    assert state.message == "stopped"


def test_export_writes_results_and_errors_in_line_order(tmp_path: Path) -> None:
    with ProgressStore(tmp_path / "progress.db") as progress:
        for line in (3, 1, 2):
            progress.record(done(line))
        progress.record(ItemRecord.invalid(LineError(4, "bad line", "c4"), 5.0))
        assert progress.export(tmp_path / "results.jsonl", tmp_path / "errors.jsonl") == (3, 1)
        assert progress.node_counts() == {"n1": 2, "n2": 1}
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in results] == [1, 2, 3]
    assert results[0]["output"] == "answer 1" and results[0]["usage"]["total_tokens"] == 15
    (error,) = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert error == {
        "custom_id": "c4",
        "line": 4,
        "run_id": None,
        "status": "invalid",
        "error": {"type": "invalid-line", "message": "bad line"},
    }


def test_a_reader_sees_the_writers_progress(tmp_path: Path) -> None:
    path = tmp_path / "progress.db"
    with ProgressStore(path) as writer:
        writer.set_state("running", now=1.0, total=2)
        writer.record(done(1))
        with ProgressStore(path, readonly=True) as reader:
            assert reader.summary().finished == 1
            writer.record(done(2))
            assert reader.summary().finished == 2
