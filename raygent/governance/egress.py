"""Egress rules: the hosts, HTTP methods and paths each ``http`` tool may reach.

Checked twice in the gateway, both before a byte leaves: by :class:`EgressInterceptor` in the tool-call
chain (a refusal is audited as a ``policy_decision`` with the method, host and path, and the model gets
an error result), and by the executor itself through :class:`EgressGuard` (so an executor built outside
the chain cannot skip the rules). A tool without explicit rules may reach only its own URL's host, with
its own method, at its own path pattern (``{field}`` segments become ``*``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

from raygent.core.config import Fleet, HttpToolSpec
from raygent.core.credconfig import EgressRuleSpec
from raygent.core.errors import RaygentError
from raygent.core.interceptors import ToolCallInput, ToolCallOutput, ToolInterceptor
from raygent.governance.audit import AuditWriter
from raygent.governance.errors import EgressDeniedError
from raygent.governance.refusal import refuse
from raygent.integrations.http_tool import plan_request

__all__ = ["EgressGuard", "EgressInterceptor", "EgressPolicy", "default_rules"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def default_rules(spec: HttpToolSpec) -> list[EgressRuleSpec]:
    """The rules of a tool that declares none: exactly its URL's host, method and path pattern."""
    if spec.egress:
        return list(spec.egress)
    url = httpx.URL(re.sub(r"\{[^}]*\}", "x", spec.url))
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    path = re.sub(r"\{[^}]*\}", "*", spec.url.split("://", 1)[1].partition("/")[2].split("?")[0])
    return [EgressRuleSpec(hosts=[host], methods=[spec.method], paths=["/" + path], schemes=[url.scheme])]


def _host_matches(pattern: str, host: str, port: int) -> bool:
    want_host, _, want_port = pattern.lower().partition(":")
    if want_port and int(want_port) != port:
        return False
    if want_host.startswith("*."):
        return host.endswith(want_host[1:]) and len(host) > len(want_host) - 1
    return host == want_host


def _path_matches(pattern: str, segments: list[str]) -> bool:
    want = pattern.strip("/").split("/") if pattern != "/" else []
    if want and want[-1] == "**":
        head = want[:-1]
        return len(segments) >= len(head) and all(
            _segment(p, s) for p, s in zip(head, segments, strict=False)
        )
    return len(want) == len(segments) and all(_segment(p, s) for p, s in zip(want, segments, strict=True))


def _segment(pattern: str, segment: str) -> bool:
    return pattern == "*" or fnmatch.fnmatchcase(segment, pattern) if "*" in pattern else pattern == segment


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The rules of one tool; a request is allowed when one rule matches scheme, host, method and path."""

    tool: str
    rules: tuple[EgressRuleSpec, ...]

    def check(self, method: str, url: httpx.URL) -> None:
        """Refuse a request the rules do not allow.

        Raises:
            EgressDeniedError: With ``extra`` = method, host, path (no query: it may carry data).
        """
        host = (url.host or "").lower()
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        raw = url.raw_path.decode("ascii", "replace").split("?", 1)[0]
        segments = [s for s in raw.split("/")[1:]] if raw not in ("", "/") else []
        decoded = [unquote(s) for s in segments]
        where = {"method": method, "host": f"{host}:{port}", "path": raw or "/"}
        # A segment that decodes to a dot segment or a separator could walk out of the allowed path on a
        # server that normalises: refused whatever the rules say.
        if any(d in (".", "..") or "/" in d or "\\" in d for d in decoded):
            raise EgressDeniedError(
                f"tool {self.tool!r} may not send a path with dot segments or encoded separators",
                extra=where,
            )
        for rule in self.rules:
            if (
                url.scheme in rule.schemes
                and method in rule.methods
                and any(_host_matches(h, host, port) for h in rule.hosts)
                and any(_path_matches(p, decoded) for p in rule.paths)
            ):
                return
        raise EgressDeniedError(
            f"tool {self.tool!r} may not send {method} to {host}:{port}{raw or '/'} (egress rules)",
            extra=where,
        )


class EgressGuard:
    """The egress policies of a fleet's ``http`` tools; callable as the executors' request guard."""

    def __init__(self, fleet: Fleet) -> None:
        self._policies = {
            name: EgressPolicy(name, tuple(default_rules(spec)))
            for name, spec in fleet.tools.items()
            if isinstance(spec, HttpToolSpec)
        }

    def policy(self, tool: str) -> EgressPolicy | None:
        return self._policies.get(tool)

    def __call__(self, tool: str, method: str, url: httpx.URL) -> None:
        policy = self._policies.get(tool)
        if policy is None:  # not an http tool of this fleet: nothing may leave through it
            raise EgressDeniedError(f"tool {tool!r} has no egress rules", extra={"method": method})
        policy.check(method, url)


class EgressInterceptor(ToolInterceptor):
    """Refuses and audits an ``http`` tool call whose planned request breaks the tool's egress rules."""

    def __init__(self, fleet: Fleet, guard: EgressGuard, writer: AuditWriter) -> None:
        self._fleet = fleet
        self._guard = guard
        self._writer = writer

    async def call_tool(self, inp: ToolCallInput) -> ToolCallOutput:
        spec = self._fleet.tools.get(inp.call.name)
        if not isinstance(spec, HttpToolSpec):
            return await self.next.call_tool(inp)
        try:
            planned = plan_request(spec, inp.call.arguments)
        except RaygentError:
            return await self.next.call_tool(inp)  # not a request at all: the gateway reports why
        try:
            self._guard(inp.call.name, planned.method, planned.url)
        except EgressDeniedError as err:
            return await refuse(self._writer, inp, err, stage="egress", details=dict(err.extra))
        return await self.next.call_tool(inp)
