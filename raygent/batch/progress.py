"""Durable batch progress: one SQLite row per finished line, written once.

The job is the only writer; ``raygent batch status`` and the HTTP API read concurrently (WAL). A row is
committed as soon as its item finishes, so a job killed at any instant loses at most the items that were
in flight; ``resume`` re-runs exactly those, under the same run ids. ``INSERT OR IGNORE`` makes the first
record of a line the only one: a line can never be counted twice. ``synchronous=NORMAL`` in WAL mode
survives the process being killed (the case resume is for); it does not promise survival of a power
cut, which would cost an fsync per item.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from raygent.batch.items import LineError

__all__ = ["BATCH_STATES", "BatchState", "ItemRecord", "ProgressStore", "ProgressSummary"]

BatchStatus = Literal["submitted", "running", "completed", "cancelled", "failed"]
BATCH_STATES: tuple[str, ...] = ("submitted", "running", "completed", "cancelled", "failed")
ItemStatus = Literal["completed", "failed", "timed_out", "invalid"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS items (
        line INTEGER PRIMARY KEY, custom_id TEXT, status TEXT NOT NULL, run_id TEXT, output TEXT,
        error TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0, premium_cost_usd REAL NOT NULL DEFAULT 0, backend TEXT,
        node_id TEXT, attempts INTEGER NOT NULL DEFAULT 1, finished_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS state (
        id INTEGER PRIMARY KEY CHECK (id = 1), status TEXT NOT NULL, total INTEGER NOT NULL DEFAULT 0,
        started_at REAL, updated_at REAL, finished_at REAL, message TEXT NOT NULL DEFAULT '',
        job_ids TEXT NOT NULL DEFAULT '[]')""",
)


@dataclass(slots=True)
class ItemRecord:
    """The outcome of one line."""

    line: int
    custom_id: str | None
    status: ItemStatus
    finished_at: float
    run_id: str | None = None
    output: str | None = None
    error: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    premium_cost_usd: float = 0.0
    backend: str | None = None
    node_id: str | None = None
    attempts: int = 1

    @classmethod
    def invalid(cls, err: LineError, now: float) -> ItemRecord:
        return cls(err.line, err.custom_id, "invalid", now, error=err.to_json()["error"], attempts=0)

    def result_line(self) -> dict[str, Any]:
        """The results.jsonl line of a completed item."""
        return {
            "custom_id": self.custom_id,
            "line": self.line,
            "run_id": self.run_id,
            "status": self.status,
            "output": self.output,
            "backend": self.backend,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "cost_usd": round(self.cost_usd, 8),
        }

    def error_line(self) -> dict[str, Any]:
        """The errors.jsonl line of an invalid line or a failed item."""
        return {
            "custom_id": self.custom_id,
            "line": self.line,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class BatchState:
    status: BatchStatus
    total: int
    started_at: float | None
    updated_at: float | None
    finished_at: float | None
    message: str
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProgressSummary:
    """Counts and spend so far; what ``status`` shows and the cost report prints."""

    state: BatchState
    finished: int
    completed: int
    failed: int
    invalid: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    premium_cost_usd: float
    first_finished_at: float | None
    last_finished_at: float | None

    @property
    def total(self) -> int:
        return self.state.total

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["savings_usd"] = round(self.premium_cost_usd - self.cost_usd, 8)
        return data


class ProgressStore:
    """The progress database of one batch.

    Args:
        path: ``progress.db`` in the batch directory.
        readonly: Open for reading only (status readers); the file must exist.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProgressStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- state

    def set_state(
        self, status: BatchStatus, *, now: float, total: int | None = None, message: str = ""
    ) -> None:
        """Create or move the batch's state row (``started_at`` is kept from the first run)."""
        finished = now if status in ("completed", "cancelled", "failed") else None
        self._conn.execute(
            "INSERT INTO state (id, status, total, started_at, updated_at, finished_at, message) "
            "VALUES (1, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status=excluded.status, "
            "total=COALESCE(?, total), updated_at=excluded.updated_at, finished_at=excluded.finished_at, "
            "message=excluded.message",
            (status, total or 0, now, now, finished, message, total),
        )

    def add_job(self, job_id: str) -> None:
        """Remember a Ray job that ran (or runs) this batch: the first submission, then each resume."""
        jobs = self.state().job_ids if self._has_state() else []
        if job_id not in jobs:
            jobs.append(job_id)
        self._conn.execute("UPDATE state SET job_ids=? WHERE id=1", (json.dumps(jobs),))

    def _has_state(self) -> bool:
        return self._conn.execute("SELECT 1 FROM state WHERE id=1").fetchone() is not None

    def state(self) -> BatchState:
        row = self._conn.execute("SELECT * FROM state WHERE id=1").fetchone()
        if row is None:
            return BatchState("submitted", 0, None, None, None, "")
        return BatchState(
            status=row["status"],
            total=row["total"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            message=row["message"],
            job_ids=json.loads(row["job_ids"]),
        )

    # ------------------------------------------------------------------------------------------- items

    def record(self, item: ItemRecord) -> bool:
        """Record a finished line durably; False if the line was already recorded (kept as it was)."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO items (line, custom_id, status, run_id, output, error, input_tokens, "
            "output_tokens, cost_usd, premium_cost_usd, backend, node_id, attempts, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.line,
                item.custom_id,
                item.status,
                item.run_id,
                item.output,
                json.dumps(item.error) if item.error is not None else None,
                item.input_tokens,
                item.output_tokens,
                item.cost_usd,
                item.premium_cost_usd,
                item.backend,
                item.node_id,
                item.attempts,
                item.finished_at,
            ),
        )
        return cursor.rowcount == 1

    def finished_lines(self) -> set[int]:
        return {row[0] for row in self._conn.execute("SELECT line FROM items")}

    def records(self) -> Iterator[ItemRecord]:
        """Every recorded line, in line order."""
        for row in self._conn.execute("SELECT * FROM items ORDER BY line"):
            data = dict(row)
            data["error"] = json.loads(data["error"]) if data["error"] else None
            yield ItemRecord(**data)

    def node_counts(self) -> dict[str, int]:
        """Items run per Ray node (the spread across the cluster)."""
        rows = self._conn.execute(
            "SELECT node_id, COUNT(*) FROM items WHERE node_id IS NOT NULL GROUP BY node_id"
        )
        return {row[0]: row[1] for row in rows}

    def summary(self) -> ProgressSummary:
        row = self._conn.execute(
            "SELECT COUNT(*) AS finished, "
            "COALESCE(SUM(status = 'completed'), 0) AS completed, "
            "COALESCE(SUM(status IN ('failed', 'timed_out')), 0) AS failed, "
            "COALESCE(SUM(status = 'invalid'), 0) AS invalid, "
            "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
            "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
            "COALESCE(SUM(cost_usd), 0) AS cost_usd, COALESCE(SUM(premium_cost_usd), 0) AS premium_cost_usd, "
            "MIN(finished_at) AS first_at, MAX(finished_at) AS last_at FROM items"
        ).fetchone()
        return ProgressSummary(
            state=self.state(),
            finished=row["finished"],
            completed=row["completed"],
            failed=row["failed"],
            invalid=row["invalid"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=row["cost_usd"],
            premium_cost_usd=row["premium_cost_usd"],
            first_finished_at=row["first_at"],
            last_finished_at=row["last_at"],
        )

    def export(self, results: Path, errors: Path) -> tuple[int, int]:
        """Write results.jsonl and errors.jsonl from the records, in line order (atomically each)."""
        counts = [0, 0]
        tmp_results, tmp_errors = results.with_suffix(".tmp"), errors.with_suffix(".tmp")
        with tmp_results.open("w") as ok, tmp_errors.open("w") as bad:
            for record in self.records():
                if record.status == "completed":
                    ok.write(json.dumps(record.result_line(), ensure_ascii=False) + "\n")
                    counts[0] += 1
                else:
                    bad.write(json.dumps(record.error_line(), ensure_ascii=False) + "\n")
                    counts[1] += 1
        tmp_results.replace(results)
        tmp_errors.replace(errors)
        return counts[0], counts[1]
