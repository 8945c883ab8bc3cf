"""Callback destinations: no server-side request forgery through ``callback_url``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from serving_helpers import serve_in_process, tiny_fleet

from raygent.core.clock import SystemClock
from raygent.core.config import CallbackSpec
from raygent.serve.callback_targets import CallbackTargetError, CallbackTargets, public_address
from raygent.serve.callbacks import CallbackSender

RUNS = "/v1/agents/a/runs"


def resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "internal.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "a.b.corp.example": ["10.9.9.9"],  # an internal receiver: reachable only because it is listed
}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://10.0.0.7/x",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped loopback
        "http://0.0.0.0/x",
        "http://internal.example.com/x",  # a public name pointing inside
        "http://mixed.example.com/x",  # one internal address is enough to refuse
        "http://metadata.example.com/x",
        "http://nowhere.example.com/x",  # does not resolve
        "http://user:pw@hooks.example.com/x",  # credentials in the URL
        "ftp://hooks.example.com/x",
        "http://hooks.example.com:99999/x",
    ],
)
async def test_non_public_and_malformed_targets_are_refused(url: str) -> None:
    targets = CallbackTargets(CallbackSpec(), resolve=resolver(DNS))
    with pytest.raises(CallbackTargetError) as refused:
        await targets.check(url)
    assert refused.value.status == 422


async def test_public_hosts_pass_and_allow_lists_decide_when_set() -> None:
    open_targets = CallbackTargets(CallbackSpec(), resolve=resolver(DNS))
    await open_targets.check("https://hooks.example.com/done")
    await open_targets.check("http://93.184.216.34/done")

    listed = CallbackTargets(
        CallbackSpec(allowed_hosts=["*.corp.example", "127.0.0.1:9999", "hooks.example.com"]),
        resolve=resolver(DNS),
    )
    await listed.check("http://127.0.0.1:9999/hook")  # listed with its port: allowed though loopback
    await listed.check("https://a.b.corp.example/hook")
    await listed.check("https://hooks.example.com/hook")
    for url in (
        "http://127.0.0.1:8080/hook",
        "https://corp.example.evil.com/x",
        "https://other.example.org/",
    ):
        with pytest.raises(CallbackTargetError, match="allowed_hosts"):
            await listed.check(url)

    private_ok = CallbackTargets(CallbackSpec(allow_private_networks=True), resolve=resolver(DNS))
    await private_ok.check("http://10.0.0.7/x")


def test_public_address() -> None:
    assert public_address("8.8.8.8") and public_address("2606:4700::1111")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fe80::1%eth0",
                    "fc00::1", "::1", "::ffff:10.0.0.1", "224.0.0.1", "255.255.255.255"):  # fmt: skip
        assert not public_address(address), address


async def test_a_refused_target_is_422_at_acceptance_and_nothing_is_queued(
    tmp_path: Path, tracer_provider: TracerProvider
) -> None:
    fleet = tiny_fleet(tmp_path, server={"callbacks": {}})  # no allow list: loopback is refused
    async with serve_in_process(fleet, tracer_provider) as served:
        resp = await served.client.post(
            RUNS, json={"input": "hi", "mode": "async", "callback_url": "http://127.0.0.1:9/hook"}
        )
        assert resp.status_code == 422
        assert resp.headers["content-type"] == "application/problem+json"
        assert "non-public address" in resp.json()["detail"]
        assert served.service.serving.runner.pending == 0


async def test_delivery_rechecks_the_target_and_does_not_retry_a_refusal() -> None:
    dns = dict(DNS)
    attempts: list[dict[str, Any]] = []

    async def on_attempt(record: dict[str, Any]) -> None:
        attempts.append(record)

    sender = CallbackSender(
        CallbackSpec(max_attempts=5),
        clock=SystemClock(),
        environ={"RAYGENT_CALLBACK_SECRET": "k"},
        targets=CallbackTargets(CallbackSpec(), resolve=resolver(dns)),
    )
    try:
        await sender.targets.check("http://hooks.example.com/x")  # fine when the run was accepted
        dns["hooks.example.com"] = ["127.0.0.1"]  # then re-pointed inside
        delivered = await sender.deliver(
            "http://hooks.example.com/x",
            {"ok": True},
            tenant="default",
            delivery_id="run_1",
            on_attempt=on_attempt,
        )
    finally:
        await sender.aclose()
    assert delivered is False
    assert [(a["attempt"], a["error"]) for a in attempts] == [(1, "destination-refused")]


async def test_each_attempt_connects_to_the_address_it_checked(receiver: Any) -> None:
    """The name resolves (in this test's resolver) to the receiver's loopback address: the request goes to
    that address with the name as Host, so the name is never resolved again by the HTTP client (which
    could not resolve it at all here)."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/", 1)[0])
    sender = CallbackSender(
        CallbackSpec(),
        clock=SystemClock(),
        environ={"RAYGENT_CALLBACK_SECRET": "k"},
        targets=CallbackTargets(
            CallbackSpec(allowed_hosts=["hooks.invalid"]), resolve=resolver({"hooks.invalid": ["127.0.0.1"]})
        ),
    )
    attempts: list[dict[str, Any]] = []

    async def on_attempt(record: dict[str, Any]) -> None:
        attempts.append(record)

    try:
        delivered = await sender.deliver(
            f"http://hooks.invalid:{port}/hook",
            {"ok": True},
            tenant="default",
            delivery_id="run_1",
            on_attempt=on_attempt,
        )
    finally:
        await sender.aclose()
    assert delivered, attempts
    headers, _ = receiver.requests[0]
    assert headers["host"] == f"hooks.invalid:{port}"


async def test_pinned_targets_keep_the_name_for_host_and_tls() -> None:
    targets = CallbackTargets(CallbackSpec(), resolve=resolver({"hooks.example.com": ["93.184.216.34"]}))
    tls = await targets.pin("https://hooks.example.com/done?x=1")
    assert tls.url == "https://93.184.216.34/done?x=1"
    assert tls.headers == {"host": "hooks.example.com"} and tls.extensions == {
        "sni_hostname": "hooks.example.com"
    }
    plain = await targets.pin("http://hooks.example.com:8080/done")
    assert plain.url == "http://93.184.216.34:8080/done" and plain.headers == {
        "host": "hooks.example.com:8080"
    }
    literal = await targets.pin("http://93.184.216.34/x")
    assert literal.url == "http://93.184.216.34/x" and literal.headers == {} and literal.extensions == {}
