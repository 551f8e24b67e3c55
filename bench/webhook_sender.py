"""Webhook sender benchmark: signed deliveries per second from one process.
Prints figures; it is not a timed test.

    uv run python bench/webhook_sender.py [--endpoints 100] [--seconds 10]   (make bench)

A receiver (uvicorn, answering 204) runs in a process of its own on
127.0.0.1; the sender posts a 10-record JSON batch to ``--endpoints``
subscriptions (distinct paths of that receiver, allow-listed), one request in
flight per subscription, for ``--seconds``, once signing with ``v1`` (HMAC)
and once with ``v1a`` (Ed25519). It prints deliveries per second and the
attempt's latency (p50, p99). The engine's fan-out target is 2,000
deliveries/s from one notify process to 100 subscriptions; this is the
sender's share of it, without Kafka or PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import uvicorn

from datapolis_notify.ports import SigningKey, WebhookEndpoint
from datapolis_notify.webhooks import (
    HttpWebhookSender,
    WebhookSettings,
    new_v1_secret,
    new_v1a_key_pair,
)

BODY = (
    b'{"type":"records","data":['
    + b",".join(b'{"id":"r%d","meter":"m-%d","kwh":3.5}' % (i, i) for i in range(10))
    + b"]}"
)


async def receiver(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def serve(port: int) -> None:
    uvicorn.run(receiver, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def run(port: int, scheme: str, endpoints: int, seconds: float) -> None:
    key = (
        SigningKey("k", "v1", new_v1_secret())
        if scheme == "v1"
        else SigningKey("k", "v1a", new_v1a_key_pair()[0])
    )
    targets = [
        WebhookEndpoint(f"sub-{i}", f"http://127.0.0.1:{port}/hooks/{i}", (key,))
        for i in range(endpoints)
    ]
    sender = HttpWebhookSender(
        WebhookSettings(allow_targets=["127.0.0.1/32"], max_connections_per_host=endpoints)
    )
    latencies: list[float] = []
    failures = 0
    stop = time.monotonic() + seconds

    async def deliver(endpoint: WebhookEndpoint) -> None:
        nonlocal failures
        n = 0
        while time.monotonic() < stop:
            n += 1
            outcome = await sender.send(
                endpoint,
                message_id=f"msg_{endpoint.subscription_id}_{n}",
                body=BODY,
                content_type="application/json",
                now=datetime.now(UTC),
            )
            if outcome.kind == "delivered":
                latencies.append(outcome.elapsed_s)
            else:
                failures += 1

    # A warm-up request per endpoint opens the connections.
    await asyncio.gather(
        *(
            sender.send(
                t,
                message_id="warm",
                body=b"{}",
                content_type="application/json",
                now=datetime.now(UTC),
            )
            for t in targets
        )
    )
    started = time.monotonic()
    await asyncio.gather(*(deliver(t) for t in targets))
    elapsed = time.monotonic() - started
    await sender.aclose()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"webhook sender {scheme}: {len(latencies) / elapsed:,.0f} deliveries/s to {endpoints} "
        f"subscriptions over {elapsed:.1f} s, latency p50 {cuts[49] * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms, failures {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        asyncio.run(wait_listening(port))
        for scheme in ("v1", "v1a"):
            asyncio.run(run(port, scheme, args.endpoints, args.seconds))
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
