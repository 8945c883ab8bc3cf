"""Tool arguments on spans: secrets out, everything else kept."""

from __future__ import annotations

import json

from raygent.telemetry.redaction import REDACTED, ArgumentRedactor, secret_fields_of


def test_secret_keys_schema_fields_and_secret_looking_values_are_redacted() -> None:
    schema = {
        "type": "object",
        "properties": {
            "pin": {"type": "string"},
            "vault": {"type": "string", "format": "password"},
            "note": {"type": "string", "writeOnly": True},
            "id": {"type": "string"},
        },
    }
    assert secret_fields_of(schema) == {"vault", "note"}
    redactor = ArgumentRedactor.from_tools({"t": schema}, secret_keys=["customer_secret_word"])
    args = {
        "id": "1042",
        "vault": "hunter2",
        "note": "n",
        "api_key": "abc",
        "nested": {"Authorization": "x", "list": ["sk-abcdefghijklmnop", "plain"]},
        "customer_secret_word": "swordfish",
        "header": "Bearer abcdefghijklmnop",
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "long": "x" * 1000,
        "n": 3,
    }
    out = redactor.redact("t", args)
    assert out["id"] == "1042" and out["n"] == 3
    for key in ("vault", "note", "api_key", "customer_secret_word", "header", "jwt"):
        assert out[key] == REDACTED, key
    assert out["nested"] == {"Authorization": REDACTED, "list": [REDACTED, "plain"]}
    assert len(out["long"]) < 300
    text = redactor.attribute("t", args)
    assert json.loads(text)["id"] == "1042"
    for secret in ("hunter2", "swordfish", "sk-abcdefghijklmnop", "abcdefghijklmnop", "eyJhbGci"):
        assert secret not in text
