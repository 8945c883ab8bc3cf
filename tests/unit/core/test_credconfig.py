"""Fleet-file checks of the credentials sections: typed secret references, http tools, and the cross
checks that name what is missing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from raygent.core.config import Fleet, HttpToolSpec, cross_check
from raygent.core.credconfig import SecretRef


def fleet(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "f",
        "models": {"m": {"kind": "offline"}},
        "prompts": {"p": {"versions": {"1": "x"}}},
        "agents": {"a": {"identity": "svc-a", "prompt": "p@1", "tools": ["t"]}},
        "tools": {
            "t": {
                "kind": "http",
                "method": "POST",
                "url": "http://api.test/x",
                "scopes": ["w"],
                "auth": {"kind": "oauth2"},
            }
        },
    }
    doc.update(extra)
    return doc


def test_secret_reference_forms() -> None:
    assert SecretRef.model_validate("vault:kv/app#api_key") == SecretRef(
        provider="vault", path="kv/app", key="api_key"
    )
    assert str(SecretRef.model_validate("files:token")) == "files:token"
    with pytest.raises(ValidationError, match="must look like"):
        SecretRef.model_validate("no-provider")


def test_existing_fleets_stay_valid_and_the_new_sections_default_off() -> None:
    doc = fleet(tools={}, agents={"a": {"identity": "svc-a", "prompt": "p@1"}})
    loaded = Fleet.model_validate(doc)
    assert loaded.credentials.clients == {} and loaded.secrets.providers == {} and loaded.redaction.pii == []


def test_cross_check_names_missing_clients_providers_and_scopes() -> None:
    issues = cross_check(Fleet.model_validate(fleet()))
    assert [(i.loc, i.message) for i in issues] == [
        (("agents", "a", "tools", 0), "tool 't' uses OAuth2 but identity 'svc-a' has no client")
    ]
    client = {
        "token_url": "http://auth.test/t",
        "client_id": "c",
        "client_secret": "vault:x#y",
        "allowed_scopes": ["r"],
    }
    doc = fleet(credentials={"clients": {"svc-a": client}})
    messages = [i.message for i in cross_check(Fleet.model_validate(doc))]
    assert "unknown secrets provider 'vault'" in messages
    assert "tool 't' needs scopes ['w'] that 'svc-a' may not ask for" in messages


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "TRACE"}, "method must be one of"),
        ({"url": "ftp://x/y"}, "url must be an http"),
        ({"url": "http://x/{a.b}"}, "plain names"),
        ({"response": {"id": "id"}}, "not a JSON pointer"),
        ({"secret_headers": {"X": "nope"}}, "must look like"),
        ({"auth": {"kind": "bearer"}}, "secret"),
        ({"egress": [{"hosts": ["a b"], "methods": ["GET"], "paths": ["/"]}]}, "hosts"),
    ],
)
def test_http_tool_errors_are_specific(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpToolSpec.model_validate({"kind": "http", "method": "GET", "url": "http://x/y", **fields})
