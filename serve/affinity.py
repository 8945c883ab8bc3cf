"""Session affinity: a Ray Serve request router that keeps each session on one replica.

Rendezvous (highest-random-weight) hashing: every replica gets a score ``hash(session, replica)`` and
the session goes to the highest score. Random session ids spread evenly over the replicas; when a
replica joins, only the sessions that now score highest on it move (about ``1/n``), and when one
leaves only its own sessions move. If the preferred replica is full, the request falls through to the
session's second choice, then its third, and so on (still deterministic per session), so affinity
never turns into a hot spot that rejects work while other replicas are idle.

The session is read from the request's first argument (``RunInput.session_id``); a request without
one is spread by its request id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

__all__ = ["SessionAffinityRouter", "rendezvous_order", "session_key"]


def _score(key: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(key: str, replicas: Iterable[str]) -> list[str]:
    """``replicas`` from the most to the least preferred for ``key`` (ties broken by name)."""
    return sorted(replicas, key=lambda r: (-_score(key, r), r))


def session_key(args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """The session id of a request to an agent deployment, if it carries one."""
    first = args[0] if args else kwargs.get("req")
    session = getattr(first, "session_id", None)
    return session if isinstance(session, str) and session else None


class SessionAffinityRouter(RequestRouter):
    """Routes each request to its session's rendezvous ranking of the live replicas.

    Configured per deployment through ``request_router_config`` (see :mod:`raygent.serve.app`); every
    handle to the deployment (the ingress, the gateway for delegated runs) routes the same way.
    """

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = None
        if pending_request is not None:
            key = session_key(pending_request.args, pending_request.kwargs)
            key = key or pending_request.metadata.request_id
        if key is None:
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        # One replica per rank: Serve tries the ranks in order and takes the first that has room.
        return [[by_id[rid]] for rid in rendezvous_order(key, by_id)]
