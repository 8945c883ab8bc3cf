"""Batch input lines: both formats, and a located error for every kind of bad line."""

from __future__ import annotations

import json

import pytest

from raygent.batch.items import MAX_LINE_BYTES, BatchItem, LineError, parse_line, parse_lines


def chat(content: object, **extra: object) -> str:
    body = {
        "model": "any",
        "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": content}],
    }
    return json.dumps(
        {"custom_id": "a1", "method": "POST", "url": "/v1/chat/completions", "body": body, **extra}
    )


def test_openai_batch_line_takes_the_last_user_message() -> None:
    line = json.dumps(
        {
            "custom_id": "req-7",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "where is order 1004?"},
                ]
            },
        }
    )
    assert parse_line(line, 3, max_input_chars=100) == BatchItem(3, "req-7", "where is order 1004?")


def test_openai_content_parts_and_responses_bodies() -> None:
    parts = [{"type": "text", "text": "refund"}, {"type": "text", "text": "order 1004"}]
    assert parse_line(chat(parts), 1, max_input_chars=100) == BatchItem(1, "a1", "refund\norder 1004")
    responses = json.dumps({"custom_id": "r", "url": "/v1/responses", "body": {"input": "hello"}})
    assert parse_line(responses, 2, max_input_chars=100) == BatchItem(2, "r", "hello")


def test_plain_line_gets_a_default_custom_id() -> None:
    assert parse_line('{"input": "hi"}', 12, max_input_chars=100) == BatchItem(12, "line-12", "hi")
    assert parse_line('{"input": "hi", "custom_id": "x"}', 1, max_input_chars=100) == BatchItem(1, "x", "hi")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{nope", "not valid JSON (column 2"),
        ("[1, 2]", "must be a JSON object"),
        ('{"prompt": "hi"}', "needs 'input' (plain) or 'body'"),
        ('{"input": 5}', "'input' must be a string"),
        ('{"input": "   "}', "the input is empty"),
        ('{"input": "' + "x" * 11 + '"}', "has 11 characters; the agent accepts 10"),
        ('{"input": "hi", "custom_id": 3}', "custom_id must be a non-empty string"),
        (chat("hi", url="/v1/embeddings"), "url '/v1/embeddings' is not supported"),
        (chat("hi", method="GET"), "method 'GET' is not supported"),
        (chat([{"type": "image_url", "image_url": {"url": "x"}}]), "no text content"),
        (json.dumps({"body": {"messages": [{"role": "system", "content": "x"}]}}), "no user message"),
        (json.dumps({"body": {"messages": []}}), "needs 'messages'"),
        (json.dumps({"body": "text"}), "body must be a JSON object"),
    ],
)
def test_bad_lines_become_errors_with_their_line_number(text: str, fragment: str) -> None:
    parsed = parse_line(text, 41, max_input_chars=10)
    assert isinstance(parsed, LineError)
    assert parsed.line == 41
    assert fragment in parsed.message
    assert parsed.to_json()["line"] == 41


def test_oversized_and_non_utf8_lines() -> None:
    big = parse_line(b"x" * (MAX_LINE_BYTES + 1), 2, max_input_chars=10)
    assert isinstance(big, LineError) and "longer than" in big.message
    binary = parse_line(b'{"input": "\xff"}', 3, max_input_chars=10)
    assert isinstance(binary, LineError) and "not UTF-8" in binary.message


def test_parse_lines_numbers_from_one_skips_blanks_and_flags_repeated_ids() -> None:
    lines = [
        b'{"input": "a", "custom_id": "same"}\n',
        b"\n",
        b'{"input": "b", "custom_id": "same"}\r\n',
        b"{broken\n",
        b'{"input": "c"}',
    ]
    parsed = list(parse_lines(lines, max_input_chars=100))
    assert [p.line for p in parsed] == [1, 3, 4, 5]
    assert parsed[0] == BatchItem(1, "same", "a")
    assert isinstance(parsed[1], LineError)
    assert parsed[1].message == "custom_id 'same' is already used on line 1"
    assert isinstance(parsed[2], LineError)
    assert parsed[3] == BatchItem(5, "line-5", "c")
