"""The ``http`` tool kind: one HTTP API call per tool call, with credentials added in the gateway.

The request is planned from the arguments first (:func:`plan_request`: method and URL templates, the
rest as JSON body or query), checked by the egress guard the gateway passes in, and only then given
credentials (an OAuth2 token of the calling identity, or secrets from a provider) and sent. Redirects are
never followed and proxies from the environment are ignored, so the request goes exactly where the egress
rules allowed. Error statuses become tool errors with a short, secret-free detail.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from raygent.core.clock import Clock
from raygent.core.config import Fleet, HttpToolSpec
from raygent.core.credconfig import (
    HTTP_METHODS,
    BearerAuthSpec,
    HeaderAuthSpec,
    OAuth2AuthSpec,
    template_fields,
)
from raygent.integrations.context import ToolContext
from raygent.integrations.credentials import Credentials
from raygent.integrations.errors import (
    HttpRequestError,
    HttpStatusError,
    ToolResultError,
    ToolTimeoutError,
    TransportError,
)
from raygent.integrations.oauth2 import AccessToken
from raygent.integrations.python_tool import json_result

__all__ = ["HttpToolExecutor", "PlannedRequest", "RequestGuard", "build_http_executors", "plan_request"]

# (tool name, method, URL) → None, or raises to refuse the request before anything is sent.
RequestGuard = Callable[[str, str, httpx.URL], None]

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_DETAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """What a tool call will send, before credentials are added."""

    method: str
    url: httpx.URL
    json_body: Any = None
    has_body: bool = False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _render(template: str, arguments: dict[str, Any], *, encode: bool) -> str:
    values: dict[str, str] = {}
    for name in template_fields(template):
        if name not in arguments:
            raise HttpRequestError(f"the argument {name!r} is needed to build the request")
        text = _text(arguments[name])
        # One path segment: '/', '?', '#' and '..' cannot change where the request goes.
        values[name] = quote(text, safe="") if encode else text
    return template.format(**values)


def plan_request(spec: HttpToolSpec, arguments: dict[str, Any]) -> PlannedRequest:
    """The method, URL and body a call with ``arguments`` sends.

    Raises:
        HttpRequestError: A templated method or URL does not make a valid request.
    """
    method = _render(spec.method, arguments, encode=False).upper()
    if method not in HTTP_METHODS:
        raise HttpRequestError(f"{method[:20]!r} is not an HTTP method this tool can use")
    whole_url = spec.url.startswith("{") and template_fields(spec.url) == [spec.url[1:-1]]
    raw_url = _render(spec.url, arguments, encode=not whole_url)
    try:
        url = httpx.URL(raw_url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise HttpRequestError("the arguments do not make a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise HttpRequestError("the request URL must be an absolute http:// or https:// URL")
    used = set(template_fields(spec.method)) | set(template_fields(spec.url))
    params: dict[str, str] = {}
    for name, template in spec.query.items():
        params[name] = _render(template, arguments, encode=False)
        used.update(template_fields(template))
    rest = {k: v for k, v in arguments.items() if k not in used}
    body_mode = spec.body if spec.body != "auto" else ("none" if method in _NO_BODY_METHODS else "json")
    if body_mode == "none" and spec.body == "auto":
        params.update({k: _text(v) for k, v in rest.items()})
    if params:
        url = url.copy_merge_params(params)
    if body_mode == "json":
        return PlannedRequest(method, url, rest, True)
    return PlannedRequest(method, url)


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response read in full (under the size bound)."""

    status_code: int
    reason: str
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _pointer(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


class HttpToolExecutor:
    """Executes one ``http`` tool. Built once per gateway replica.

    Args:
        name: The tool's name (for the egress guard and error messages).
        spec: The tool's settings.
        credentials: The gateway's credentials (tokens, secrets, revocation).
        guard: Refuses a planned request outside the tool's egress rules; None sends anything planned.
        transport: httpx transport (tests: ASGI); default: real HTTP.
    """

    def __init__(
        self,
        name: str,
        spec: HttpToolSpec,
        *,
        credentials: Credentials,
        guard: RequestGuard | None,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._name = name
        self._spec = spec
        self._credentials = credentials
        self._guard = guard
        self._clock = clock
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)

    async def call(self, ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float) -> Any:
        planned = plan_request(self._spec, arguments)
        if self._guard is not None:
            self._guard(self._name, planned.method, planned.url)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._send(ctx, planned, timeout_s)
        except TimeoutError:
            raise ToolTimeoutError(
                f"{planned.method} {planned.url.path} took longer than {timeout_s:g} s"
            ) from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, ctx: ToolContext, planned: PlannedRequest, timeout_s: float) -> Any:
        spec = self._spec
        await self._credentials.ensure_active(ctx.identity)
        headers = {**spec.headers, "Idempotency-Key": ctx.idempotency_key}
        if ctx.traceparent:
            headers["traceparent"] = ctx.traceparent
        for header, ref in spec.secret_headers.items():
            headers[header] = await self._credentials.secrets.resolve(ref, identity=ctx.identity)
        token = await self._authorize(ctx, headers)
        resp = await self._request(planned, headers, timeout_s)
        if resp.status_code == 401 and token is not None:
            # The resource server refused a token the cache thought valid (revoked or rotated upstream):
            # forget it and try once with a new one; a 401 means nothing was done.
            self._credentials.tokens.invalidate(token)
            await self._authorize(ctx, headers)
            resp = await self._request(planned, headers, timeout_s)
        return self._result(planned, resp)

    async def _authorize(self, ctx: ToolContext, headers: dict[str, str]) -> AccessToken | None:
        auth = self._spec.auth
        if isinstance(auth, OAuth2AuthSpec):
            end_user = ctx.end_user if auth.on_behalf_of_user else ""
            if auth.on_behalf_of_user and not end_user:
                raise HttpRequestError("this tool acts for the end user, and the run names none")
            token = await self._credentials.tokens.token(ctx.identity, self._spec.scopes, end_user=end_user)
            headers["Authorization"] = f"Bearer {token.value}"
            return token
        if isinstance(auth, BearerAuthSpec):
            value = await self._credentials.secrets.resolve(auth.secret, identity=ctx.identity)
            headers["Authorization"] = f"Bearer {value}"
        elif isinstance(auth, HeaderAuthSpec):
            headers[auth.header] = await self._credentials.secrets.resolve(auth.secret, identity=ctx.identity)
        return None

    async def _request(self, planned: PlannedRequest, headers: dict[str, str], timeout_s: float) -> _Answer:
        timeout = httpx.Timeout(timeout_s, connect=min(self._spec.connect_timeout_s, timeout_s))
        request = self._http.build_request(
            planned.method,
            planned.url,
            headers=headers,
            json=planned.json_body if planned.has_body else None,
            timeout=timeout,
        )
        try:
            resp = await self._http.send(request, stream=True)
        except httpx.TimeoutException:
            raise ToolTimeoutError(f"{planned.method} {planned.url.path} timed out") from None
        except httpx.HTTPError as exc:
            detail = f"could not reach {planned.url.host}: {type(exc).__name__}"
            raise TransportError(detail, retryable=True) from None
        try:
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._spec.max_response_bytes:
                    raise ToolResultError(
                        f"the response is larger than {self._spec.max_response_bytes} bytes"
                    )
        finally:
            await resp.aclose()
        return _Answer(resp.status_code, resp.reason_phrase, resp.headers, bytes(body))

    def _result(self, planned: PlannedRequest, resp: _Answer) -> Any:
        status = resp.status_code
        where = f"{planned.method} {planned.url.path}"
        if status >= 300:
            raise self._status_error(where, resp)
        if status == 204 or not resp.content:
            return {"status": status}
        try:
            doc = resp.json()
        except ValueError:
            return json_result({"status": status, "text": self._snippet(resp.text)})
        if self._spec.response:
            doc = {name: _pointer(doc, pointer) for name, pointer in self._spec.response.items()}
        return json_result(doc)

    def _status_error(self, where: str, resp: _Answer) -> HttpStatusError:
        status = resp.status_code
        if 300 <= status < 400:
            return HttpStatusError(
                f"{where} answered a redirect ({status}), which the gateway does not follow",
                extra={"status": status},
            )
        reason = ""
        try:
            doc = resp.json()
            if isinstance(doc, dict):
                reason = str(doc.get("error_description") or doc.get("detail") or doc.get("error") or "")
        except ValueError:
            reason = resp.text
        detail = f"{where} answered {status} {resp.reason}".rstrip()
        if reason:
            detail += f": {self._snippet(reason)}"
        retry_after = resp.headers.get("retry-after")
        return HttpStatusError(
            detail,
            retryable=status in _RETRYABLE_STATUSES,
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
            extra={"status": status},
        )

    def _snippet(self, text: str) -> str:
        # An upstream may echo what it was sent: mask every secret this gateway resolved.
        return self._credentials.known.scrub(text)[:_MAX_DETAIL_CHARS]


def build_http_executors(
    fleet: Fleet,
    *,
    credentials: Credentials,
    guard: RequestGuard | None,
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, HttpToolExecutor]:
    """An executor for every ``http`` tool of ``fleet``, by tool name; nothing connects here."""
    return {
        name: HttpToolExecutor(
            name, spec, credentials=credentials, guard=guard, clock=clock, transport=transport
        )
        for name, spec in fleet.tools.items()
        if isinstance(spec, HttpToolSpec)
    }
