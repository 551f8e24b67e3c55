"""Which webhook targets the guard refuses, and why (stable reasons)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.targets import (
    GuardedResolver,
    IPAddress,
    Resolver,
    TargetPolicy,
    TargetRefused,
    check_url,
    classify_address,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.10", "private"),
        ("fd12:3456::1", "private"),  # ULA
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),  # CGNAT
        ("224.0.0.251", "multicast"),
        ("ff02::fb", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.7", "private"),  # documentation range: not global
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 around 169.254.169.254
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme-not-allowed"),
        ("file:///etc/passwd", "scheme-not-allowed"),
        ("https://user:pw@example.com/", "userinfo-not-allowed"),
        ("https://user@example.com/", "userinfo-not-allowed"),
        ("http://example.com/hook", "https-required"),
        ("https://127.0.0.1/", "loopback"),
        ("https://127.1/", "loopback"),  # legacy short form
        ("https://2130706433/", "loopback"),  # integer form
        ("https://0x7f.0.0.1/", "loopback"),
        ("https://[::ffff:7f00:1]/", "loopback"),
        ("https://localhost:8443/", "loopback"),
        ("https://api.localhost/", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("https://METADATA.google.internal./", "metadata"),
        ("https://10.0.0.5/", "private"),
        ("https://[fe80::1]/", "link-local"),
        ("https://example.com:99999/", "invalid-url"),
        ("https:///nohost", "invalid-url"),
        ("http://hooks.example.com\\@127.0.0.1/", "invalid-url"),  # parser confusion
        ("https://[fe80::1%25eth0]/", "link-local"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url, TargetPolicy())
    assert refused.value.reason == reason


def test_check_url_accepts_a_public_https_url() -> None:
    url = "https://hooks.example.com/datapolis?x=1"
    assert check_url(url, TargetPolicy()) == url


def test_allow_list_opens_addresses_and_plain_http_but_never_metadata() -> None:
    policy = TargetPolicy.from_entries(["127.0.0.0/8", "receiver.internal", "169.254.0.0/16"])
    assert check_url("http://127.0.0.1:8080/hook", policy)
    assert check_url("http://receiver.internal/hook", policy)
    with pytest.raises(TargetRefused, match="https-required"):
        check_url("http://example.com/", policy)
    with pytest.raises(TargetRefused, match="private"):
        check_url("https://10.0.0.1/", policy)
    with pytest.raises(TargetRefused, match="metadata"):
        check_url("http://169.254.169.254/", policy)


def test_allow_list_setting_is_validated() -> None:
    assert WebhookSettings(allow_targets=["127.0.0.0/8", "::1", "localhost"]).allow_targets
    with pytest.raises(ValueError, match="not a CIDR"):
        WebhookSettings(allow_targets=["http://x/"])


def _resolver(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.7"], ["93.184.216.34", "127.0.0.1"], ["::ffff:169.254.169.254"]],
)
async def test_resolver_refuses_when_any_address_is_forbidden(answer: list[str]) -> None:
    guard = GuardedResolver(TargetPolicy(), resolver=_resolver({"evil.example": answer}))
    with pytest.raises(TargetRefused):
        await guard.resolve("evil.example", 443, socket.AF_UNSPEC)


async def test_resolver_hands_on_the_vetted_addresses_for_the_name() -> None:
    guard = GuardedResolver(
        TargetPolicy(),
        resolver=_resolver({"good.example": ["93.184.216.34", "2606:4700::6810:84e5"]}),
    )
    results = await guard.resolve("good.example", 443, socket.AF_UNSPEC)
    assert [(r["hostname"], r["host"], r["port"]) for r in results] == [
        ("good.example", "93.184.216.34", 443),
        ("good.example", "2606:4700::6810:84e5", 443),
    ]
    only_v4 = await guard.resolve("good.example", 443, socket.AF_INET)
    assert [r["host"] for r in only_v4] == ["93.184.216.34"]


async def test_resolver_allows_what_the_allow_list_opens_but_never_metadata() -> None:
    guard = GuardedResolver(
        TargetPolicy.from_entries(["127.0.0.0/8", "169.254.0.0/16"]),
        resolver=_resolver({"dev.test": ["127.0.0.1"], "meta.test": ["169.254.169.254"]}),
    )
    assert [r["host"] for r in await guard.resolve("dev.test", 80, socket.AF_UNSPEC)] == [
        "127.0.0.1"
    ]
    with pytest.raises(TargetRefused, match="metadata"):
        await guard.resolve("meta.test", 80, socket.AF_UNSPEC)


async def test_resolver_refuses_metadata_names_and_literals_without_resolving() -> None:
    guard = GuardedResolver(TargetPolicy(), resolver=_resolver({}))
    for host in ("metadata.google.internal", "169.254.169.254", "127.1"):
        with pytest.raises(TargetRefused):
            await guard.resolve(host, 80, socket.AF_UNSPEC)
