"""The redactor: resolved secrets wherever they appear, credential-shaped values, secret-named keys, and
only the PII a fleet configures; log records are rewritten the same way."""

from __future__ import annotations

import logging

import pytest

from raygent.core.credconfig import RedactionSpec
from raygent.governance.redaction import MASK, Redactor, install_log_redaction
from raygent.integrations.secrets.known import KnownSecrets

SECRET = "s3cr3t-value-that-is-long"


def test_known_secrets_are_masked_inside_longer_text_and_nested_values() -> None:
    known = KnownSecrets()
    known.add(SECRET)
    known.add("short")  # too short to be a secret: ordinary words stay
    r = Redactor(known=known)
    assert r.text(f"key={SECRET}; short") == f"key={MASK}; short"
    doc = {"a": [f"x{SECRET}y", {"b": SECRET}], "n": 3, "ok": True}
    assert r.value(doc) == {"a": [f"x{MASK}y", {"b": MASK}], "n": 3, "ok": True}


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijklmnop",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here",
        "dsn postgresql://app:hunter22@db:5432/x",
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
    ],
)
def test_credential_shaped_values_are_masked_without_being_known(text: str) -> None:
    out = Redactor().text(text)
    assert MASK in out
    assert (
        "abcdefghijklmnop" not in out
        and "hunter22" not in out
        and "c2lnbmF0dXJl" not in out
        and "MIIB" not in out
    )


def test_secret_named_keys_are_masked_but_similar_names_are_not() -> None:
    r = Redactor(keys=["pin"])
    doc = {
        "client_secret": "x",
        "X-Api-Key": "y",
        "refresh_token": "z",
        "pin": "1234",
        "input_tokens": 12,
        "token_count": 3,
        "empty_password": "",
    }
    assert r.value(doc) == {
        "client_secret": MASK,
        "X-Api-Key": MASK,
        "refresh_token": MASK,
        "pin": MASK,
        "input_tokens": 12,
        "token_count": 3,
        "empty_password": "",
    }


def test_only_configured_pii_is_masked() -> None:
    text = "mail jane.doe@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, order 1234567890123"
    assert Redactor().text(text) == text
    spec = RedactionSpec(pii=["email", "phone", "card"], patterns={"order": r"order \d+"})
    out = Redactor(spec).text(text)
    assert out == "mail [REDACTED:email], call [REDACTED:phone], card [REDACTED:card], [REDACTED:order]"
    # A digit run that fails the Luhn check is not a card number.
    assert Redactor(RedactionSpec(pii=["card"])).text("ref 1234 5678 9012 3456") == "ref 1234 5678 9012 3456"


def test_log_records_are_rewritten_and_the_filter_can_be_removed(caplog: pytest.LogCaptureFixture) -> None:
    known = KnownSecrets()
    known.add(SECRET)
    remove = install_log_redaction(Redactor(known=known), loggers=["raygent.credentials"])
    log = logging.getLogger("raygent.credentials")
    with caplog.at_level(logging.INFO, logger="raygent.credentials"):
        log.info("sent %s to %s", SECRET, "api")
        remove()
        log.info("after %s", "removal")
    assert caplog.records[0].getMessage() == f"sent {MASK} to api"
    assert SECRET not in caplog.text and "after removal" in caplog.text
