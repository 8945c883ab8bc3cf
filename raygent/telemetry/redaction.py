"""Redaction of tool arguments before they are put on a span.

Spans leave the process (a collector, a vendor), so a tool's arguments are recorded only after every
value that may be a secret is replaced: keys named like a secret (the fleet's ``audit.redact_keys``
plus common ones), parameters the tool's schema marks secret (``format: password``, ``writeOnly``,
``x-secret``), and string values that look like credentials wherever they are (API keys, bearer
tokens, JWTs, private keys). Long strings are cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "ArgumentRedactor", "secret_fields_of"]

REDACTED = "[REDACTED]"
_DEFAULT_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "card_number",
    "cvv",
    "pin",
    "ssn",
)
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]+|-----BEGIN [A-Z ]*PRIVATE KEY"
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,})"
)


def secret_fields_of(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level properties a JSON schema marks secret (``format: password``, ``writeOnly``, ``x-secret``)."""
    props = schema.get("properties") or {}
    return frozenset(
        name
        for name, prop in props.items()
        if isinstance(prop, Mapping)
        and (
            prop.get("format") == "password" or prop.get("writeOnly") is True or prop.get("x-secret") is True
        )
    )


class ArgumentRedactor:
    """Turns a tool call's arguments into a redacted JSON string for the ``gen_ai.tool.call.arguments``
    span attribute.

    Args:
        secret_keys: Key fragments (case-insensitive) whose values are always replaced.
        secret_fields: Per tool, parameter names its schema marks secret.
        max_chars: Strings longer than this are cut (and the whole attribute is capped at 4x this).
    """

    def __init__(
        self,
        *,
        secret_keys: Iterable[str] = (),
        secret_fields: Mapping[str, frozenset[str]] | None = None,
        max_chars: int = 256,
    ) -> None:
        self._keys = tuple(sorted({k.lower() for k in (*_DEFAULT_KEYS, *secret_keys)}))
        self._fields = dict(secret_fields or {})
        self._max = max_chars

    @classmethod
    def from_tools(
        cls, tools: Mapping[str, Mapping[str, Any]], *, secret_keys: Iterable[str] = ()
    ) -> ArgumentRedactor:
        """Build from each tool's parameter schema (``{tool: schema}``)."""
        return cls(secret_keys=secret_keys, secret_fields={n: secret_fields_of(s) for n, s in tools.items()})

    def _secret_key(self, key: str) -> bool:
        lowered = key.lower()
        return any(k in lowered for k in self._keys)

    def _value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            if _SECRET_VALUE.search(value):
                return REDACTED
            return value if len(value) <= self._max else value[: self._max] + "…"
        if depth > 6:
            return "…"
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if self._secret_key(str(k)) else self._value(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._value(v, depth + 1) for v in value[:50]]
        return value if isinstance(value, int | float | bool) or value is None else str(type(value).__name__)

    def redact(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments with every secret replaced by ``[REDACTED]``."""
        fields = self._fields.get(tool, frozenset())
        return {
            str(k): REDACTED if k in fields or self._secret_key(str(k)) else self._value(v, 1)
            for k, v in arguments.items()
        }

    def attribute(self, tool: str, arguments: Mapping[str, Any]) -> str:
        """The redacted arguments as compact JSON, capped in length."""
        text = json.dumps(
            self.redact(tool, arguments), separators=(",", ":"), ensure_ascii=False, default=str
        )
        cap = self._max * 4
        return text if len(text) <= cap else text[:cap] + "…"
