"""The webhook sender against a real HTTP server on a loopback address."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from nacl.signing import VerifyKey
from standardwebhooks import Webhook

from datapolis_notify.ports import Outcome, SigningKey, WebhookEndpoint
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.sender import HttpWebhookSender
from datapolis_notify.webhooks.signing import new_v1_secret, new_v1a_key_pair
from datapolis_notify.webhooks.targets import IPAddress, Resolver
from tests.integration.notify.webhooks.conftest import ReceiverFactory, Reply, Tls

BODY = b'{"type":"records","data":[{"id":"r1","kwh":3.5}]}'
LOOPBACK_ONLY = ["127.0.0.1/32"]

SenderFactory = Callable[..., HttpWebhookSender]


@pytest.fixture
async def make_sender() -> AsyncIterator[SenderFactory]:
    made: list[HttpWebhookSender] = []

    def make(
        *, resolver: Resolver | None = None, verify: Any = True, **settings: Any
    ) -> HttpWebhookSender:
        options: dict[str, Any] = {"verify": verify}
        if resolver is not None:
            options["resolver"] = resolver
        sender = HttpWebhookSender(WebhookSettings(**settings), **options)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.aclose()


def _endpoint(url: str, *keys: SigningKey) -> WebhookEndpoint:
    return WebhookEndpoint(
        subscription_id="sub_1", url=url, keys=keys or (SigningKey("s1", "v1", new_v1_secret()),)
    )


async def _send(
    sender: HttpWebhookSender, endpoint: WebhookEndpoint, message_id: str = "msg_1"
) -> Outcome:
    return await sender.send(
        endpoint,
        message_id=message_id,
        body=BODY,
        content_type="application/json",
        now=datetime.now(UTC),
    )


def _fixed_dns(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


async def test_delivers_a_request_the_receiver_verifies_with_both_schemes(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    receiver = await receivers()
    secret = new_v1_secret()
    private, public = new_v1a_key_pair()
    endpoint = _endpoint(
        receiver.url(), SigningKey("s1", "v1", secret), SigningKey("k1", "v1a", private)
    )
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), endpoint)

    assert outcome.kind == "delivered"
    assert outcome.status == 204
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("datapolis-notify/")
    assert request.headers["webhook-id"] == "msg_1"
    # The reference verifier, as a receiver would run it.
    Webhook(secret).verify(request.body, request.headers, json_parse=False)
    content = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.body
    )
    v1a = next(s for s in request.headers["webhook-signature"].split() if s.startswith("v1a,"))
    VerifyKey(base64.b64decode(public[5:])).verify(content, base64.b64decode(v1a[4:]))


async def test_410_means_gone(receivers: ReceiverFactory, make_sender: SenderFactory) -> None:
    receiver = await receivers(reply=lambda _: Reply(410, body=b"unsubscribed"))
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), _endpoint(receiver.url()))
    assert outcome.kind == "gone"
    assert outcome.status == 410


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "7", 7.0),
        (503, "120", 120.0),
        (429, "86400", 3600.0),  # capped
        (429, "soon", None),  # unreadable: the schedule decides
        (500, "60", None),  # only 429 and 503 carry a wait
    ],
)
async def test_retry_after_is_passed_on_for_429_and_503(
    receivers: ReceiverFactory,
    make_sender: SenderFactory,
    status: int,
    retry_after: str,
    expected: float | None,
) -> None:
    receiver = await receivers(reply=lambda _: Reply(status, {"retry-after": retry_after}))
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), _endpoint(receiver.url()))
    assert outcome.kind == "retry"
    assert outcome.status == status
    assert outcome.retry_after_s == expected


async def test_retry_after_as_an_http_date(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    at = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    receiver = await receivers(reply=lambda _: Reply(503, {"retry-after": at}))
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), _endpoint(receiver.url()))
    assert outcome.kind == "retry"
    assert outcome.retry_after_s is not None
    assert 290 <= outcome.retry_after_s <= 300


@pytest.mark.parametrize("status", [500, 502, 404, 400, 301])
async def test_other_statuses_retry_with_the_answer_in_the_error(
    receivers: ReceiverFactory, make_sender: SenderFactory, status: int
) -> None:
    receiver = await receivers(
        reply=lambda _: Reply(status, {"location": "https://example.com/"}, b"database down")
    )
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), _endpoint(receiver.url()))
    assert outcome.kind == "retry"
    assert outcome.status == status
    assert outcome.error is not None
    assert f"HTTP {status}" in outcome.error


async def test_a_target_slower_than_the_timeout_is_retried(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    receiver = await receivers(reply=lambda _: Reply(hang=True))
    outcome = await _send(
        make_sender(allow_targets=LOOPBACK_ONLY, timeout_s=0.3), _endpoint(receiver.url())
    )
    assert outcome.kind == "retry"
    assert outcome.error is not None
    assert "timeout" in outcome.error
    assert len(receiver.requests) == 1


async def test_a_closed_port_is_retried(make_sender: SenderFactory) -> None:
    outcome = await _send(
        make_sender(allow_targets=LOOPBACK_ONLY), _endpoint("http://127.0.0.1:9/hook")
    )
    assert outcome.kind == "retry"
    assert outcome.status is None


async def test_an_endless_response_body_is_not_read(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    receiver = await receivers(reply=lambda _: Reply(500, endless_body=True))
    outcome = await _send(make_sender(allow_targets=LOOPBACK_ONLY), _endpoint(receiver.url()))
    assert outcome.kind == "retry"
    assert outcome.status == 500
    assert outcome.error is not None
    assert len(outcome.error) < 300


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_without_the_allow_list_and_never_reached(
    receivers: ReceiverFactory, make_sender: SenderFactory, host: str
) -> None:
    receiver = await receivers()
    outcome = await _send(make_sender(), _endpoint(receiver.url(host=host)))
    assert outcome.kind == "refused-target"
    assert outcome.status is None
    assert receiver.connections == 0


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    """https to an ordinary name passes the URL check; its address does not."""
    receiver = await receivers()
    sender = make_sender(resolver=_fixed_dns({"hooks.test": ["127.0.0.1"]}))
    outcome = await _send(
        sender, _endpoint(receiver.url(host="hooks.test").replace("http:", "https:"))
    )
    assert outcome.kind == "refused-target"
    assert outcome.error is not None
    assert "loopback" in outcome.error
    assert receiver.connections == 0


async def test_tls_uses_the_name_on_the_vetted_address_and_a_dns_change_is_refused(
    receivers: ReceiverFactory, make_sender: SenderFactory, tls: Tls
) -> None:
    allowed = await receivers("127.0.0.1", tls=tls.server)
    # Same port, another address: only the name's answer tells them apart.
    forbidden = await receivers("127.0.0.2", tls=tls.server, port=allowed.port)
    dns = {"hooks.test": ["127.0.0.1"]}
    sender = make_sender(allow_targets=LOOPBACK_ONLY, resolver=_fixed_dns(dns), verify=tls.client)
    url = f"https://hooks.test:{allowed.port}/hook"

    first = await _send(sender, _endpoint(url))
    # The certificate names hooks.test only: verified, so SNI and the
    # check used the name while the socket went to the vetted address.
    assert first.kind == "delivered", first.error
    assert allowed.requests[0].headers["host"] == f"hooks.test:{allowed.port}"

    # The name now points elsewhere (DNS rebinding): checked again on connect.
    dns["hooks.test"] = ["127.0.0.2"]
    second = await _send(sender, _endpoint(url), "msg_2")
    assert second.kind == "refused-target"
    assert forbidden.connections == 0


async def test_a_redirect_to_a_forbidden_target_is_refused(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    forbidden = await receivers("127.0.0.2")
    redirecting = await receivers(reply=lambda _: Reply(307, {"location": forbidden.url()}))
    sender = make_sender(allow_targets=LOOPBACK_ONLY, max_redirects=3)
    outcome = await _send(sender, _endpoint(redirecting.url()))
    assert outcome.kind == "refused-target"
    assert len(redirecting.requests) == 1
    assert forbidden.connections == 0

    metadata = await receivers(
        reply=lambda _: Reply(308, {"location": "http://169.254.169.254/latest/meta-data/"})
    )
    outcome = await _send(sender, _endpoint(metadata.url()))
    assert outcome.kind == "refused-target"
    assert outcome.error is not None
    assert "metadata" in outcome.error


async def test_an_allowed_redirect_keeps_the_post_and_its_signature(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    final = await receivers()
    redirecting = await receivers(reply=lambda _: Reply(308, {"location": final.url("/moved")}))
    secret = new_v1_secret()
    endpoint = _endpoint(redirecting.url(), SigningKey("s", "v1", secret))

    not_followed = await _send(make_sender(allow_targets=LOOPBACK_ONLY), endpoint)
    assert not_followed.kind == "retry"
    assert not_followed.status == 308
    assert final.requests == []

    followed = await _send(make_sender(allow_targets=LOOPBACK_ONLY, max_redirects=1), endpoint)
    assert followed.kind == "delivered"
    (request,) = final.requests
    assert (request.method, request.path, request.body) == ("POST", "/moved", BODY)
    Webhook(secret).verify(request.body, request.headers, json_parse=False)


async def test_a_hanging_host_does_not_take_the_pool_from_others(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    hanging = await receivers(reply=lambda _: Reply(hang=True))
    healthy = await receivers("127.0.0.2")
    sender = make_sender(
        allow_targets=["127.0.0.0/8"],
        max_connections=4,
        max_connections_per_host=2,
        timeout_s=5,
    )
    stuck = [
        asyncio.create_task(_send(sender, _endpoint(hanging.url()), f"msg_{i}")) for i in range(8)
    ]
    await _until(lambda: len(hanging.requests) == 2)

    outcome = await _send(sender, _endpoint(healthy.url()))
    assert outcome.kind == "delivered"
    assert len(hanging.requests) == 2  # the rest wait for the hanging host's own slots
    for task in stuck:
        task.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)


async def _until(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_a_redirect_may_not_drop_to_plain_http(
    receivers: ReceiverFactory, make_sender: SenderFactory
) -> None:
    """Plain http is for allow-listed hosts only, after a redirect too: here
    the name's address is allowed, the name is not."""
    final = await receivers()
    redirecting = await receivers(
        reply=lambda _: Reply(307, {"location": f"http://plain.test:{final.port}/"})
    )
    sender = make_sender(
        allow_targets=LOOPBACK_ONLY,
        max_redirects=1,
        resolver=_fixed_dns({"plain.test": ["127.0.0.1"]}),
    )
    outcome = await _send(sender, _endpoint(redirecting.url()))
    assert outcome.kind == "refused-target"
    assert outcome.error is not None
    assert "https-required" in outcome.error
    assert final.connections == 0
