"""Token estimates: the BPE-like rule, additivity, and request overheads."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from raygent.core.messages import Message, ToolCall, ToolSchema
from raygent.router.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    count_request_tokens,
    count_tokens,
)


def test_words_cost_a_token_per_four_characters() -> None:
    assert count_tokens("") == 0
    assert count_tokens("   \n\t ") == 0
    assert count_tokens("hi") == 1
    assert count_tokens("hello") == 2  # 5 characters
    assert count_tokens("internationalization") == 5  # 20 characters


def test_punctuation_is_one_token_each() -> None:
    assert count_tokens("a, b.") == 4
    assert count_tokens('{"found":false}') == count_tokens("found") + count_tokens("false") + 5  # { " " : }


def test_realistic_sentence_lands_near_real_tokenizers() -> None:
    # "Where is my order 1042?" is 7 tokens for cl100k; the estimate should be in that neighbourhood.
    assert 5 <= count_tokens("Where is my order 1042?") <= 9


_words = st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), max_size=40)


@given(_words, _words)
def test_counts_add_up_across_whitespace(left: str, right: str) -> None:
    assert count_tokens(f"{left} {right}") == count_tokens(left) + count_tokens(right)


@given(st.text(max_size=200))
def test_count_is_bounded_by_the_characters(text: str) -> None:
    visible = len("".join(text.split()))
    assert math.ceil(visible / 4) <= count_tokens(text) <= visible


def test_request_adds_per_message_overhead_and_priming() -> None:
    one = (Message("user", "hello"),)
    assert count_request_tokens(one) == REPLY_PRIMING_TOKENS + MESSAGE_OVERHEAD_TOKENS + 2
    two = (Message("system", ""), Message("user", "hello"))
    assert count_request_tokens(two) - count_request_tokens(one) == MESSAGE_OVERHEAD_TOKENS


def test_request_counts_tool_schemas_and_tool_calls() -> None:
    messages = (Message("user", "where is order 1042?"),)
    tool = ToolSchema("lookup_order", "Look an order up.", {"type": "object", "properties": {"id": {}}})
    with_tool = count_request_tokens(messages, (tool,))
    schema_json = json.dumps(tool.to_openai(), separators=(",", ":"))
    assert with_tool - count_request_tokens(messages) == count_tokens(schema_json)

    call = ToolCall("c1", "lookup_order", {"order_id": "1042"})
    with_call = (*messages, Message("assistant", "", (call,)))
    added = count_request_tokens(with_call) - count_request_tokens(messages)
    assert added == MESSAGE_OVERHEAD_TOKENS + count_tokens("lookup_order") + count_tokens(
        '{"order_id":"1042"}'
    )
