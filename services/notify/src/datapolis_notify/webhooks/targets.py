"""The target guard: webhooks never reach the platform's own network.

A subscriber chooses the URL, so a URL must not make notify call loopback,
private (RFC 1918, ULA), link-local, shared (CGNAT), multicast, unspecified or
reserved addresses, nor a cloud's metadata service. The check happens twice:

- :func:`check_url` when a subscription is made or changed (fast feedback,
  no DNS);
- :class:`GuardedResolver` at every connection: it resolves the host
  itself, refuses the connection if ANY address is forbidden, and connects to
  the address it vetted. The HTTP client keeps the URL's host for the Host
  header and for TLS (SNI and certificate check), so a DNS answer that
  changes between the check and the connection (rebinding), or a redirect,
  cannot slip through.

An explicit allow-list (``NOTIFY_WEBHOOKS__ALLOW_TARGETS``: CIDRs and/or
host names) opens chosen addresses for local development and tests; it also
lets such targets use plain http. Cloud metadata addresses and names stay
refused whatever the allow-list says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Stable strings: the API returns them in its problem details, the delivery
# log records them.
RefusedReason = Literal[
    "invalid-url",
    "scheme-not-allowed",  # not http or https
    "userinfo-not-allowed",  # credentials in the URL
    "https-required",  # http to a host not on the allow-list
    "metadata",  # a cloud metadata address or name
    "loopback",
    "private",  # RFC 1918, ULA, and other non-global special ranges
    "link-local",
    "shared",  # 100.64.0.0/10, carrier-grade NAT
    "multicast",
    "unspecified",
    "reserved",
]


class TargetRefused(Exception):
    """A webhook target notify will not call. ``reason`` is stable."""

    def __init__(self, reason: RefusedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RefusedReason = reason
        self.detail = detail


METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_HOSTS: frozenset[str] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def classify_address(address: IPAddress) -> RefusedReason | None:
    """Why notify must not connect to ``address``; ``None`` for a public one.

    An IPv6 address that carries an IPv4 one (mapped ``::ffff:a.b.c.d``,
    6to4, Teredo, NAT64) is judged by the IPv4 address too, so
    ``::ffff:127.0.0.1`` is loopback."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # The connection goes to the IPv4 address, and only there.
            return classify_address(address.ipv4_mapped)
        for embedded in _embedded_ipv4(address):
            embedded_reason = classify_address(embedded)
            if embedded_reason is not None:
                return embedded_reason
        if address in _NAT64_LOCAL:
            return "private"
    for reason, applies in _SPECIAL_RANGES:
        if applies(address):
            return reason
    return None


# In order: the first that applies names the reason.
_SPECIAL_RANGES: tuple[tuple[RefusedReason, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("shared", lambda a: isinstance(a, ipaddress.IPv4Address) and a in _SHARED),
    ("reserved", lambda a: a.is_reserved),
    ("private", lambda a: a.is_private),
    ("reserved", lambda a: isinstance(a, ipaddress.IPv6Address) and a.is_site_local),
    # Documentation, benchmarking and other special-purpose ranges.
    ("reserved", lambda a: not a.is_global),
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> Iterable[ipaddress.IPv4Address]:
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield from address.teredo
    if address in _NAT64:
        yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """The allow-list: networks and host names opened on purpose."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> TargetPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            parsed = parse_allow_entry(entry)
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        return cls(networks=tuple(networks), hosts=frozenset(hosts))

    def host_allowed(self, host: str) -> bool:
        return _normalise_host(host) in self.hosts

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks) or any(
            address.ipv4_mapped in network
            for network in self.networks
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
        )

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise :class:`TargetRefused` unless ``address`` (one of ``host``'s)
        may be connected to."""
        reason = classify_address(address)
        if reason is None:
            return
        if reason != "metadata" and (self.host_allowed(host) or self.address_allowed(address)):
            return
        raise TargetRefused(reason, f"{host} resolves to {address}")


def parse_allow_entry(entry: str) -> IPNetwork | str:
    """An allow-list entry: a CIDR or address, else a host name."""
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    host = _normalise_host(text)
    if not host or any(c in host for c in "/:@ "):
        raise ValueError(f"not a CIDR, an address or a host name: {entry!r}")
    return host


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP literal stands for, including the
    legacy IPv4 forms resolvers still accept (``127.1``, ``0x7f.0.0.1``,
    ``2130706433``)."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def check_url(url: str, policy: TargetPolicy) -> str:
    """Check a webhook URL before it is stored; returns it unchanged.

    Static rules only (no DNS): http or https, no credentials, https unless the
    host is allow-listed, no metadata name, no forbidden IP literal. What a
    name resolves to is checked at every connection."""
    # Parsed as the HTTP client parses it (yarl), so both see the same host.
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as error:
        raise TargetRefused("invalid-url", str(error)) from error
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused("scheme-not-allowed", f"scheme {parsed.scheme!r}")
    if parsed.user is not None or parsed.password is not None:
        raise TargetRefused("userinfo-not-allowed", "credentials in the URL")
    host = parsed.raw_host
    if not host:
        raise TargetRefused("invalid-url", "no host")
    name = _normalise_host(host)
    if name in METADATA_HOSTS:
        raise TargetRefused("metadata", name)
    address = literal_address(name)
    allowed = policy.host_allowed(name) or (address is not None and policy.address_allowed(address))
    if address is not None:
        policy.check_address(name, address)
    elif (name == "localhost" or name.endswith(".localhost")) and not allowed:
        raise TargetRefused("loopback", name)
    if parsed.scheme == "http" and not allowed:
        raise TargetRefused("https-required", f"plain http to {name}")
    return url


Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host``, from the system resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: it vets every address a name resolves to,
    and hands the client only vetted addresses to connect to (the client
    keeps the name for TLS and the Host header).

    Raises :class:`TargetRefused` (not an ``OSError``, so the client does not
    take it for a network fault) when any address is forbidden. IP literals
    do not come here: :func:`check_url` vets them before each request."""

    def __init__(self, policy: TargetPolicy, *, resolver: Resolver = resolve) -> None:
        self._policy = policy
        self._resolve = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = _normalise_host(host)
        if name in METADATA_HOSTS:
            raise TargetRefused("metadata", name)
        literal = literal_address(name)
        addresses = [literal] if literal is not None else list(await self._resolve(name, port))
        if not addresses:
            raise OSError(f"{name} has no address")
        # Every address, not only the first: a name answering a public and a
        # private address must not be a coin toss.
        for address in addresses:
            self._policy.check_address(name, address)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=_family(address),
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
            if family in (socket.AF_UNSPEC, _family(address))
        ]

    async def close(self) -> None:
        return None


def _family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET
