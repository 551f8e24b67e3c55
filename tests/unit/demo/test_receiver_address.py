"""Where the demo's receiver listens and the URL the platform is given for
it: the loopback on one machine (unchanged defaults), and in a cluster every
interface, reached by its Service's name."""

from __future__ import annotations

from pathlib import Path

import httpx

from datapolis_demo.receiver import Receiver, ReceiverAddress, SubjectIssuer

# What a pod binds so its Service reaches it.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104


def test_on_one_machine_it_listens_and_is_reached_on_the_loopback() -> None:
    assert ReceiverAddress.from_env({}) == ReceiverAddress(
        "127.0.0.1", 8090, "http://127.0.0.1:8090"
    )
    assert ReceiverAddress.from_env({"DEMO_PORT": "9191"}).public_url == "http://127.0.0.1:9191"


def test_in_a_cluster_it_listens_everywhere_and_is_reached_by_its_public_url() -> None:
    address = ReceiverAddress.from_env(
        {
            "DEMO_HOST": EVERY_INTERFACE,
            "DEMO_PORT": "8090",
            "DEMO_PUBLIC_URL": "http://demo.datapolis.svc:8090/",
        }
    )
    assert (address.host, address.port) == (EVERY_INTERFACE, 8090)
    # The base of the webhook URLs notify calls and of the issuer consent trusts.
    assert address.public_url == "http://demo.datapolis.svc:8090"


async def test_the_receiver_answers_on_the_address_it_was_given(tmp_path: Path) -> None:
    address = ReceiverAddress.from_env(
        {"DEMO_HOST": EVERY_INTERFACE, "DEMO_PORT": "0", "DEMO_PUBLIC_URL": "http://demo:8090"}
    )
    issuer = SubjectIssuer(tmp_path / "issuer.pem", f"{address.public_url}/subjects")
    receiver = Receiver("run1", issuer)
    await receiver.start(address.host, address.port)
    try:
        assert receiver._runner is not None
        (bound,) = [site.name for site in receiver._runner.sites]
        port = int(bound.rsplit(":", 1)[1])
        # Reachable from outside the loopback's name too: it bound 0.0.0.0.
        assert bound.startswith("http://0.0.0.0:")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/subjects/jwks.json")
        assert answer.status_code == 200
        assert answer.json()["keys"][0]["kid"] == issuer.kid
        assert receiver.url(address.public_url, "meters") == "http://demo:8090/hooks/run1/meters"
    finally:
        await receiver.stop()
