"""Where callbacks may go: a ``callback_url`` is a request for the server to make an outbound call, so it
is checked like any egress (server-side request forgery otherwise lets a caller probe the internal
network, cloud metadata endpoints included).

A host listed in ``server.callbacks.allowed_hosts`` is allowed whatever its address. Without a list,
the host must resolve only to public (global) addresses unless ``allow_private_networks`` is set. The
check runs when the run is accepted (a ``422`` naming the reason) and again before every delivery
attempt, because a name can be re-pointed between the two (the delivery is then refused, not retried);
each attempt connects to the address it checked (:class:`PinnedTarget`), never resolving the name again.
Redirects are never followed (the sender's client), so an allowed host cannot bounce the request on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from raygent.core.config import CallbackSpec
from raygent.core.errors import ValidationFailedError

__all__ = ["CallbackTargetError", "CallbackTargets", "PinnedTarget", "public_address"]

Resolver = Callable[[str, int], Awaitable[list[str]]]


class CallbackTargetError(ValidationFailedError):
    """A ``callback_url`` the server will not call (422 when the run is requested)."""


def public_address(address: str) -> bool:
    """Whether ``address`` is a global unicast address (IPv4-mapped IPv6 judged as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # IPv4 first: the connection goes to the first address, and receivers often listen on IPv4 only.
    return sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))


def _matches(pattern: str, host: str, port: int) -> bool:
    pattern = pattern.lower()
    want_host, want_port = pattern, ""
    if pattern.startswith("["):  # [v6]:port
        want_host, _, rest = pattern[1:].partition("]")
        want_port = rest.removeprefix(":")
    elif pattern.count(":") == 1:
        want_host, _, want_port = pattern.partition(":")
    if want_port and want_port != str(port):
        return False
    if want_host.startswith("*."):
        return host.endswith(want_host[1:])
    return host == want_host


class CallbackTargets:
    """The callback destination rules of a fleet (``server.callbacks``)."""

    def __init__(self, spec: CallbackSpec, *, resolve: Resolver = _resolve) -> None:
        self._allowed = list(spec.allowed_hosts)
        self._private_ok = spec.allow_private_networks
        self._resolve = resolve

    async def check(self, url: str) -> None:
        """Raise :class:`CallbackTargetError` unless the server may POST to ``url``."""
        await self.pin(url)

    async def pin(self, url: str) -> PinnedTarget:
        """Check ``url`` and choose the address to connect to: the request then goes to that address
        (with the URL's host as ``Host`` and TLS server name), so a name cannot be re-pointed between
        the check and the connection (DNS rebinding).

        Raises:
            CallbackTargetError: The server may not POST there.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise CallbackTargetError("callback_url must be an http or https URL with a host")
        if parts.username or parts.password:
            raise CallbackTargetError("callback_url must not carry credentials (user:password@)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise CallbackTargetError("callback_url has an invalid port") from None
        listed = any(_matches(p, host, port) for p in self._allowed)
        if self._allowed and not listed:
            raise CallbackTargetError(
                f"callback host {host!r} is not in server.callbacks.allowed_hosts", extra={"host": host}
            )
        try:
            addresses = [host.split("%", 1)[0]] if _is_ip(host) else await self._resolve(host, port)
        except OSError:
            addresses = []
        if not addresses:
            raise CallbackTargetError(f"callback host {host!r} does not resolve", extra={"host": host})
        blocked = [a for a in addresses if not public_address(a)]
        if blocked and not (listed or self._private_ok):
            raise CallbackTargetError(
                f"callback host {host!r} is a non-public address ({', '.join(blocked)}); list it "
                "in server.callbacks.allowed_hosts to allow it",
                extra={"host": host},
            )
        return PinnedTarget.of(parts, host, port, addresses[0])


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where a checked callback goes: ``url`` names the checked address; ``headers`` and ``extensions``
    keep the original host for HTTP (``Host``) and TLS (server name, certificate check)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]

    @classmethod
    def of(cls, parts: SplitResult, host: str, port: int, address: str) -> PinnedTarget:
        if _is_ip(host):
            return cls(parts.geturl(), {}, {})
        literal = f"[{address}]" if ":" in address else address
        netloc = literal if parts.port is None else f"{literal}:{port}"
        url = parts._replace(netloc=netloc).geturl()
        host_header = host if parts.port is None else f"{host}:{port}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return cls(url, {"host": host_header}, extensions)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True
