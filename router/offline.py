"""The offline model: a deterministic script that behaves like a chat model, with no network.

It answers from the ordered rules of an :class:`~raygent.core.config.OfflineModelSpec`; the first rule
that applies wins, and when none does it says ``fallback_say``. Token usage is estimated the way a real
tokenizer would count it, and latency is simulated through an injected ``sleep`` so tests run instantly.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raygent.core.config import OfflineModelSpec, OfflineRule
from raygent.core.messages import Message, ToolCall, Usage
from raygent.router.errors import ModelResponseError, ModelTimeoutError
from raygent.router.model import ModelRequest, ModelResponse, StreamDelta, StreamDone, StreamEvent
from raygent.router.tokens import count_request_tokens, count_tokens

__all__ = ["OfflineModel", "Sleep"]

Sleep = Callable[[float], Awaitable[None]]

# A template that is exactly one field keeps the field's JSON type when used as a tool argument.
_SINGLE_FIELD = re.compile(r"\{(\w+(?:\.\w+|\[\w+\])*)\}")
# Words with the whitespace before them; trailing whitespace is its own piece, so chunks join back exactly.
_WORD = re.compile(r"\s*\S+|\s+$")
_FORMATTER = string.Formatter()


class _MissingField(Exception):
    """A template refers to a field the conversation does not have."""

    def __init__(self, field: str, known: list[str] | None = None) -> None:
        super().__init__(field)
        self.field = field
        self.known = known or []


class _Fields:
    """Read-only attribute and item access over parsed JSON, so templates can say ``{result.a.b}``."""

    __slots__ = ("_path", "_value")

    def __init__(self, value: Any, path: str) -> None:
        self._value = value
        self._path = path

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # keep Python's own protocol lookups (copy, pickle) working
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key: str | int) -> Any:
        value = self._value
        if isinstance(value, dict) and str(key) in value:
            return _wrap(value[str(key)], f"{self._path}.{key}")
        if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            return _wrap(value[key], f"{self._path}[{key}]")
        known = sorted(value) if isinstance(value, dict) else []
        raise _MissingField(f"{self._path}.{key}", known)

    def __format__(self, spec: str) -> str:
        # JSON spelling (true, null, {"a":1}) reads better in a reply than Python's repr.
        return format(json.dumps(self._value, separators=(",", ":"), ensure_ascii=False), spec)

    def __str__(self) -> str:
        return format(self, "")


def _wrap(value: Any, path: str) -> Any:
    """Wrap containers, booleans and null; strings and numbers stay raw so format specs apply."""
    if isinstance(value, dict | list | bool) or value is None:
        return _Fields(value, path)
    return value


def _unwrap(value: Any) -> Any:
    return value._value if isinstance(value, _Fields) else value


class _Scope(dict[str, Any]):
    """The names a template may use; an unknown top-level name is reported, not a bare KeyError."""

    def __missing__(self, key: str) -> Any:
        raise _MissingField(key, sorted(self))


@dataclass(frozen=True, slots=True)
class _Turn:
    """What the rules look at: the last message, the text to match, the last user text and tool result."""

    last: Message | None
    tool_name: str | None
    subject: str
    user: str
    result: Any
    has_result: bool

    @classmethod
    def of(cls, messages: tuple[Message, ...]) -> _Turn:
        last = messages[-1] if messages else None
        user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        tool_msg = next((m for m in reversed(messages) if m.role == "tool"), None)
        has_result, result = False, None
        if tool_msg is not None:
            has_result, result = True, _parse_json(tool_msg.content)
        subject = last.content if last is not None else ""
        tool_name = None
        if last is not None and last.role == "tool":
            tool_name = last.name or _tool_name_by_call_id(messages, last.tool_call_id)
            # Rules are written against compact JSON with sorted keys ('"refundable":true'); normalise
            # so a result serialised with other spacing or key order still matches.
            if not isinstance(result, str):
                subject = json.dumps(result, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return cls(last, tool_name, subject, user, result, has_result)

    def scope(self, groups: Mapping[str, str]) -> _Scope:
        scope = _Scope(groups)
        scope["user"] = self.user
        if self.has_result:
            scope["result"] = _wrap(self.result, "result")
        return scope


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a plain-text tool result is still usable as {result}


def _tool_name_by_call_id(messages: tuple[Message, ...], call_id: str | None) -> str | None:
    """The tool name of a result that lacks ``name``, found through the assistant's matching call."""
    for message in reversed(messages):
        for call in message.tool_calls:
            if call.id == call_id:
                return call.name
    return None


class OfflineModel:
    """A scripted chat model implementing :class:`~raygent.router.model.Model`.

    Args:
        name: The model's key in the fleet; reported as ``ModelResponse.model``.
        spec: The script, fallback text, simulated latency and streaming chunk size.
        sleep: Awaitable sleep used to simulate latency; tests pass a fake one.
    """

    def __init__(self, name: str, spec: OfflineModelSpec, *, sleep: Sleep = asyncio.sleep) -> None:
        self._name = name
        self._spec = spec
        self._sleep = sleep
        self._patterns = [re.compile(rule.match) if rule.match else None for rule in spec.rules]

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"OfflineModel(name={self._name!r}, rules={len(self._spec.rules)})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` after the simulated latency.

        Raises:
            ModelTimeoutError: The simulated latency exceeds ``request.timeout_s``.
            ModelResponseError: The applying rule's template refers to a missing field.
        """
        await self._simulate_latency(request)
        return self.respond(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Yield the text of :meth:`complete`'s answer in chunks of about ``stream_chunk_tokens`` words."""
        await self._simulate_latency(request)
        response = self.respond(request)
        words = _WORD.findall(response.text)
        size = self._spec.stream_chunk_tokens
        for start in range(0, len(words), size):
            yield StreamDelta("".join(words[start : start + size]))
        yield StreamDone(response)

    async def aclose(self) -> None:
        """Nothing to release; present for the protocol."""

    def respond(self, request: ModelRequest) -> ModelResponse:
        """The scripted answer, computed without any latency (pure and deterministic)."""
        turn = _Turn.of(request.messages)
        offered = {tool.name for tool in request.tools}
        for index, rule in enumerate(self._spec.rules):
            groups = self._applies(index, rule, turn, offered)
            if groups is not None:
                return self._answer(index, rule, turn.scope(groups), request)
        return self._response(request, self._spec.fallback_say, (), rule_index=None)

    def _applies(
        self, index: int, rule: OfflineRule, turn: _Turn, offered: set[str]
    ) -> dict[str, str] | None:
        """The regex groups if ``rule`` applies to this turn, else None."""
        last = turn.last
        if last is None:
            return None
        if rule.after_tool is None:
            if last.role != "user":
                return None
        elif last.role != "tool" or turn.tool_name != rule.after_tool:
            return None
        if rule.call is not None and rule.call not in offered:
            return None
        pattern = self._patterns[index]
        if pattern is None:
            return {}
        found = pattern.search(turn.subject)
        return None if found is None else found.groupdict(default="")

    def _answer(self, index: int, rule: OfflineRule, scope: _Scope, request: ModelRequest) -> ModelResponse:
        if rule.call is None:
            text = self._render(index, rule.say or "", scope)
            return self._response(request, text, (), rule_index=index)
        arguments = {key: self._render_arg(index, value, scope) for key, value in rule.args.items()}
        assistant_turns = sum(1 for m in request.messages if m.role == "assistant")
        call = ToolCall(id=f"call_{assistant_turns}", name=rule.call, arguments=arguments)
        text = self._render(index, rule.reasoning, scope) if rule.reasoning else ""
        return self._response(request, text, (call,), rule_index=index)

    def _render_arg(self, index: int, value: Any, scope: _Scope) -> Any:
        if isinstance(value, dict):
            return {k: self._render_arg(index, v, scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_arg(index, v, scope) for v in value]
        if not isinstance(value, str):
            return value
        single = _SINGLE_FIELD.fullmatch(value)
        if single is None:
            return self._render(index, value, scope)
        try:
            field, _ = _FORMATTER.get_field(single.group(1), (), scope)
        except Exception as exc:
            raise self._template_error(index, value, exc) from None
        return _unwrap(field)

    def _render(self, index: int, template: str, scope: _Scope) -> str:
        try:
            return template.format_map(scope)
        except Exception as exc:
            raise self._template_error(index, template, exc) from None

    def _template_error(self, index: int, template: str, exc: Exception) -> ModelResponseError:
        """A clear, located error for a template that cannot be rendered against this conversation."""
        where = f"offline model {self._name!r}: rules[{index}]"
        extra: dict[str, Any] = {"model": self._name, "rule": index}
        if isinstance(exc, _MissingField):
            known = f"; available: {', '.join(exc.known)}" if exc.known else ""
            extra["field"] = exc.field
            detail = f"{where} refers to {{{exc.field}}}, which this conversation does not have{known}"
        elif isinstance(exc, AttributeError | KeyError | IndexError | TypeError):
            # e.g. {result.a.b} where result.a is a string: the field is missing, not the template wrong.
            detail = f"{where}: template {template!r} refers to a missing field ({exc})"
        else:
            detail = f"{where} has an invalid template {template!r} ({exc})"
        return ModelResponseError(detail, extra=extra)

    def _response(
        self, request: ModelRequest, text: str, calls: tuple[ToolCall, ...], *, rule_index: int | None
    ) -> ModelResponse:
        output_tokens = count_tokens(text) + sum(
            count_tokens(c.name) + count_tokens(json.dumps(c.arguments, separators=(",", ":"))) for c in calls
        )
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=Usage(count_request_tokens(request.messages, request.tools), output_tokens),
            model=self._name,
            finish_reason="tool_calls" if calls else "stop",
            latency_s=self._spec.latency_ms / 1000,
            extra={"offline_rule": rule_index},
        )

    async def _simulate_latency(self, request: ModelRequest) -> None:
        latency_s = self._spec.latency_ms / 1000
        timeout_s = request.timeout_s
        if timeout_s is not None and latency_s > timeout_s:
            # Behave like a slow server: the caller waits out its timeout, then gets the error.
            await self._sleep(timeout_s)
            raise ModelTimeoutError(
                f"offline model {self._name!r} takes {latency_s:g} s, more than the {timeout_s:g} s timeout",
                extra={"model": self._name},
            )
        if latency_s > 0:
            await self._sleep(latency_s)
