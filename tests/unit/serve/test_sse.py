"""SSE framing round-trips through the parser clients use."""

from __future__ import annotations

from raygent.serve.sse import comment, encode_event, parse_events


def test_events_round_trip_with_newlines_in_data() -> None:
    body = encode_event("delta", {"text": "line one\nline two"}, event_id=1) + comment("keep-alive")
    body += encode_event("done", {"status": "completed", "n": [1, 2]})
    text = body.decode()
    assert "id: 1\nevent: delta\n" in text
    assert parse_events(text) == [
        ("delta", {"text": "line one\nline two"}),
        ("done", {"status": "completed", "n": [1, 2]}),
    ]


def test_unnamed_events_are_messages() -> None:
    assert parse_events('data: {"a": 1}\r\n\r\n') == [("message", {"a": 1})]
