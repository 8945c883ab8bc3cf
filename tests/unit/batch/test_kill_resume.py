"""A 1,000-line batch killed (SIGKILL) midway and resumed: every line once, no refund twice.

The job runs as its own process (``python -m raygent.batch.job DIR --executor local``, the same
entrypoint Ray Jobs starts, here without Ray so the test stays fast); resume is ``raygent batch resume
--local``. The offline model makes each item fast, so the whole test takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from batch_helpers import expected_answer, ledger_rows, mixed_lines

from raygent.batch.client import BatchClient
from raygent.batch.manifest import item_run_id
from raygent.batch.progress import ProgressStore
from raygent.core.store import open_store
from raygent.core.store.base import AuditQuery

RAYGENT = str(Path(sys.executable).parent / "raygent")


async def prompts_per_run(client: BatchClient) -> Counter[str]:
    store = open_store(client.fleet)
    prompts = await store.query_audit(AuditQuery(kind="prompt", agent="support", limit=100_000))
    await store.close()
    return Counter(p.run_id for p in prompts)


def wait_for_progress(path: Path, at_least: int, job: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before it could be killed"
        if path.exists():
            with ProgressStore(path, readonly=True) as progress:
                finished = progress.summary().finished
            if finished >= at_least:
                return finished
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} lines finished in {timeout_s} s")


def test_killed_batch_resumes_without_repeating_lines_or_refunds(
    client: BatchClient, write_input: object, tmp_path: Path
) -> None:
    lines = mixed_lines(1000, bad_every=50)
    paths = client.create(write_input(lines), agent="support", max_concurrency=16)  # type: ignore[operator]
    entrypoint = [sys.executable, "-m", "raygent.batch.job", str(paths.root), "--executor", "local"]
    job = subprocess.Popen(entrypoint)
    try:
        wait_for_progress(paths.progress, 300, job)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    with ProgressStore(paths.progress, readonly=True) as progress:
        before = progress.summary()
        finished_before = progress.finished_lines()
    assert before.state.status == "running"  # killed: it never got to say otherwise
    assert 300 <= before.finished < 1000
    assert not paths.results.exists()

    state_dir = Path(client.fleet.state_path("."))
    done = subprocess.run(
        [RAYGENT, "batch", "resume", paths.root.name, "--local", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "all-premium estimate" in done.stdout

    with ProgressStore(paths.progress, readonly=True) as progress:
        after = progress.summary()
    assert after.state.status == "completed"
    assert (after.total, after.completed, after.failed, after.invalid) == (1000, 980, 0, 20)
    results = [json.loads(x) for x in paths.results.read_text().splitlines()]
    errors = [json.loads(x) for x in paths.errors.read_text().splitlines()]
    assert len(results) == 980 and len(errors) == 20
    assert sorted(r["line"] for r in results + errors) == list(range(1, 1001))  # every line exactly once
    assert [e["line"] for e in errors] == list(range(50, 1001, 50))
    for result in results:
        assert result["output"].startswith(expected_answer(lines[result["line"] - 1])), result

    # One refund per refund request, whatever was in flight when the job died.
    refund_lines = {r["line"] for r in results if r["custom_id"].startswith("refund-")}
    rows = ledger_rows(state_dir)
    assert len(rows) == len(refund_lines) == sum('"custom_id": "refund-' in line for line in lines)
    per_item = Counter(key.split(".l")[1].split("-")[0] for key, _, _ in rows)
    assert set(per_item) == {str(line) for line in refund_lines}
    assert set(per_item.values()) == {1}

    # Lines finished before the kill were not run again: one prompt record per run, and the lines that
    # ran twice are only those in flight at the kill (at most max_concurrency).
    runs = asyncio.run(prompts_per_run(client))
    batch_id = paths.root.name
    assert all(runs[item_run_id(batch_id, line)] == 1 for line in finished_before if line % 50)
    assert sum(1 for count in runs.values() if count > 1) <= 16
