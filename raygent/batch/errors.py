"""Errors of batch jobs. Each is a :class:`~raygent.core.errors.RaygentError`, so it pickles across Ray
processes and maps to an HTTP status and a CLI exit code like every other raygent error.

    BatchError (500)
    ├── BatchNotFoundError      404  no batch with that id under the results directory
    ├── BatchInputError         422  the input file as a whole is unusable (empty, unreadable, too big)
    ├── BatchStateError         409  the request does not fit the batch's state (resume a running batch)
    ├── ClusterUnreachableError 503  no Ray cluster (Jobs API) at the address
    ├── JobSubmitError          503  the cluster answered but did not take the job (no job agent yet)
    └── WorkerLostError         500  the worker running an item went away (retryable: the item runs again)
"""

from __future__ import annotations

from raygent.core.errors import (
    ConflictError,
    NotFoundError,
    OverloadedError,
    RaygentError,
    ValidationFailedError,
)

__all__ = [
    "BatchError",
    "BatchInputError",
    "BatchNotFoundError",
    "BatchStateError",
    "ClusterUnreachableError",
    "JobSubmitError",
    "WorkerLostError",
]


class BatchError(RaygentError):
    slug = "batch-failed"
    title = "Batch job failed"


class BatchNotFoundError(NotFoundError):
    slug = "batch-not-found"
    title = "No such batch"


class BatchInputError(ValidationFailedError):
    slug = "batch-input-invalid"
    title = "Batch input file is unusable"


class BatchStateError(ConflictError):
    slug = "batch-state-conflict"
    title = "The batch is not in a state that allows this"
    default_retryable = False


class ClusterUnreachableError(OverloadedError):
    slug = "cluster-unreachable"
    title = "No Ray cluster at this address"
    default_retryable = False


class JobSubmitError(OverloadedError):
    slug = "job-submit-failed"
    title = "The Ray cluster did not take the job"


class WorkerLostError(BatchError):
    """The process or node running an item went away; the item is run again (same run id)."""

    slug = "batch-worker-lost"
    title = "The worker running an item was lost"
    default_retryable = True
