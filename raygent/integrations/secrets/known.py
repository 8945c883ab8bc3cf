"""The secret values this process has resolved, so they can be masked wherever text leaves it."""

from __future__ import annotations

import re
from collections import OrderedDict

__all__ = ["KnownSecrets"]

MASK = "[REDACTED:secret]"
# Shorter values would mask ordinary words; real secrets and tokens are far longer.
MIN_SECRET_CHARS = 8


class KnownSecrets:
    """A bounded, most-recent-first set of secret values (tokens rotate, so old ones age out).

    One per gateway replica, passed in (never module-global): each Ray worker has its own.
    """

    def __init__(self, *, capacity: int = 4096) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_CHARS:
            return
        if value in self._values:
            self._values.move_to_end(value)
            return
        self._values[value] = None
        if len(self._values) > self._capacity:
            self._values.popitem(last=False)
        self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced by ``[REDACTED:secret]``."""
        if not self._values or not text:
            return text
        if self._pattern is None:
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return self._pattern.sub(MASK, text)
