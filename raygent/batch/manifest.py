"""A batch on disk: its manifest (what to run, how) and the files beside it.

Layout of ``<results_dir>/<batch_id>/``::

    manifest.json     what the job runs: agent, fleet file, tier, concurrency (written once at submit)
    input.jsonl       a copy of the submitted file, so the batch does not depend on the caller's copy
    progress.db       durable progress: one row per finished line (SQLite, WAL)
    results.jsonl     one line per item that ran, in line order (written when the batch ends)
    errors.jsonl      one line per malformed line or failed item, with its line number
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raygent.batch.errors import BatchNotFoundError
from raygent.core.config import Fleet

__all__ = ["BATCH_ID_PATTERN", "BatchManifest", "BatchPaths", "item_run_id"]

BATCH_ID_PATTERN = r"^batch_[0-9a-z]{6,40}$"
Tier = Literal["premium", "standard", "cheap", "agent"]


class BatchManifest(BaseModel):
    """What a batch job runs. Written by the submitter, read by the job (possibly on another machine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    agent: str
    fleet: dict[str, Any] = Field(
        description="The fleet as validated at submit time: a resumed batch runs the same configuration "
        "even if the fleet file changed since, and workers need no copy of the file."
    )
    fleet_file: str = Field(default="", description="Where the fleet came from (for people; not read).")
    base_dir: str = Field(description="The fleet's base directory (tool code), as the job's machine sees it.")
    state_dir: str = Field(description="The fleet's state directory (store, ledger, batches).")
    tier: Tier = "cheap"
    max_concurrency: int = Field(default=32, ge=1, le=10_000)
    workers: int = Field(default=2, ge=1, le=1000)
    worker_num_cpus: float = Field(default=0.1, gt=0, le=64)
    worker_resources: dict[str, float] = Field(default_factory=dict)
    max_item_attempts: int = Field(default=6, ge=1, le=100)
    retry_backoff_s: float = Field(default=1.0, ge=0, le=60, description="First pause; doubles per attempt.")
    created_at: float
    source: str = Field(default="", description="Name of the file the caller submitted.")
    # Governed fleets: who submitted the batch and for whom. Every item runs as their request (policies
    # decide it as they would a run the caller started), and only they see the batch over HTTP.
    requester: str = ""
    end_user: str = ""

    def load_fleet(self) -> Fleet:
        """The fleet snapshot, with its directories (what ``load_fleet`` would have returned)."""
        return Fleet.model_validate({**self.fleet, "base_dir": self.base_dir, "state_dir": self.state_dir})


def item_run_id(batch_id: str, line: int) -> str:
    """The run id of the item on ``line``: deterministic, so a resumed item repeats the same run and its
    tool calls carry the same idempotency keys (``<run>:s<step>:c<index>``): effects apply once."""
    return f"{batch_id}.l{line}"


class BatchPaths:
    """Where one batch's files live."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def locate(cls, results_dir: Path, batch_id: str) -> BatchPaths:
        """The batch's directory; BatchNotFoundError if the id is malformed or unknown."""
        if not re.match(BATCH_ID_PATTERN, batch_id):
            raise BatchNotFoundError(f"{batch_id!r} is not a batch id (they look like batch_0123abcd…)")
        paths = cls(results_dir / batch_id)
        if not paths.manifest.is_file():
            raise BatchNotFoundError(f"there is no batch {batch_id!r} under {results_dir}")
        return paths

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def input(self) -> Path:
        return self.root / "input.jsonl"

    @property
    def progress(self) -> Path:
        return self.root / "progress.db"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def errors(self) -> Path:
        return self.root / "errors.jsonl"

    @property
    def job_log(self) -> Path:
        return self.root / "job.log"

    def read_manifest(self) -> BatchManifest:
        return BatchManifest.model_validate_json(self.manifest.read_text())

    def write_manifest(self, manifest: BatchManifest) -> None:
        tmp = self.manifest.with_suffix(".tmp")
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(self.manifest)  # atomic: a reader never sees half a manifest
