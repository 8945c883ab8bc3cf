"""Rendezvous hashing: one replica per session, an even spread, minimal movement on scaling."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from raygent.core.runs import RunInput
from raygent.serve.affinity import SessionAffinityRouter, rendezvous_order, session_key

SESSIONS = [f"ses-{i}" for i in range(20_000)]


def owners(replicas: list[str]) -> dict[str, str]:
    return {s: rendezvous_order(s, replicas)[0] for s in SESSIONS}


def test_order_is_deterministic_and_complete() -> None:
    replicas = ["r1", "r2", "r3"]
    assert rendezvous_order("s", replicas) == rendezvous_order("s", list(reversed(replicas)))
    assert sorted(rendezvous_order("s", replicas)) == replicas
    assert rendezvous_order("s", []) == []


def test_sessions_spread_evenly() -> None:
    counts = Counter(owners(["a", "b", "c", "d"]).values())
    assert set(counts) == {"a", "b", "c", "d"}
    for count in counts.values():
        assert abs(count - 5000) < 5000 * 0.05  # within 5 % of a perfect split


def test_scaling_moves_only_the_sessions_it_must() -> None:
    before = owners(["a", "b", "c", "d"])
    grown = owners(["a", "b", "c", "d", "e"])
    moved = [s for s in SESSIONS if before[s] != grown[s]]
    assert all(grown[s] == "e" for s in moved)  # only to the new replica
    assert abs(len(moved) - len(SESSIONS) / 5) < len(SESSIONS) * 0.02
    shrunk = owners(["a", "b", "d"])
    moved = [s for s in SESSIONS if before[s] != shrunk[s]]
    assert all(before[s] == "c" for s in moved)  # only the removed replica's sessions
    assert len(moved) == sum(1 for s in SESSIONS if before[s] == "c")


def test_session_key_reads_the_run_input() -> None:
    run = RunInput(run_id="r", agent="a", input="x", session_id="cust-7", deadline_ts=0.0)
    assert session_key([run], {}) == "cust-7"
    assert session_key([], {"req": run}) == "cust-7"
    assert session_key(["not a run"], {}) is None


@dataclass(frozen=True)
class FakeReplica:
    replica_id: Any


async def test_router_ranks_every_replica_in_the_sessions_order() -> None:
    replicas = [FakeReplica(SimpleNamespace(unique_id=u)) for u in ("x", "y", "z")]
    router = object.__new__(SessionAffinityRouter)  # choose_replicas uses no router state
    run = RunInput(run_id="r", agent="a", input="x", session_id="cust-7", deadline_ts=0.0)
    pending = SimpleNamespace(args=[run], kwargs={}, metadata=SimpleNamespace(request_id="req-1"))
    ranks = await router.choose_replicas(replicas, pending)  # type: ignore[arg-type]
    assert [[r.replica_id.unique_id for r in rank] for rank in ranks] == [
        [u] for u in rendezvous_order("cust-7", ["x", "y", "z"])
    ]
    assert await router.choose_replicas(replicas, None) == [replicas]  # type: ignore[arg-type]
    assert await router.choose_replicas([], pending) == []  # type: ignore[arg-type]
