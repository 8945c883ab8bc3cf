"""Egress rules: exactly the hosts, methods and paths a tool declares (or its own URL when it declares
none); dot segments and encoded separators are refused whatever the rules say."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from raygent.core.config import HttpToolSpec
from raygent.governance.egress import EgressPolicy, default_rules
from raygent.governance.errors import EgressDeniedError

RULES = [
    {"hosts": ["tickets.internal:8443"], "methods": ["POST"], "paths": ["/tickets"], "schemes": ["https"]},
    {"hosts": ["tickets.internal:8443"], "methods": ["GET"], "paths": ["/tickets/*", "/tickets/*/notes"]},
    {"hosts": ["*.files.internal"], "methods": ["GET"], "paths": ["/public/**"]},
]


def policy(rules: list[dict[str, Any]] = RULES) -> EgressPolicy:
    spec = HttpToolSpec.model_validate({"kind": "http", "method": "{m}", "url": "{url}", "egress": rules})
    return EgressPolicy("t", tuple(default_rules(spec)))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "https://tickets.internal:8443/tickets"),
        ("GET", "https://tickets.internal:8443/tickets/12"),
        ("GET", "http://tickets.internal:8443/tickets/12/notes?page=2"),
        ("GET", "https://cdn.files.internal/public/a/b/c.txt"),
        ("GET", "https://CDN.files.internal/public"),
    ],
)
def test_allowed(method: str, url: str) -> None:
    policy().check(method, httpx.URL(url))


@pytest.mark.parametrize(
    ("method", "url", "why"),
    [
        ("DELETE", "https://tickets.internal:8443/tickets/1", "egress rules"),
        ("POST", "http://tickets.internal:8443/tickets", "egress rules"),  # POST only over https
        ("POST", "https://tickets.internal:8443/tickets/1", "egress rules"),
        ("GET", "https://tickets.internal/tickets/1", "egress rules"),  # port 443, not 8443
        ("GET", "https://tickets.internal:8443/admin", "egress rules"),
        ("GET", "https://evil.example/tickets/1", "egress rules"),
        ("GET", "https://files.internal/public/x", "egress rules"),  # *. needs a subdomain
        ("GET", "https://tickets.internal:8443/tickets/1%2F..%2F..%2Fadmin", "dot segments"),
        ("GET", "https://tickets.internal:8443/tickets/%2e%2e", "dot segments"),
    ],
)
def test_denied(method: str, url: str, why: str) -> None:
    with pytest.raises(EgressDeniedError, match=why) as info:
        policy().check(method, httpx.URL(url))
    assert info.value.extra["method"] == method and "?" not in info.value.extra["path"]


def test_default_rules_are_the_tools_own_url() -> None:
    spec = HttpToolSpec.model_validate(
        {"kind": "http", "method": "GET", "url": "http://api.test:81/orders/{id}/items"}
    )
    (rule,) = default_rules(spec)
    assert (rule.hosts, rule.methods, rule.paths, rule.schemes) == (
        ["api.test:81"],
        ["GET"],
        ["/orders/*/items"],
        ["http"],
    )
    own = EgressPolicy("t", (rule,))
    own.check("GET", httpx.URL("http://api.test:81/orders/7/items"))
    with pytest.raises(EgressDeniedError):
        own.check("GET", httpx.URL("http://api.test:81/orders/7"))


def test_a_tool_whose_host_comes_from_the_model_must_declare_rules() -> None:
    with pytest.raises(ValueError, match="needs explicit 'egress'"):
        HttpToolSpec.model_validate({"kind": "http", "method": "GET", "url": "{url}"})
    with pytest.raises(ValueError, match="needs explicit 'egress'"):
        HttpToolSpec.model_validate({"kind": "http", "method": "{m}", "url": "http://a.test/"})
