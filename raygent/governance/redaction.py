"""Redaction: what is masked before text leaves the gateway — in tool results, audit payloads, log lines
and error details.

Three layers, all applied by one :class:`Redactor`:

1. every secret value and token this process resolved (:class:`~raygent.integrations.secrets.KnownSecrets`),
   found wherever it appears, even inside a longer string;
2. values shaped like credentials (bearer and basic headers, JWTs, private keys, ``user:pass@`` in URLs),
   and the values of keys named like secrets (``password``, ``client_secret``, ``*_token``, the fleet's
   ``audit.redact_keys`` and ``redaction.keys``);
3. the PII the fleet configures (``redaction.pii``: email, phone, card, ssn, iban; ``redaction.patterns``).

The ToolGateway masks every tool result before it leaves (:class:`RedactionInterceptor`, innermost), so
an upstream that echoes a token never hands it to the model, the run's output or the HTTP response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from raygent.core.config import Fleet
from raygent.core.credconfig import RedactionSpec
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.integrations.secrets.known import MASK, KnownSecrets

__all__ = ["MASK", "RedactionFilter", "RedactionInterceptor", "Redactor", "install_log_redaction"]

_CREDENTIAL = re.compile(
    r"(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"
)
_SECRET_KEYS = (
    "authorization", "proxy-authorization", "cookie", "set-cookie", "password", "passwd", "secret",
    "client_secret", "api_key", "apikey", "x-api-key", "access_token", "refresh_token", "id_token",
    "subject_token", "actor_token", "token", "private_key",
)  # fmt: skip
_PII: dict[str, str] = {
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    "phone": r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,3}(?!\w)",
    "card": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
}
_MAX_DEPTH = 32
_KEY_CACHE_SIZE = 4096


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Redactor:
    """Masks secrets and configured PII in strings and JSON-like values.

    Args:
        spec: The fleet's ``redaction`` section (PII kinds, extra patterns and keys).
        known: Secret values resolved in this process; masked wherever they appear.
        keys: More key names whose values are always masked (e.g. the fleet's ``audit.redact_keys``).
    """

    def __init__(
        self,
        spec: RedactionSpec | None = None,
        *,
        known: KnownSecrets | None = None,
        keys: Iterable[str] = (),
    ) -> None:
        spec = spec or RedactionSpec()
        self._known = known
        self._keys = frozenset(k.lower() for k in (*_SECRET_KEYS, *spec.keys, *keys))
        self._suffixes = tuple(sep + k for k in sorted(self._keys) for sep in ("_", "-"))
        # Every audit payload's keys pass through secret_key; they are few distinct names, so the answer
        # is cached (bounded) instead of testing ~40 suffixes per key on every record.
        self._key_cache: dict[str, bool] = {}
        self._pii: list[tuple[str, re.Pattern[str]]] = [(n, re.compile(_PII[n])) for n in spec.pii]
        self._pii += [(name, re.compile(pattern)) for name, pattern in spec.patterns.items()]

    @classmethod
    def for_fleet(cls, fleet: Fleet, *, known: KnownSecrets | None = None) -> Redactor:
        return cls(fleet.redaction, known=known, keys=fleet.audit.redact_keys)

    def secret_key(self, key: str) -> bool:
        """Whether a field named ``key`` holds a secret: a listed name, or one ending ``_<name>``."""
        hit = self._key_cache.get(key)
        if hit is None:
            lowered = key.lower()
            hit = lowered in self._keys or lowered.endswith(self._suffixes)
            if len(self._key_cache) < _KEY_CACHE_SIZE:
                self._key_cache[key] = hit
        return hit

    def text(self, text: str) -> str:
        """``text`` with secrets and configured PII masked."""
        if not text:
            return text
        if self._known is not None:
            text = self._known.scrub(text)
        text = _CREDENTIAL.sub(MASK, text)
        for name, pattern in self._pii:
            text = pattern.sub(partial(self._pii_mask, name), text)
        return text

    @staticmethod
    def _pii_mask(name: str, match: re.Match[str]) -> str:
        if name == "card":
            digits = re.sub(r"\D", "", match.group(0))
            if not _luhn(digits):  # an order number or a timestamp, not a card
                return match.group(0)
        return f"[REDACTED:{name}]"

    def value(self, value: Any, _depth: int = 0) -> Any:
        """A copy of a JSON-like ``value`` with every string redacted and secret-named keys masked."""
        if isinstance(value, str):
            return self.text(value)
        if _depth > _MAX_DEPTH:
            return "[REDACTED:too-deep]"
        if isinstance(value, Mapping):
            return {
                k: (MASK if self.secret_key(str(k)) and v not in (None, "") else self.value(v, _depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v, _depth + 1) for v in value]
        return value

    __call__ = value


class RedactionInterceptor(ToolInterceptor):
    """Innermost stage of the tool chain: a tool's result is redacted before anything above sees it
    (audit, the effect ledger, tracing, the model)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        out = await self.next.call_tool(inp)
        return replace(out, result=self._redactor.value(out.result))


class RedactionFilter(logging.Filter):
    """Rewrites a log record's message, with its arguments formatted in, through a redactor."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem to report, not ours
            return True
        redacted = self._redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


# A logger's filters see only records logged on it (not its children's), so each one is named.
_CREDENTIAL_LOGGERS = (
    "raygent", "raygent.credentials", "httpx", "httpcore.connection", "httpcore.http11", "authlib", "hvac",
    "urllib3.connectionpool",
)  # fmt: skip


def install_log_redaction(
    redactor: Redactor, loggers: Iterable[str] = _CREDENTIAL_LOGGERS
) -> Callable[[], None]:
    """Attach a :class:`RedactionFilter` to the loggers that may see credentials (and each one's
    handlers, so records of child loggers are covered too); returns a function that removes it."""
    flt = RedactionFilter(redactor.text)
    attached: list[logging.Filterer] = []
    for name in loggers:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            target.addFilter(flt)
            attached.append(target)

    def remove() -> None:
        for target in attached:
            target.removeFilter(flt)

    return remove
