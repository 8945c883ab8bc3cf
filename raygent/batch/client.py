"""Creating, submitting and following batches: what ``raygent batch`` and ``POST /v1/batches`` call.

A batch is a directory (see :mod:`raygent.batch.manifest`) plus one Ray job per run of it: the first
submission is named after the batch, each ``resume`` adds ``<batch_id>-r<n>``. The job's driver runs on
the cluster's head and reads and writes the batch directory, so the directory must be on a path the
head sees: true for local Ray, and on a cluster when the CLI runs on the head (``ray attach``) or the
state directory is shared storage.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from raygent.batch.agents import with_tier
from raygent.batch.errors import (
    BatchInputError,
    BatchNotFoundError,
    BatchStateError,
    ClusterUnreachableError,
    JobSubmitError,
)
from raygent.batch.manifest import BatchManifest, BatchPaths
from raygent.batch.progress import ProgressStore, ProgressSummary
from raygent.core.clock import Clock
from raygent.core.config import Fleet
from raygent.core.errors import ConfigError
from raygent.core.ids import new_id

__all__ = ["DEFAULT_ADDRESS", "MAX_INPUT_BYTES", "BatchClient", "BatchView"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
MAX_INPUT_BYTES = 200 * 1024 * 1024
_LIVE_JOB_STATES = ("PENDING", "RUNNING")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# What Ray's job head answers (HTTP 500) when the head node's job agent has not registered within its
# own 10 s wait: a head that is starting, or too busy to start its dashboard agent. It says to try again.
_NO_AGENT = "No available agent"
_SUBMIT_RETRY_S = 1.0


@dataclass(frozen=True)
class BatchView:
    """A batch as ``status`` shows it: the recorded progress and the state of its latest Ray job."""

    manifest: BatchManifest
    summary: ProgressSummary
    job_id: str | None
    job_status: str | None  # Ray's JobStatus name; None when the cluster cannot be asked

    @property
    def status(self) -> str:
        """The batch's state; ``interrupted`` when its job ended without finishing (resume it)."""
        recorded = self.summary.state.status
        if recorded in ("submitted", "running") and self.job_status in ("FAILED", "STOPPED", "SUCCEEDED"):
            return "interrupted"
        if recorded in ("cancelled", "failed", "completed") and self.job_status in _LIVE_JOB_STATES:
            return "running"  # the latest job runs it again (resumed), whatever the last one ended as
        return recorded

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.manifest.batch_id,
            "agent": self.manifest.agent,
            "tier": self.manifest.tier,
            "status": self.status,
            "job_id": self.job_id,
            "job_status": self.job_status,
            **{k: v for k, v in self.summary.to_json().items() if k != "state"},
            "total": self.summary.total,
            "message": self.summary.state.message,
            "job_ids": self.summary.state.job_ids,
        }


class BatchClient:
    """Batches of one fleet, run as Ray jobs at ``address`` (the Ray dashboard's HTTP address).

    Args:
        fleet: The loaded fleet (its state directory holds the batches; a batch keeps a snapshot of it).
        fleet_file: Where the fleet was loaded from (recorded for people), if from a file.
        clock: Time source.
        address: Ray Jobs address; default ``RAY_ADDRESS`` (when it is an http URL) or
            ``http://127.0.0.1:8265``.
        on_wait: Told (once) when a submission waits for the cluster's job agent, so a person sees why.
    """

    def __init__(
        self,
        fleet: Fleet,
        fleet_file: Path | None = None,
        *,
        clock: Clock,
        address: str | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        env = os.environ.get("RAY_ADDRESS", "")
        self.address = address or (env if env.startswith("http") else DEFAULT_ADDRESS)
        self.fleet = fleet
        self.fleet_file = fleet_file.resolve() if fleet_file is not None else None
        self.results_dir = fleet.state_path(fleet.batch.results_dir)
        self._clock = clock
        self._on_wait = on_wait
        self._jobs: Any = None

    # -------------------------------------------------------------------------------------- creating

    def create(
        self,
        input_file: Path,
        *,
        agent: str,
        tier: str | None = None,
        max_concurrency: int | None = None,
        workers: int | None = None,
        requester: str = "",
        end_user: str = "",
    ) -> BatchPaths:
        """Make the batch directory (manifest, a copy of the input, progress) without running it.

        ``requester`` and ``end_user`` (governed fleets) are who submitted it and for whom: its items
        run as their requests.

        Raises:
            ConfigError: Unknown agent or a tier no model has.
            BatchInputError: The input file is missing, empty or too large.
        """
        if agent not in self.fleet.agents:
            raise ConfigError(f"there is no agent {agent!r} (agents: {', '.join(self.fleet.agents)})")
        spec = self.fleet.batch
        tier = tier or spec.tier
        with_tier(self.fleet, tier)  # validates the tier before anything is written
        try:
            size = input_file.stat().st_size
        except OSError as exc:
            raise BatchInputError(f"cannot read {input_file}: {exc.strerror or exc}") from None
        if size == 0:
            raise BatchInputError(f"{input_file} is empty; a batch needs at least one line")
        if size > MAX_INPUT_BYTES:
            raise BatchInputError(f"{input_file} is {size} bytes; the limit is {MAX_INPUT_BYTES}")
        batch_id = new_id("batch")
        paths = BatchPaths(self.results_dir / batch_id)
        paths.root.mkdir(parents=True)
        shutil.copyfile(input_file, paths.input)
        manifest = BatchManifest(
            batch_id=batch_id,
            agent=agent,
            fleet=self.fleet.model_dump(mode="json"),
            fleet_file=str(self.fleet_file or ""),
            base_dir=str(Path(self.fleet.base_dir).resolve()),
            state_dir=str(self.fleet.state_path(".").resolve()),
            tier=tier,  # type: ignore[arg-type]
            max_concurrency=max_concurrency or spec.max_concurrency,
            workers=workers or spec.workers,
            worker_num_cpus=spec.worker_num_cpus,
            worker_resources=dict(spec.worker_resources),
            max_item_attempts=spec.max_item_attempts,
            retry_backoff_s=spec.retry_backoff_s,
            created_at=self._clock.now(),
            source=input_file.name,
            requester=requester,
            end_user=end_user,
        )
        paths.write_manifest(manifest)
        with ProgressStore(paths.progress) as progress:
            progress.set_state("submitted", now=self._clock.now())
        return paths

    # ---------------------------------------------------------------------------------------- Ray jobs

    def jobs(self) -> Any:
        """The Ray Jobs client (connects on first use).

        Raises:
            ClusterUnreachableError: No Ray cluster answers at the address.
        """
        if self._jobs is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._jobs = JobSubmissionClient(self.address)
            except Exception as exc:  # Ray raises ConnectionError or RuntimeError, with long texts
                raise ClusterUnreachableError(
                    f"no Ray cluster answers at {self.address} ({type(exc).__name__}); start one with "
                    "`ray start --head` or `raygent cluster up`, or pass --address",
                    extra={"address": self.address},
                ) from None
        return self._jobs

    def _python(self) -> str:
        # The job runs on the head: this interpreter (and its venv) exists there only when it is local.
        host = urlparse(self.address).hostname or ""
        return os.environ.get("RAYGENT_JOB_PYTHON") or (sys.executable if host in _LOCAL_HOSTS else "python")

    def _submit(self, paths: BatchPaths, job_id: str) -> str:
        entrypoint = f"{shlex.quote(self._python())} -m raygent.batch.job {shlex.quote(str(paths.root))}"
        env = {k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",) if k in os.environ}
        submitted = self._submit_job(
            entrypoint=entrypoint,
            submission_id=job_id,
            metadata={"raygent_batch": paths.root.name},
            runtime_env={"env_vars": env} if env else None,
        )
        with ProgressStore(paths.progress) as progress:
            progress.add_job(submitted)
            # A resumed batch is live again from now on, not still "cancelled" until its job starts.
            progress.set_state("submitted", now=self._clock.now())
        return submitted

    def _submit_job(self, **job: Any) -> str:
        """``submit_job``, waiting up to ``batch.submit_wait_s`` while the head has no job agent.

        Raises:
            JobSubmitError: The cluster did not take the job (its answer, shortened, is in the text).
        """
        deadline = time.monotonic() + self.fleet.batch.submit_wait_s
        waited = False
        while True:
            try:
                submitted: str = self.jobs().submit_job(**job)
                return submitted
            except RuntimeError as exc:  # the Jobs SDK raises RuntimeError for every refusal
                text = str(exc).strip()
                answer = text.splitlines()[0][:300] if text else type(exc).__name__
                if waited and "already exists" in answer and self._is_ours(job):
                    return str(job["submission_id"])  # an earlier try went through; its answer was lost
                if _NO_AGENT not in answer or time.monotonic() >= deadline:
                    raise JobSubmitError(
                        f"the Ray cluster at {self.address} did not take the job: {answer}"
                        + (f" (waited {self.fleet.batch.submit_wait_s:g} s)" if waited else ""),
                        extra={"address": self.address},
                    ) from None
                if not waited and self._on_wait is not None:
                    self._on_wait(
                        f"the cluster at {self.address} has no job agent yet (starting or busy); "
                        f"retrying for up to {self.fleet.batch.submit_wait_s:g} s"
                    )
                waited = True
                time.sleep(_SUBMIT_RETRY_S)

    def _is_ours(self, job: dict[str, Any]) -> bool:
        try:
            info = self.jobs().get_job_info(job["submission_id"])
        except Exception:  # unknown after all: not ours
            return False
        return bool((info.metadata or {}).get("raygent_batch") == job["metadata"]["raygent_batch"])

    def submit(self, paths: BatchPaths) -> str:
        """Submit the batch's first job; returns the Ray job's submission id (the batch id)."""
        return self._submit(paths, paths.root.name)

    def locate(self, batch_id: str) -> BatchPaths:
        return BatchPaths.locate(self.results_dir, batch_id)

    def job_status(self, job_id: str | None) -> str | None:
        if job_id is None:
            return None
        try:
            return str(self.jobs().get_job_status(job_id).value)
        except ClusterUnreachableError:
            return None
        except Exception:  # the job is unknown to this cluster (another cluster, or restarted)
            return None

    def view(self, batch_id: str) -> BatchView:
        paths = self.locate(batch_id)
        if not paths.progress.exists():
            raise BatchNotFoundError(f"batch {batch_id!r} has no progress file")
        with ProgressStore(paths.progress, readonly=True) as progress:
            summary = progress.summary()
        job_id = summary.state.job_ids[-1] if summary.state.job_ids else None
        return BatchView(paths.read_manifest(), summary, job_id, self.job_status(job_id))

    def cancel(self, batch_id: str) -> BatchView:
        """Stop the batch's running job (it records ``cancelled`` and writes what is done)."""
        view = self.view(batch_id)
        if view.job_id is None or view.job_status not in _LIVE_JOB_STATES:
            raise BatchStateError(f"batch {batch_id} is not running (status {view.status})")
        self.jobs().stop_job(view.job_id)
        return view

    def resume(self, batch_id: str) -> str:
        """Run the lines not yet recorded, in a new job; the finished ones are skipped.

        Raises:
            BatchStateError: The batch is running or already completed.
        """
        view = self.view(batch_id)
        if view.job_status in _LIVE_JOB_STATES:
            raise BatchStateError(f"batch {batch_id} is still running (job {view.job_id}); cancel it first")
        if view.summary.state.status == "completed":
            raise BatchStateError(f"batch {batch_id} is already completed; nothing to resume")
        paths = self.locate(batch_id)
        return self._submit(paths, f"{batch_id}-r{len(view.summary.state.job_ids)}")

    def job_logs(self, job_id: str) -> str:
        logs: str = self.jobs().get_job_logs(job_id)
        return logs
