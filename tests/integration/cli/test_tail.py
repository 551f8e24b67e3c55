"""`datapolis tail` over server-sent events against the real notify route:
it finds or creates an `sse` subscription, prints the records pushed through
the real ingest as they come, and stops after `--max`; its errors are the
services' problems."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.cli.conftest import (
    DATAPOLIS,
    Org,
    Platform,
    Result,
    fails,
    new_org,
    notify_knows,
    register,
)

pytestmark = pytest.mark.integration

OPEN_STREAMS = "datapolis_notify_sse_streams_open"
WAIT_S = 60


def _open_streams(platform: Platform) -> float:
    metrics = httpx.get(f"{platform.urls['notify']}/metrics", timeout=5).text
    for line in metrics.splitlines():
        if line.startswith(f"{OPEN_STREAMS} "):
            return float(line.split()[1])
    # The gauge is registered by the first stream.
    return 0.0


def _wait_streams(platform: Platform, wanted: float, tail: subprocess.Popen[str] | None) -> bool:
    """Whether notify reached ``wanted`` open streams (False: ``tail``
    exited first)."""
    deadline = time.monotonic() + WAIT_S
    while _open_streams(platform) != wanted:
        if tail is not None and tail.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"notify never had {wanted} streams open"
        time.sleep(0.1)
    return True


@contextmanager
def tailing(
    platform: Platform, consumer: Org, *args: str, notify_url: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``datapolis tail args...`` running, once notify has opened its stream:
    a new stream starts at the end of the topic, so only what is pushed
    after that is sent."""
    # The streams of the commands before have been closed.
    _wait_streams(platform, 0, None)
    deadline = time.monotonic() + WAIT_S
    while True:
        tail = subprocess.Popen(
            [DATAPOLIS, "tail", *args],
            env=platform.env(DATAPOLIS_API_KEY=consumer.token, DATAPOLIS_NOTIFY_URL=notify_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if _wait_streams(platform, 1, tail):
                yield tail
                return
            _, stderr = tail.communicate()
            # Notify's API learns of a new dataset from catalog's events, a
            # moment after catalog answered: until then it refuses the stream.
            assert "unknown-dataset" in stderr, stderr
            assert time.monotonic() < deadline, stderr
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()


def _ended(tail: subprocess.Popen[str]) -> Result:
    stdout, stderr = tail.communicate(timeout=WAIT_S)
    assert "Traceback" not in stderr, stderr
    return Result(tail.returncode, stdout, stderr)


@dataclass(frozen=True)
class Air:
    publisher: Org
    consumer: Org
    slug: str
    topic: str

    def push(self, platform: Platform, *records: dict[str, Any]) -> None:
        ndjson = "".join(json.dumps(record) + "\n" for record in records)
        pushed = platform.ok("push", self.slug, "-", "--format", "ndjson", "--retry-for", "30",
                             key=self.publisher.token, stdin=ndjson)  # fmt: skip
        assert pushed["accepted"] == len(records), pushed


@pytest.fixture(scope="module")
def air(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Air:
    """An open dataset of a publisher, and a consumer whose key notify knows."""
    publisher = new_org(platform, "Air Watch", ["publish", "ingest", "read"])
    consumer = new_org(platform, "Partner", ["read", "subscribe"])
    slug = register(platform, publisher, tmp_path_factory.mktemp("tail"))
    dataset = notify_knows(platform, slug, publisher)
    # Notify learns of the consumer's new key from catalog's events.
    platform.until_ok("subscription", "list", key=consumer.token)
    return Air(publisher, consumer, slug, dataset["topic"])


def _record(n: int, station: str = "s1") -> dict[str, Any]:
    return {"id": f"r{n}", "station_id": station, "pm25": n}


def test_tail_follows_pushed_records_over_server_sent_events(platform: Platform, air: Air) -> None:
    # An open dataset needs no agreement: the records come as CloudEvents.
    with tailing(platform, air.consumer, air.slug, "--max", "3", "--json") as tail:
        air.push(platform, *(_record(n) for n in range(3)))
        first = _ended(tail)
    assert first.code == 0, first.stderr
    assert "Created subscription" in first.stderr
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert [e["data"] for e in events] == [_record(n) for n in range(3)]
    # The CloudEvent's id is the record's place in the topic's one partition.
    first_offset = int(events[0]["id"].rsplit(":", 1)[1])
    assert [e["id"] for e in events] == [f"{air.topic}:0:{first_offset + n}" for n in range(3)]
    assert events[0]["source"].endswith(air.slug)
    assert events[0]["subject"] == "s1"

    # A filter makes a subscription of its own; the records it does not
    # match are not printed. Without --json, each record's data.
    with tailing(platform, air.consumer, air.slug, "--filter", "station_id=s2", "--max",
                 "1") as tail:  # fmt: skip
        air.push(platform, _record(3), _record(4, "s2"))
        filtered = _ended(tail)
    assert filtered.code == 0, filtered.stderr
    assert "Created subscription" in filtered.stderr
    assert json.loads(filtered.stdout) == _record(4, "s2")

    # The same command again follows the subscription it made, not a new one.
    with tailing(platform, air.consumer, air.slug, "--filter", "station_id=s2", "--max", "1",
                 "--json") as tail:  # fmt: skip
        air.push(platform, _record(5, "s2"))
        again = _ended(tail)
    assert again.code == 0, again.stderr
    assert "Created subscription" not in again.stderr
    assert json.loads(again.stdout)["data"] == _record(5, "s2")
    subscriptions = platform.ok("subscription", "list", "--all", key=air.consumer.token)
    streamed = [s for s in subscriptions if s["channel"] == "sse"]
    assert sorted(s["filter"].get("station_id", "") for s in streamed) == ["", "s2"]


class CuttableProxy:
    """A TCP relay to notify whose open connections can be cut, as a
    network or a proxy in between may."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self.sent = bytearray()  # what notify sent, all connections
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_notify: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_notify:
                    with self._lock:
                        self.sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            for end in self._open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def test_tail_resumes_after_the_connection_drops(platform: Platform, air: Air) -> None:
    proxy = CuttableProxy(int(platform.urls["notify"].rsplit(":", 1)[1]))
    try:
        with tailing(platform, air.consumer, air.slug, "--max", "4", "--json",
                     notify_url=proxy.url) as tail:  # fmt: skip
            air.push(platform, _record(10), _record(11))
            deadline = time.monotonic() + WAIT_S
            while b'"id":"r11"' not in proxy.sent:
                assert tail.poll() is None, tail.communicate()
                assert time.monotonic() < deadline, "r11 never sent"
                time.sleep(0.05)
            # Mid-stream, as an idle proxy or a flaky network does.
            proxy.cut()
            air.push(platform, _record(12), _record(13))
            resumed = _ended(tail)
    finally:
        proxy.close()
    assert resumed.code == 0, resumed.stderr
    assert "reconnecting" in resumed.stderr
    # Resumed from the last record received: nothing missed, nothing twice.
    printed = [json.loads(line)["data"]["id"] for line in resumed.stdout.splitlines()]
    assert printed == ["r10", "r11", "r12", "r13"]


def test_tail_errors_are_the_services_problems(platform: Platform, air: Air) -> None:
    missing = platform.run("tail", "no-such-dataset", "--max", "1", key=air.consumer.token)
    fails(missing, 4, "dataset-not-found")
    unknown = platform.run("tail", air.slug, "--subscription", f"sub-{uuid.uuid4().hex[:8]}",
                           key=air.consumer.token)  # fmt: skip
    fails(unknown, 4, "subscription-not-found")
    webhook = platform.ok("subscription", "create", "--dataset", air.slug, "--channel",
                          "webhook", "--url", "https://partner.example/hooks",
                          key=air.consumer.token)  # fmt: skip
    not_sse = platform.run("tail", air.slug, "--subscription", webhook["subscription_id"],
                           key=air.consumer.token)  # fmt: skip
    fails(not_sse, 5, "subscription-not-streamable")
