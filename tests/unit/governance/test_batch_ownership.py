"""Batches in a governed fleet belong to their submitter (and the end user they act for), like runs: the
batch routes answer anyone else 404; ``batches:read_all`` / ``batches:cancel_all`` see or cancel every
batch; and every item runs as the submitter's request, so the policies decide it as they would a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from govkit import GovernedClient

from raygent.batch.client import BatchClient
from raygent.batch.executor import LocalExecutor
from raygent.batch.runner import BatchRunner
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.govconfig import RoleSpec

GOVERNED = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "governed.yaml"


@pytest.fixture
def governed_fleet(tmp_path: Path) -> Fleet:
    """The example plus a role that may use batches, and an operator who sees every batch."""
    fleet = load_fleet(GOVERNED, state_dir=tmp_path / "state")
    roles = {
        **fleet.roles,
        "batcher": RoleSpec(permissions=["batches:read", "batches:write"]),
        "batch-operator": RoleSpec(permissions=["batches:read", "batches:read_all", "batches:write"]),
    }
    return fleet.model_copy(update={"roles": roles})


async def batch_of(client: GovernedClient, tmp_path: Path, requester: str, end_user: str, text: str) -> str:
    source = tmp_path / f"{requester or 'nobody'}.jsonl"
    source.write_text(text)
    paths = BatchClient(client.fleet, clock=SystemClock()).create(
        source, agent="support", requester=requester, end_user=end_user
    )
    manifest = paths.read_manifest()
    runner = BatchRunner(
        paths, manifest, LocalExecutor(manifest), max_input_chars=16_000, clock=SystemClock()
    )
    await runner.run()
    runner.close()
    return paths.root.name


async def test_a_batch_is_shown_only_to_its_submitter_or_read_all(
    governed: GovernedClient, tmp_path: Path
) -> None:
    batch_id = await batch_of(governed, tmp_path, "C105", "C105", '{"input": "where is order 1004?"}\n')
    mine = governed.auth("C105", "batcher", customer="C105")
    theirs = governed.auth("C106", "batcher", customer="C106")
    shown = await governed.http.get(f"/v1/batches/{batch_id}", headers=mine)
    assert shown.status_code == 200 and shown.json()["completed"] == 1
    assert (await governed.http.get(f"/v1/batches/{batch_id}/results", headers=mine)).status_code == 200
    for path in (f"/v1/batches/{batch_id}", f"/v1/batches/{batch_id}/results"):
        other = await governed.http.get(path, headers=theirs)
        assert other.status_code == 404 and other.json()["detail"] == f"there is no batch {batch_id!r}"
    cancel = await governed.http.post(f"/v1/batches/{batch_id}/cancel", headers=theirs)
    assert cancel.status_code == 404
    operator = governed.auth("olga", "batch-operator")
    assert (await governed.http.get(f"/v1/batches/{batch_id}", headers=operator)).status_code == 200


async def test_items_run_as_the_submitters_requests(governed: GovernedClient, tmp_path: Path) -> None:
    # Order 1004 is C105's: the policies let C105's refund through, and refuse the same line from C106.
    line = '{"input": "refund order 1004, it arrived broken"}\n'
    own = await batch_of(governed, tmp_path, "C105", "C105", line)
    foreign = await batch_of(governed, tmp_path, "C106", "C106", line)
    operator = governed.auth("olga", "batch-operator")
    own_result = (await governed.http.get(f"/v1/batches/{own}/results", headers=operator)).text
    foreign_result = (await governed.http.get(f"/v1/batches/{foreign}/results", headers=operator)).text
    assert "has been issued" in own_result, own_result
    assert "belongs to another customer" in foreign_result, foreign_result
    runs = {r.run_id: r for r in await governed.store.list_runs(limit=100)}
    assert {(r.requester, r.end_user) for r in runs.values() if r.run_id.startswith(f"{own}")} == {
        ("C105", "C105")
    }
