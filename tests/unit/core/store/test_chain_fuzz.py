"""Fuzzing the audit verifier: any single edit, deletion, reordering, truncation or splice of a chain is
found, and the verifier names the first record touched."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from raygent.core.store.base import GENESIS_HASH, AuditDraft, AuditRecord
from raygent.core.store.chain import seal, verify_chain


def chain(n: int, tag: str) -> list[AuditRecord]:
    drafts = [
        AuditDraft(ts=1000.0 + i, kind="action", run_id=f"r{i % 3}", session_id="s", agent="a", identity="i",
                   payload={"i": i, "tag": tag})
        for i in range(n)
    ]  # fmt: skip
    return seal(drafts, 0, GENESIS_HASH)


def head(records: list[AuditRecord]) -> tuple[int, str]:
    return records[-1].seq, records[-1].hash


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40),
    op=st.sampled_from(["payload", "field", "delete", "swap", "truncate", "splice", "duplicate"]),
    data=st.data(),
)
def test_the_first_bad_seq_is_named(n: int, op: str, data: st.DataObject) -> None:
    records = chain(n, "real")
    expected_head = head(records)
    assert verify_chain(records, expected_head=expected_head).ok
    k = data.draw(st.integers(min_value=1, max_value=n), label="k")  # seq of the record touched
    tampered = list(records)
    i = k - 1
    if op == "payload":
        value = data.draw(st.integers(), label="value")
        tampered[i] = replace(records[i], payload={**records[i].payload, "i": value, "x": 1})
        want = k
    elif op == "field":
        field = data.draw(
            st.sampled_from(["ts", "run_id", "agent", "identity", "kind", "trace_id"]), label="field"
        )
        new = 1.5 if field == "ts" else "forged"
        tampered[i] = replace(records[i], **{field: new})
        want = k
    elif op == "delete":
        del tampered[i]
        want = k
    elif op == "swap":
        k = min(k, n - 1)
        i = k - 1
        tampered[i], tampered[i + 1] = tampered[i + 1], tampered[i]
        want = k
    elif op == "duplicate":
        tampered.insert(i + 1, records[i])
        want = k + 1
    elif op == "truncate":
        k = min(k, n - 1)
        tampered = tampered[:k]
        want = k + 1
    else:  # splice: records of another chain, same seqs, in place of the real ones
        k = max(k, 2)
        other = chain(n, "forged")
        j = data.draw(st.integers(min_value=k, max_value=n), label="j")
        tampered = [*records[: k - 1], *other[k - 1 : j], *records[j:]]
        want = k
    result = verify_chain(tampered, expected_head=expected_head)
    assert not result.ok, (op, k)
    assert result.first_bad_seq == want, (op, k, result)
    assert result.records_checked <= want - 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), max_size=6), st.integers(min_value=1, max_value=30))
def test_random_damage_is_never_reported_as_ok(positions: list[int], n: int) -> None:
    records = chain(n, "real")
    damaged = list(records)
    touched = False
    for p in positions:
        if p < len(damaged):
            damaged[p] = replace(damaged[p], payload={"damaged": p})
            touched = True
    result = verify_chain(damaged, expected_head=head(records))
    assert result.ok is not touched
    if touched:
        assert result.first_bad_seq == min(p for p in positions if p < n) + 1
