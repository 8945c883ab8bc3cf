"""The Store contract: CRUD, compare-and-set, run lifecycle, audit queries, on every backend.

Tests taking the ``store`` fixture run against SQLite and Redis (a test-owned redis-server); the rest
are SQLite specifics. The stateful test at the bottom runs the same model check over ``BACKENDS``.
"""

from __future__ import annotations

import asyncio
import pickle
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from store_backends import BACKEND_NAMES, open_backend

from raygent.core.config import Fleet, StoreSpec
from raygent.core.errors import ConflictError, NotFoundError, StoreError
from raygent.core.store import (
    AuditDraft,
    AuditQuery,
    AuditRecord,
    RunRecord,
    RunState,
    SessionContext,
    SQLiteStore,
    Store,
    VerifyResult,
    open_store,
)
from raygent.core.store.sqlite import SCHEMA_VERSION


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def now(self) -> float:
        self.t += 1.0
        return self.t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture(params=BACKEND_NAMES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    opened = open_backend(request.param, tmp_path, clock=FakeClock())
    yield opened
    await opened.close()


def make_run(
    run_id: str = "run-1", *, agent: str = "triage", created_at: float = 10.0, **kw: Any
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        agent=agent,
        session_id=kw.pop("session_id", "sess-1"),
        status=kw.pop("status", "queued"),
        input=kw.pop("input", "hello"),
        created_at=created_at,
        updated_at=kw.pop("updated_at", created_at),
        **kw,
    )


def draft(
    kind: str = "tool_call", *, run_id: str = "run-1", agent: str = "triage", ts: float = 1.0, **payload: Any
) -> AuditDraft:
    return AuditDraft(
        ts=ts,
        kind=kind,  # type: ignore[arg-type]
        run_id=run_id,
        session_id="sess-1",
        agent=agent,
        identity=f"agent:{agent}",
        payload=payload,
        trace_id="t" * 32,
    )


# ----- sessions ----------------------------------------------------------------------------------------


async def test_session_missing_is_none(store: SQLiteStore) -> None:
    assert await store.get_session("nope") is None


async def test_session_create_then_compare_and_set(store: SQLiteStore) -> None:
    first = await store.put_session(
        SessionContext("s1", [{"role": "user", "content": "hi"}]), expected_version=0
    )
    assert first.version == 1
    assert first.updated_at > 0
    assert await store.get_session("s1") == first

    second = await store.put_session(
        SessionContext("s1", [*first.messages, {"role": "assistant", "content": "hello"}]), expected_version=1
    )
    assert second.version == 2
    assert second.updated_at > first.updated_at
    assert await store.get_session("s1") == second


async def test_session_conflicts(store: SQLiteStore) -> None:
    await store.put_session(SessionContext("s1", []), expected_version=0)
    with pytest.raises(ConflictError) as info:
        await store.put_session(SessionContext("s1", [{"x": 1}]), expected_version=0)
    assert info.value.extra == {"session_id": "s1", "current_version": 1}
    with pytest.raises(ConflictError):
        await store.put_session(SessionContext("s1", []), expected_version=2)
    with pytest.raises(ConflictError):
        await store.put_session(SessionContext("missing", []), expected_version=3)
    # The failed writes left the stored state alone.
    stored = await store.get_session("s1")
    assert stored is not None and stored.version == 1 and stored.messages == []
    assert await store.get_session("missing") is None


async def test_session_concurrent_cas_has_one_winner(store: SQLiteStore) -> None:
    attempts = [store.put_session(SessionContext("race", [{"n": i}]), expected_version=0) for i in range(12)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [r for r in results if isinstance(r, SessionContext)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, SessionContext))
    assert await store.get_session("race") == winners[0]


# ----- runs --------------------------------------------------------------------------------------------


async def test_run_create_get_and_duplicate(store: SQLiteStore) -> None:
    run = make_run(caller_chain=["planner"], trace_id="abc", identity="user:ann")
    await store.create_run(run)
    assert await store.get_run("run-1") == run
    assert await store.get_run("other") is None
    with pytest.raises(ConflictError):
        await store.create_run(replace(run, input="different"))
    assert await store.get_run("run-1") == run


async def test_run_lifecycle(store: SQLiteStore) -> None:
    run = make_run()
    await store.create_run(run)
    running = replace(run, status="running", updated_at=11.0, steps=[{"kind": "model_call", "tokens": 5}])
    await store.save_run(running)
    assert await store.get_run("run-1") == running

    done = replace(
        running,
        status="completed",
        updated_at=12.0,
        output="the answer",
        steps=[*running.steps, {"kind": "answer"}],
        input_tokens=30,
        output_tokens=12,
        cost_usd=0.0042,
    )
    await store.save_run(done)
    assert await store.get_run("run-1") == done

    failed = replace(done, status="failed", error={"type": "about:blank", "status": 500, "detail": "boom"})
    await store.save_run(failed)
    stored = await store.get_run("run-1")
    assert stored is not None and stored.error == failed.error


async def test_save_run_keeps_identity_fields(store: SQLiteStore) -> None:
    await store.create_run(make_run())
    await store.save_run(
        replace(make_run(), agent="other", input="rewritten", created_at=99.0, status="running")
    )
    stored = await store.get_run("run-1")
    assert stored is not None
    assert (stored.agent, stored.input, stored.created_at, stored.status) == (
        "triage",
        "hello",
        10.0,
        "running",
    )


async def test_save_run_missing(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError) as info:
        await store.save_run(make_run("ghost"))
    assert info.value.extra == {"run_id": "ghost"}


async def test_list_runs_newest_first_with_filter_and_limit(store: SQLiteStore) -> None:
    await store.create_run(make_run("a", agent="triage", created_at=1.0))
    await store.create_run(make_run("b", agent="billing", created_at=3.0))
    await store.create_run(make_run("c", agent="triage", created_at=2.0))
    await store.create_run(make_run("d", agent="triage", created_at=2.0))  # tie: later insert first
    assert [r.run_id for r in await store.list_runs()] == ["b", "d", "c", "a"]
    assert [r.run_id for r in await store.list_runs(agent="triage")] == ["d", "c", "a"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["b", "d"]
    assert await store.list_runs(agent="nobody") == []
    assert await store.list_runs(limit=0) == []


# ----- audit -------------------------------------------------------------------------------------------


async def test_append_audit_assigns_contiguous_seqs(store: SQLiteStore) -> None:
    assert await store.append_audit([]) == []
    first = await store.append_audit([draft(tool="search"), draft("model_call")])
    second = await store.append_audit([draft("error", reason="x")])
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert second[0].prev_hash == first[-1].hash
    assert await store.query_audit(AuditQuery()) == first + second
    assert await store.verify_audit() == VerifyResult(ok=True, records_checked=3)


async def test_append_audit_normalises_payload(store: SQLiteStore) -> None:
    payload: dict[str, Any] = {"tool": "search", "args": ("a", 1), "nested": {"z": 1, "a": [1.5, None]}}
    [record] = await store.append_audit([draft(**payload)])
    payload["tool"] = "mutated after the call"
    assert record.payload == {"tool": "search", "args": ["a", 1], "nested": {"z": 1, "a": [1.5, None]}}
    assert await store.query_audit(AuditQuery()) == [record]


async def test_append_audit_rejects_unknown_kind_atomically(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="unknown audit kind"):
        await store.append_audit([draft(), draft("gossip")])
    assert await store.query_audit(AuditQuery()) == []


async def test_concurrent_appends_in_one_process(store: SQLiteStore) -> None:
    await asyncio.gather(*(store.append_audit([draft(n=i), draft(n=i)]) for i in range(20)))
    records = await store.query_audit(AuditQuery())
    assert [r.seq for r in records] == list(range(1, 41))
    assert (await store.verify_audit()).ok


async def test_query_audit_filters(store: SQLiteStore) -> None:
    await store.append_audit(
        [
            draft("tool_call", run_id="r1", agent="triage", ts=10.0, tool="search"),
            draft("model_call", run_id="r1", agent="triage", ts=11.0, model="m"),
            draft("tool_call", run_id="r2", agent="billing", ts=12.0, tool="refund"),
            draft("policy_decision", run_id="r2", agent="billing", ts=13.0, tool="refund", decision="deny"),
            draft("tool_call", run_id="r3", agent="triage", ts=14.0, tool="search"),
        ]
    )

    async def seqs(**kw: Any) -> list[int]:
        return [r.seq for r in await store.query_audit(AuditQuery(**kw))]

    assert await seqs() == [1, 2, 3, 4, 5]
    assert await seqs(run_id="r2") == [3, 4]
    assert await seqs(agent="triage") == [1, 2, 5]
    assert await seqs(kind="tool_call") == [1, 3, 5]
    assert await seqs(tool="refund") == [3, 4]
    assert await seqs(tool="search", agent="triage", kind="tool_call") == [1, 5]
    assert await seqs(since_ts=12.0) == [3, 4, 5]
    assert await seqs(after_seq=2) == [3, 4, 5]
    assert await seqs(after_seq=2, limit=2) == [3, 4]
    assert await seqs(limit=0) == []
    assert await seqs(tool="nothing") == []


async def test_write_lock_timeout_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    quick = SQLiteStore(path, busy_timeout_s=0.3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError) as info:
            await quick.append_audit([draft()])
        assert info.value.retryable
        # Readers are not blocked by a writer in WAL mode.
        assert await quick.query_audit(AuditQuery()) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(await quick.append_audit([draft()])) == 1
    await quick.close()


async def test_a_broken_database_is_not_retryable(tmp_path: Path) -> None:
    # "no such table" is an OperationalError too, but it fails the same way on every try: a caller
    # (the run loop, a 503 with Retry-After) must not be told to try again.
    path = tmp_path / "broken.db"
    store = SQLiteStore(path)
    await store.append_audit([draft()])
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE audit")
    with pytest.raises(StoreError) as info:
        await store.append_audit([draft()])
    assert not info.value.retryable and "no such table" in info.value.detail
    await store.close()


# ----- opening, closing, pickling ----------------------------------------------------------------------


async def test_open_creates_parent_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    opened = SQLiteStore(path)
    await opened.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    # Reopening an existing file is a no-op migration.
    again = SQLiteStore(path)
    assert await again.verify_audit() == VerifyResult(ok=True, records_checked=0)
    await again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path)


async def test_closed_store_raises(tmp_path: Path) -> None:
    opened = SQLiteStore(tmp_path / "x.db")
    await opened.close()
    with pytest.raises(StoreError, match="closed"):
        await opened.get_run("r")


async def test_open_store_uses_fleet_state_dir(tmp_path: Path) -> None:
    # model_construct: only the store settings matter here, not a whole valid fleet.
    fleet = Fleet.model_construct(
        name="f",
        models={},
        agents={},
        store=StoreSpec(path="nested/fleet.db", busy_timeout_s=2.0),
        state_dir=str(tmp_path),
    )
    opened = open_store(fleet)
    assert isinstance(opened, SQLiteStore)
    assert opened.path == tmp_path / "nested" / "fleet.db" and opened.busy_timeout_s == 2.0
    assert opened.path.exists()
    await opened.close()


async def test_records_and_errors_pickle(store: SQLiteStore) -> None:
    [record] = await store.append_audit([draft(tool="search")])
    values: list[object] = [
        record,
        draft(tool="x"),
        make_run(steps=[{"a": 1}], error={"detail": "x"}),
        SessionContext("s", [{"role": "user"}], 3, 4.0),
        AuditQuery(run_id="r", tool="t", limit=5),
        VerifyResult(ok=False, records_checked=2, first_bad_seq=3, reason="hash"),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value
    error = pickle.loads(pickle.dumps(ConflictError("c", extra={"session_id": "s"})))
    assert isinstance(error, ConflictError) and error.extra == {"session_id": "s"} and error.retryable


async def test_store_pickles_to_a_working_copy(store: SQLiteStore) -> None:
    await store.append_audit([draft()])
    copy = pickle.loads(pickle.dumps(store))
    assert repr(copy) == repr(store) and copy is not store
    await copy.append_audit([draft()])
    assert [r.seq for r in await store.query_audit(AuditQuery())] == [1, 2]
    await copy.close()


# ----- model-based check, pluggable backend ------------------------------------------------------------

BackendFactory = Callable[[Path], Store]
BACKENDS: dict[str, BackendFactory] = {
    name: (lambda directory, name=name: open_backend(name, directory)) for name in BACKEND_NAMES
}

_ids = st.sampled_from(["a", "b", "c"])
_json_leaf = (
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(st.characters(codec="utf-8"), max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_messages = st.lists(
    st.dictionaries(st.sampled_from(["role", "content", "n"]), _json, max_size=3), max_size=3
)
_steps = st.lists(st.dictionaries(st.sampled_from(["kind", "tokens"]), _json, max_size=2), max_size=3)
_drafts = st.lists(
    st.builds(
        AuditDraft,
        ts=st.integers(0, 20).map(float),
        kind=st.sampled_from(["tool_call", "model_call", "error"]),
        run_id=_ids,
        session_id=st.just("s"),
        agent=st.sampled_from(["triage", "billing"]),
        identity=st.just("agent:x"),
        # Mostly with a "tool" field, so the tool filter has something to find.
        payload=st.fixed_dictionaries({"tool": st.sampled_from(["search", "refund"])}, optional={"x": _json})
        | st.fixed_dictionaries({}, optional={"x": _json}),
        trace_id=st.none() | st.just("t1"),
    ),
    min_size=1,  # the empty append is covered above; here it would only crowd out real ones
    max_size=8,
)


def _rarely(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([None] * (2 * len(values)) + values)


def make_machine(factory: BackendFactory) -> type[RuleBasedStateMachine]:
    """A state machine checking ``factory``'s store against plain dicts and lists."""

    class StoreMachine(RuleBasedStateMachine):
        runs_created = Bundle("runs_created")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.directory = Path(tempfile.mkdtemp(prefix="raygent-model-"))
            self.store = factory(self.directory)
            self.sessions: dict[str, tuple[list[dict[str, Any]], int]] = {}
            self.runs: dict[str, RunRecord] = {}
            self.run_order: list[str] = []
            self.audit: list[AuditRecord] = []

        def call(self, awaitable: Any) -> Any:
            return self.loop.run_until_complete(awaitable)

        def teardown(self) -> None:
            self.call(self.store.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

        @initialize()
        def empty(self) -> None:
            assert self.call(self.store.list_runs(limit=100)) == []

        @rule(
            session_id=_ids, messages=_messages, offset=st.sampled_from([0, 0, 0, -1, 1]), fresh=st.booleans()
        )
        def put_session(
            self, session_id: str, messages: list[dict[str, Any]], offset: int, fresh: bool
        ) -> None:
            current = self.sessions.get(session_id, ([], 0))[1]
            expected = 0 if fresh else max(0, current + offset)
            ctx = SessionContext(session_id, messages, version=99)
            if expected != current:
                with pytest.raises(ConflictError):
                    self.call(self.store.put_session(ctx, expected_version=expected))
                return
            stored = self.call(self.store.put_session(ctx, expected_version=expected))
            assert (stored.messages, stored.version) == (messages, current + 1)
            self.sessions[session_id] = (messages, current + 1)

        @rule(session_id=_ids)
        def get_session(self, session_id: str) -> None:
            stored = self.call(self.store.get_session(session_id))
            if session_id not in self.sessions:
                assert stored is None
            else:
                assert stored is not None
                assert (stored.messages, stored.version) == self.sessions[session_id]

        @rule(
            target=runs_created,
            run_id=_ids,
            agent=st.sampled_from(["triage", "billing"]),
            created_at=st.integers(0, 5),
        )
        def create_run(self, run_id: str, agent: str, created_at: int) -> str:
            run = make_run(run_id, agent=agent, created_at=float(created_at))
            if run_id in self.runs:
                with pytest.raises(ConflictError):
                    self.call(self.store.create_run(run))
            else:
                self.call(self.store.create_run(run))
                self.runs[run_id] = run
                self.run_order.append(run_id)
            return run_id

        @rule(
            run_id=runs_created | _ids,
            status=st.sampled_from(["running", "completed", "failed"]),
            steps=_steps,
            output=st.none() | st.text(max_size=5),
            tokens=st.integers(0, 100),
        )
        def save_run(
            self, run_id: str, status: RunState, steps: list[dict[str, Any]], output: str | None, tokens: int
        ) -> None:
            base = self.runs.get(run_id, make_run(run_id))
            updated = replace(
                base,
                status=status,
                steps=steps,
                output=output,
                input_tokens=tokens,
                updated_at=base.updated_at + 1,
            )
            if run_id not in self.runs:
                with pytest.raises(NotFoundError):
                    self.call(self.store.save_run(updated))
                return
            self.call(self.store.save_run(updated))
            self.runs[run_id] = updated

        @rule(run_id=_ids)
        def get_run(self, run_id: str) -> None:
            assert self.call(self.store.get_run(run_id)) == self.runs.get(run_id)

        @rule(agent=st.none() | st.sampled_from(["triage", "billing"]), limit=st.integers(0, 4))
        def list_runs(self, agent: str | None, limit: int) -> None:
            order = {run_id: i for i, run_id in enumerate(self.run_order)}
            expected = sorted(
                (r for r in self.runs.values() if agent is None or r.agent == agent),
                key=lambda r: (r.created_at, order[r.run_id]),
                reverse=True,
            )[:limit]
            assert self.call(self.store.list_runs(agent=agent, limit=limit)) == expected

        @rule(drafts=_drafts)
        def append_audit(self, drafts: list[AuditDraft]) -> None:
            records = self.call(self.store.append_audit(drafts))
            assert [r.seq for r in records] == list(
                range(len(self.audit) + 1, len(self.audit) + len(drafts) + 1)
            )
            for record, source in zip(records, drafts, strict=True):
                assert (record.kind, record.run_id, record.agent, record.ts, record.payload) == (
                    source.kind,
                    source.run_id,
                    source.agent,
                    source.ts,
                    source.payload,
                )
            self.audit.extend(records)

        @rule(
            # Each filter is usually off, so combined queries still match records often enough to matter.
            run_id=_rarely(["a", "b", "c"]),
            agent=_rarely(["triage", "billing"]),
            tool=_rarely(["search", "refund"]),
            kind=_rarely(["tool_call", "error"]),
            since_ts=_rarely([0.0, 5.0, 10.0, 20.0]),
            after_seq=st.sampled_from([0, 0, 0, 1, 3, 8]),
            limit=st.sampled_from([1000, 1000, 1000, 0, 1, 3]),
        )
        def query_audit(
            self,
            run_id: str | None,
            agent: str | None,
            tool: str | None,
            kind: str | None,
            since_ts: float | None,
            after_seq: int,
            limit: int,
        ) -> None:
            query = AuditQuery(
                run_id=run_id,
                agent=agent,
                tool=tool,
                kind=kind,
                since_ts=since_ts,
                after_seq=after_seq,
                limit=limit,
            )
            expected = [
                r
                for r in self.audit
                if r.seq > after_seq
                and (run_id is None or r.run_id == run_id)
                and (agent is None or r.agent == agent)
                and (kind is None or r.kind == kind)
                and (tool is None or r.payload.get("tool") == tool)
                and (since_ts is None or r.ts >= since_ts)
            ][:limit]
            assert self.call(self.store.query_audit(query)) == expected

        @invariant()
        def chain_verifies(self) -> None:
            result = self.call(self.store.verify_audit())
            assert result == VerifyResult(ok=True, records_checked=len(self.audit))

    return StoreMachine


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_store_agrees_with_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "redis":
        request.getfixturevalue("redis_url")
    run_state_machine_as_test(
        make_machine(BACKENDS[backend]),
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
