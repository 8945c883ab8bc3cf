"""Batch jobs: many agent runs from a JSONL file, as a Ray job, resumable without repeated effects.

Public API::

    BatchClient        create, submit (Ray Jobs), follow, cancel and resume batches
    BatchRunner        the job's loop (bounded concurrency, durable progress, results and errors files)
    BatchItem, LineError, parse_line, parse_lines    input lines (OpenAI Batch format or {"input": …})
    ProgressStore, ItemRecord, ProgressSummary       durable progress of one batch
    BatchManifest, BatchPaths, item_run_id           a batch on disk
    LocalExecutor, RayExecutor                       where items run
"""

from raygent.batch.agents import ItemRunner, ItemRunStore, premium_cost_usd, with_tier
from raygent.batch.client import BatchClient, BatchView
from raygent.batch.errors import (
    BatchError,
    BatchInputError,
    BatchNotFoundError,
    BatchStateError,
    ClusterUnreachableError,
    WorkerLostError,
)
from raygent.batch.executor import Executor, LocalExecutor, RayExecutor
from raygent.batch.items import BatchItem, LineError, parse_line, parse_lines
from raygent.batch.manifest import BatchManifest, BatchPaths, item_run_id
from raygent.batch.progress import ItemRecord, ProgressStore, ProgressSummary
from raygent.batch.runner import BatchRunner

__all__ = [
    "BatchClient",
    "BatchError",
    "BatchInputError",
    "BatchItem",
    "BatchManifest",
    "BatchNotFoundError",
    "BatchPaths",
    "BatchRunner",
    "BatchStateError",
    "BatchView",
    "ClusterUnreachableError",
    "Executor",
    "ItemRecord",
    "ItemRunStore",
    "ItemRunner",
    "LineError",
    "LocalExecutor",
    "ProgressStore",
    "ProgressSummary",
    "RayExecutor",
    "WorkerLostError",
    "item_run_id",
    "parse_line",
    "parse_lines",
    "premium_cost_usd",
    "with_tier",
]
