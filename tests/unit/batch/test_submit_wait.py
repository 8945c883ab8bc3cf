"""Submitting a batch to a head that has no job agent yet (a starting or busy cluster).

Ray's job head answers ``500 No available agent to submit job, please try again later`` when its
node's dashboard agent has not registered within its own 10 s wait; it happened in CI on a loaded
2-core machine. A real head cannot be put in that state on demand, so these tests run Ray's real Jobs
SDK against a small HTTP head that speaks the same REST API and refuses the first N submissions the
way Ray does. (A real cluster takes the job in tests/integration/batch.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from opentelemetry.sdk.trace import TracerProvider

from raygent.actors.inprocess import InProcessFleet
from raygent.batch.client import BatchClient
from raygent.batch.errors import JobSubmitError
from raygent.batch.progress import ProgressStore
from raygent.core.clock import SystemClock
from raygent.core.config import BatchSpec, Fleet
from raygent.core.store import SQLiteStore
from raygent.serve.api import ApiService, build_api

NO_AGENT = "No available agent to submit job, please try again later."


@dataclass
class Head:
    """What the stand-in head does: refuse ``refusals`` submissions with ``refusal``, then take jobs."""

    refusals: int = 0
    refusal: str = NO_AGENT
    answer_lost: bool = False  # the first accepted submission answers with the refusal anyway
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: int = 0
    address: str = ""


@pytest.fixture
def head() -> Iterator[Head]:
    state = Head()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/api/version":
                self._send(
                    200, json.dumps({"version": "4", "ray_version": ray.__version__, "ray_commit": "x"})
                )
            elif self.path.startswith("/api/jobs/") and self.path[len("/api/jobs/") :] in state.jobs:
                self._send(200, json.dumps(state.jobs[self.path[len("/api/jobs/") :]]))
            else:
                self._send(404, "not found", "text/plain")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.submissions += 1
            sid = body["submission_id"]
            if state.refusals > 0:
                state.refusals -= 1
                if state.answer_lost:
                    state.jobs[sid] = job_details(body)
                self._send(500, state.refusal, "text/plain")
            elif sid in state.jobs:
                self._send(
                    500, f"Job with submission_id {sid} already exists. Please use another.", "text/plain"
                )
            else:
                state.jobs[sid] = job_details(body)
                self._send(200, json.dumps({"job_id": sid, "submission_id": sid}))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.address = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def job_details(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "SUBMISSION",
        "job_id": body["submission_id"],
        "submission_id": body["submission_id"],
        "status": "PENDING",
        "entrypoint": body["entrypoint"],
        "metadata": body.get("metadata") or {},
    }


def batch_fleet(example_fleet: Fleet, head: Head, wait_s: float) -> Fleet:
    return example_fleet.model_copy(
        update={"batch": BatchSpec(jobs_address=head.address, submit_wait_s=wait_s)}
    )


def make_client(fleet: Fleet, head: Head, told: list[str]) -> BatchClient:
    return BatchClient(fleet, None, clock=SystemClock(), address=head.address, on_wait=told.append)


def write_input(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"input": "where is order 1004?"}\n')
    return path


def test_submission_waits_for_the_job_agent_then_goes_through(
    example_fleet: Fleet, head: Head, tmp_path: Path
) -> None:
    head.refusals = 2
    told: list[str] = []
    client = make_client(batch_fleet(example_fleet, head, 30), head, told)
    paths = client.create(write_input(tmp_path), agent="orders")
    assert client.submit(paths) == paths.root.name
    assert head.submissions == 3
    assert len(told) == 1 and "no job agent yet" in told[0]  # said once, not once per try
    with ProgressStore(paths.progress, readonly=True) as progress:
        assert progress.state().job_ids == [paths.root.name]
    assert head.jobs[paths.root.name]["metadata"]["raygent_batch"] == paths.root.name


def test_a_head_that_never_gets_an_agent_is_a_clear_503(
    example_fleet: Fleet, head: Head, tmp_path: Path
) -> None:
    head.refusals = 10_000
    client = make_client(batch_fleet(example_fleet, head, 1.5), head, [])
    paths = client.create(write_input(tmp_path), agent="orders")
    with pytest.raises(JobSubmitError) as caught:
        client.submit(paths)
    assert caught.value.status == 503
    assert (
        "did not take the job: Request failed with status code 500: No available agent" in caught.value.detail
    )
    assert "(waited 1.5 s)" in caught.value.detail
    assert 2 <= head.submissions <= 4  # retried about once a second, then gave up
    with ProgressStore(paths.progress, readonly=True) as progress:
        assert progress.state().job_ids == []  # nothing recorded as submitted


def test_other_refusals_are_not_retried(example_fleet: Fleet, head: Head, tmp_path: Path) -> None:
    head.refusals, head.refusal = 1, "runtime_env is invalid"
    client = make_client(batch_fleet(example_fleet, head, 30), head, [])
    paths = client.create(write_input(tmp_path), agent="orders")
    with pytest.raises(JobSubmitError, match="runtime_env is invalid"):
        client.submit(paths)
    assert head.submissions == 1


def test_a_try_whose_answer_was_lost_is_not_submitted_twice(
    example_fleet: Fleet, head: Head, tmp_path: Path
) -> None:
    head.refusals, head.answer_lost = 1, True  # the job was made, but the answer said "no agent"
    client = make_client(batch_fleet(example_fleet, head, 30), head, [])
    paths = client.create(write_input(tmp_path), agent="orders")
    assert client.submit(paths) == paths.root.name
    assert list(head.jobs) == [paths.root.name]


def test_an_already_existing_job_of_another_batch_is_a_refusal(
    example_fleet: Fleet, head: Head, tmp_path: Path
) -> None:
    client = make_client(batch_fleet(example_fleet, head, 30), head, [])
    paths = client.create(write_input(tmp_path), agent="orders")
    head.jobs[paths.root.name] = {**job_details({"submission_id": paths.root.name, "entrypoint": "x"})}
    head.refusals = 1
    with pytest.raises(JobSubmitError, match="already exists"):
        client.submit(paths)


async def test_http_submission_to_a_head_without_agent_is_503_and_leaves_nothing(
    example_fleet: Fleet,
    head: Head,
    store: SQLiteStore,
    inproc: InProcessFleet,
    tracer_provider: TracerProvider,
) -> None:
    head.refusals = 10_000
    fleet = batch_fleet(example_fleet, head, 1.0)
    service = ApiService(
        fleet, store=store, invoker=inproc, clock=SystemClock(), tracer=tracer_provider.get_tracer("t")
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(service)), base_url="http://t"
    ) as c:
        resp = await c.post(
            "/v1/batches", json={"agent": "orders", "items": [{"input": "where is order 1004?"}]}
        )
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert "No available agent" in resp.json()["detail"]
    results = fleet.state_path(fleet.batch.results_dir)
    assert not results.exists() or not any(results.iterdir())  # the batch directory was removed
