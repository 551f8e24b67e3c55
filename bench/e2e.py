"""End-to-end benchmark of the platform: records ingested, delivered under
consent by notify, and withdrawn. Prints figures; it is not a timed test.

    uv run python bench/e2e.py [--duration 120] [--rate 1000] [--consents 10000]
                               [--cycles 1000] [--fanout-records 5000]   (make bench)

Against the real broker and PostgreSQL (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL;
defaults: the local stack), with the platform's own processes, each on a
PostgreSQL schema and consumer groups of its own, on free ports: catalog api,
ingest api, consent api, notify api and notify worker (``python -m
datapolis_<service> api|worker``). The operator registers a publisher and a
consumer through catalog and issues their keys; the publisher registers an
open and a personal dataset; the consumer's agreement on the personal one is
requested and granted through consent, each data subject's consent through
consent's subject API (with subject tokens of an issuer made up here), and
subscriptions through notify's API. Records go in through ingest's HTTP API.
The webhook receiver runs in this process (aiohttp, one address of
127.0.0.0/8 per subscription, as partners are distinct hosts) and verifies
every request's Standard Webhooks signature with the ``standardwebhooks``
package before counting it.

(1) latency: ``--rate`` records/s of the personal dataset (open loop, in
    requests of ``--batch`` records), over subjects who consented, for
    ``--duration`` s; from each record's ingest 2xx to (a) a plain aiokafka
    consumer reading it from ``data.<slug>`` (the baseline: what the broker
    alone costs), (b) its verified webhook receipt, (c) its server-sent event.
    p50, p99, p99.9. Target: p99 of (b) and (c) at most 50 ms.
(2) fan-out: deliveries/s from the notify worker to 100 webhook
    subscriptions of the open dataset (records x subscriptions received, from
    the first receipt to the last). Target: at least 2,000/s.
(3) revocation: ``--consents`` consents granted through consent's API
    (concurrently; the seeding time is printed), records flowing at
    ``--rate`` for them, then ``--cycles`` grant/withdraw cycles (a new subject
    each, ``--cycle-concurrency`` at once): the subject grants, its records are
    delivered, it withdraws while its records keep coming for 1.5 s more; the
    time from the withdraw's answer to the last of its records the receiver
    got. p50, p99, max and the violations of the 1 s bound. Targets: p99 at
    most 250 ms, no violation.

Everything it creates (schemas, the datasets' topics) is removed at the end
(``BENCH_KEEP=1`` leaves them, and the processes' logs are in
/tmp/bench-e2e-<run>/); ``BENCH_DUMP=<file>`` writes each record of (1) with
its ingest answer, Kafka, webhook and SSE times (perf_counter), one JSON
array a line, to see when the tail happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook

from datapolis_shared.settings import DEV_OPERATOR_KEY

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)
REPO = Path(__file__).resolve().parent.parent
MAX_LATENCY_P99_MS = 50
MIN_FANOUT_PER_S = 2_000
MAX_REVOCATION_P99_MS = 250
BOUND_S = 1.0
FANOUT_SUBSCRIPTIONS = 100
AFTER_WITHDRAW_S = 1.5  # a withdrawn subject's records keep coming this long
PURPOSE = "dpv:ScientificResearch"
ISSUER, AUDIENCE = "https://subjects.bench.example", "datapolis-consent"
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "resident": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
    },
    "required": ["id", "meter_id", "resident", "kwh"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(values: list[float], *qs: float) -> str:
    names = {0.5: "p50", 0.99: "p99", 0.999: "p99.9", 1.0: "max"}
    return ", ".join(f"{names[q]} {percentile(values, q) * 1e3:.1f} ms" for q in qs)


# --- the platform's processes -------------------------------------------------------


@dataclass
class Platform:
    run: str
    urls: dict[str, str] = field(default_factory=dict)
    schemas: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pid: int = 0
    logs: Path = Path()

    def start(self, issuers: str) -> None:
        self.logs = Path(f"/tmp/bench-e2e-{self.run}")  # noqa: S108 - the processes' logs
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, command in (
            ("catalog", "api"), ("ingest", "api"), ("consent", "api"),
            ("notify", "api"), ("notify", "worker"),
        ):  # fmt: skip
            prefix = name.upper()
            schema = self.schemas.setdefault(name, f"bench_e2e_{name}_{self.run}")
            port = free_port()
            env = {
                **os.environ,
                f"{prefix}_DEV": "true",
                f"{prefix}_SERVICE_NAME": f"bench-e2e-{name}-{self.run}",
                f"{prefix}_LOG_LEVEL": "WARNING",
                f"{prefix}_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
                f"{prefix}_POSTGRES__DSN": DATABASE_URL,
                f"{prefix}_POSTGRES__DB_SCHEMA": schema,
                f"{prefix}_HTTP__PORT": str(port),
                "CONSENT_SUBJECT_TOKEN_ISSUERS": issuers,
                "NOTIFY_WEBHOOKS__ALLOW_TARGETS": '["127.0.0.0/8"]',
                "NOTIFY_WORKER_HTTP__PORT": str(port),
                # Only this run's datasets: other data.* topics of the shared
                # broker are not this benchmark's load.
                "NOTIFY_DELIVERY__TOPIC_PATTERN": rf"^data\.e2e-{self.run}-.*",
                "NOTIFY_DELIVERY__GROUP_ID": f"bench-e2e-notify-delivery-{self.run}",
            }
            module = f"datapolis_{name}"
            if command == "api":
                subprocess.run(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", module, "migrate"],
                    env=env, cwd=REPO, check=True, capture_output=True, timeout=180,
                )  # fmt: skip
            log = (self.logs / f"{name}-{command}.log").open("wb")
            process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", module, command], env=env, cwd=REPO,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            self.processes.append(process)
            key = name if command == "api" else f"{name}-{command}"
            self.urls[key] = f"http://127.0.0.1:{port}"
            if command == "worker":
                self.worker_pid = process.pid

    async def ready(self, session: aiohttp.ClientSession, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        for name, url in self.urls.items():
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/readyz") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} not ready in {timeout_s:.0f} s (logs: {self.logs})")
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:  # Linux
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- HTTP helpers -----------------------------------------------------------------


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(
        self, method: str, path: str, token: str, body: Any = None, data: bytes | None = None,
        expect: tuple[int, ...] = (200, 201, 202),
    ) -> Any:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        payload = data if data is not None else (orjson.dumps(body) if body is not None else None)
        async with self.session.request(
            method, self.base + path, data=payload, headers=headers
        ) as r:
            text = await r.read()
            if r.status not in expect:
                raise ApiError(r.status, text.decode(errors="replace")[:500])
            return orjson.loads(text) if text else None

    async def until(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """Retried while the service has not learnt yet what another one did."""
        deadline = time.monotonic() + 600
        while True:
            try:
                return await self.call(method, path, token, body)
            except ApiError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.3)


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status


# --- the receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    """Webhook endpoints; every request's signature verified first."""

    verifiers: dict[str, Webhook] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)  # record id -> first receipt
    last_of_subject: dict[str, float] = field(default_factory=dict)
    fanout_records: int = 0
    fanout_first: float = 0.0
    fanout_last: float = 0.0
    fanout_seen: set[str] = field(default_factory=set)  # subscriptions reached
    bad_signatures: int = 0
    requests: int = 0
    runners: list[web.AppRunner] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["name"]
        try:
            self.verifiers[name].verify(body, dict(request.headers))
        except Exception:  # any failure is a bad signature
            self.bad_signatures += 1
            return web.Response(status=400)
        now = time.perf_counter()
        self.requests += 1
        events = orjson.loads(body)
        if not isinstance(events, list):
            events = [events]
        if name.startswith("fan"):
            self.fanout_seen.add(name)
            timed = sum(1 for e in events if str((e.get("data") or {}).get("id")).startswith("f"))
            if timed:  # the warm-up's records are not counted
                self.fanout_first = self.fanout_first or now
                self.fanout_last = now
                self.fanout_records += timed
            return web.Response(status=204)
        for event in events:
            data = event.get("data") or {}
            rid = data.get("id")
            if rid is not None:
                self.first.setdefault(rid, now)
            subject = data.get("resident")
            if subject is not None:
                self.last_of_subject[subject] = now
        return web.Response(status=204)

    async def listen(self, host: str) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{name}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        self.runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


class SseClient:
    """One server-sent event stream: the first time each record id came."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.status = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self._task = asyncio.create_task(self._read(session, url, token))

    async def _read(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with session.get(url, headers=headers, timeout=timeout) as response:
            self.status = response.status
            if response.status != 200:
                return
            data: list[bytes] = []
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    self._event(b"\n".join(data), time.perf_counter())
                    data = []

    def _event(self, raw: bytes, now: float) -> None:
        with contextlib.suppress(ValueError):
            parsed = orjson.loads(raw)
            for event in parsed if isinstance(parsed, list) else [parsed]:
                data = event.get("data") if isinstance(event, dict) else None
                rid = (data or event).get("id") if isinstance(data or event, dict) else None
                if isinstance(rid, str):
                    self.first.setdefault(rid, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._task


class Tail:
    """The baseline: a plain aiokafka consumer on the data topic."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.first: dict[str, float] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=KAFKA, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()
        partitions = self._consumer.partitions_for_topic(self.topic) or set()
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for partition in assigned:
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError):
                        rid = orjson.loads(record.value or b"{}").get("id")
                        if rid is not None:
                            self.first.setdefault(rid, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


# --- load -----------------------------------------------------------------------


Pick = Callable[[int], str]  # the n-th record's subject


async def open_loop(
    ingest: Api, slug: str, token: str, rate: float, seconds: float, batch: int,
    prefix: str, pick: Pick, answered: dict[str, float], stop: asyncio.Event | None = None,
) -> int:  # fmt: skip
    """``rate`` records/s in requests of ``batch``, each leaving on schedule
    whatever the earlier answers take; each record's 2xx moment."""
    failures = 0

    async def send(first: int) -> None:
        nonlocal failures
        ids = [f"{prefix}-{n}" for n in range(first, first + batch)]
        subjects = [pick(n) for n in range(first, first + batch)]
        body = orjson.dumps(
            [{"id": i, "meter_id": f"m-{s}", "resident": s, "kwh": 1.5}
             for i, s in zip(ids, subjects, strict=True)]
        )  # fmt: skip
        try:
            await ingest.call("POST", f"/datasets/{slug}/records", token, data=body)
        except (ApiError, aiohttp.ClientError):
            failures += 1
            return
        now = time.perf_counter()
        for i in ids:
            answered[i] = now

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    requests = int(rate * seconds / batch)
    for k in range(requests):
        if stop is not None and stop.is_set():
            break
        delay = start + k * batch / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(k * batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return failures


async def settle(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # polled: the receivers' tasks fill the maps


def lags(arrived: dict[str, float], answered: dict[str, float]) -> tuple[list[float], int]:
    found = [arrived[i] - t for i, t in answered.items() if i in arrived]
    return found, len(answered) - len(found)


async def closed_loop(count: int, clients: int, call: Callable[[int], Awaitable[None]]) -> float:
    items = iter(range(count))

    async def caller() -> None:
        for n in items:
            await call(n)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return time.perf_counter() - started


# --- the run ---------------------------------------------------------------------


async def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="s of the latency load")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s")
    parser.add_argument("--batch", type=int, default=10, help="records per ingest request")
    parser.add_argument("--linger-ms", type=int, default=5, help="webhook batch linger")
    parser.add_argument("--consents", type=int, default=10_000, help="active consents")
    parser.add_argument("--cycles", type=int, default=1_000, help="grant/withdraw cycles")
    parser.add_argument("--cycle-concurrency", type=int, default=20)
    parser.add_argument("--fanout-records", type=int, default=5_000)
    parser.add_argument("--seed-clients", type=int, default=32)
    args = parser.parse_args()
    # SIGTERM (a timeout, a CI cancel) stops the run through its cleanup.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    print("command:", " ".join(["python", "bench/e2e.py", *sys.argv[1:]]))
    print(f"load average at start: {os.getloadavg()}; broker {KAFKA}")

    run = uuid.uuid4().hex[:8]
    subject_key = Ed25519PrivateKey.generate()
    public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(subject_key.public_key()))
    issuers = json.dumps(
        [{"issuer": ISSUER, "audience": AUDIENCE, "jwks": {"keys": [{**public, "kid": "b1"}]}}]
    )
    platform = Platform(run)
    receiver = Receiver()
    topics: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))
    tail: Tail | None = None
    sse = SseClient()
    try:
        platform.start(issuers)
        await platform.ready(session)
        catalog, ingest, consent, notify = (
            Api(session, platform.urls[name]) for name in ("catalog", "ingest", "consent", "notify")
        )

        # Organisations, keys and datasets through catalog, as an operator does.
        tokens: dict[str, str] = {}
        orgs: dict[str, str] = {}
        for role, scopes in (
            ("publisher", ["publish", "ingest", "read", "consent"]),
            ("consumer", ["read", "consent", "subscribe"]),
        ):
            org = await catalog.call(
                "POST", "/organisations", DEV_OPERATOR_KEY,
                {"name": f"Bench {role} {run}", "kind": "company",
                 "contact_email": "ops@example.org"},
            )  # fmt: skip
            orgs[role] = org["org_id"]
            issued = await catalog.call(
                "POST", f"/organisations/{org['org_id']}/keys", DEV_OPERATOR_KEY,
                {"scopes": scopes, "label": "bench"},
            )  # fmt: skip
            tokens[role] = issued["token"]
        pub, con = tokens["publisher"], tokens["consumer"]
        slugs = {"open": f"e2e-{run}-open", "personal": f"e2e-{run}-personal"}
        topic_of: dict[str, str] = {}
        for level, slug in slugs.items():
            body: dict[str, Any] = {
                "json_schema": SCHEMA, "slug": slug, "title": f"Bench {level}",
                "theme": "energy", "licence": "etalab-2.0", "access_level": level,
                "key_field": "meter_id", "partitions": 3,
            }  # fmt: skip
            if level == "personal":
                body["subject_field"] = "resident"
            created = await catalog.until("POST", "/datasets", pub, body)
            topic_of[level] = created.get("topic_name") or f"data.{slug}"
            topics += [topic_of[level], f"raw.{slug}"]  # catalog made both
        personal = slugs["personal"]

        # The consumer's agreement on the personal dataset, granted.
        until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        asked = await consent.until(
            "POST", "/agreements", con,
            {"dataset": personal, "project": {"name": "Bench", "description": "end to end"},
             "purposes": [PURPOSE], "fields": ["id", "meter_id", "resident", "kwh"],
             "valid_until": until},
        )  # fmt: skip
        granted_agreement = await consent.call(
            "POST", f"/agreements/{asked['agreement_id']}/grant", pub, {}
        )
        if os.environ.get("BENCH_DEBUG"):
            print(granted_agreement)

        # Webhook receivers: one loopback address per subscription.
        async def subscribe(name: str, dataset: str, host: str, **extra: Any) -> str:
            port = await receiver.listen(host)
            created = await notify.until(
                "POST", "/subscriptions", con,
                {"dataset": dataset, "channel": "webhook", "url": f"http://{host}:{port}/{name}",
                 **extra},
            )  # fmt: skip
            receiver.verifiers[name] = Webhook(created["signing_key"]["secret"])
            return str(created["subscription_id"])

        for i in range(FANOUT_SUBSCRIPTIONS):
            await subscribe(f"fan{i}", slugs["open"], f"127.0.0.{i + 2}",
                            batch={"max_records": 100, "linger_ms": 20})  # fmt: skip
        await subscribe(
            "lat", personal, "127.0.1.1", purpose=PURPOSE,
            batch={"max_records": 100, "linger_ms": args.linger_ms},
        )  # fmt: skip
        sse_sub = await notify.until(
            "POST", "/subscriptions", con,
            {"dataset": personal, "channel": "sse", "purpose": PURPOSE},
        )  # fmt: skip
        sse.start(
            session,
            f"{platform.urls['notify']}/subscriptions/{sse_sub['subscription_id']}/events",
            con,
        )

        # (2) fan-out first: the open dataset needs no consent.
        warm: dict[str, float] = {}
        deadline = time.monotonic() + 60
        n = 0
        while len(receiver.fanout_seen) < FANOUT_SUBSCRIPTIONS and time.monotonic() < deadline:
            await open_loop(ingest, slugs["open"], pub, 10, 1, 10, f"warm{n}", lambda _: "x", warm)
            n += 1  # until every subscription was picked up by the worker
        await settle(lambda: False, 2)
        receiver.fanout_records, receiver.fanout_first = 0, 0.0
        expected = args.fanout_records * FANOUT_SUBSCRIPTIONS
        cpu = cpu_seconds(platform.worker_pid)
        sent: dict[str, float] = {}
        began = time.perf_counter()
        await closed_loop(
            args.fanout_records // 500, 4,
            lambda k: ingest.call(
                "POST", f"/datasets/{slugs['open']}/records", pub,
                data=orjson.dumps([{"id": f"f{k}-{j}", "meter_id": f"m-{j % 50}",
                                    "resident": "x", "kwh": 1.0} for j in range(500)]),
            ),
        )  # fmt: skip
        del sent
        await settle(lambda: receiver.fanout_records >= expected, 300)
        elapsed = receiver.fanout_last - receiver.fanout_first
        total_s = receiver.fanout_last - began
        cpu_used = cpu_seconds(platform.worker_pid) - cpu
        rate = receiver.fanout_records / max(elapsed, 1e-9)
        verdict = "meets" if rate >= MIN_FANOUT_PER_S else "misses"
        print(
            f"(2) fan-out: {receiver.fanout_records:,} of {expected:,} deliveries to "
            f"{FANOUT_SUBSCRIPTIONS} webhook subscriptions in {elapsed:.2f} s = {rate:,.0f}/s "
            f"({verdict} >= {MIN_FANOUT_PER_S:,}/s); {receiver.fanout_records / total_s:,.0f}/s "
            f"from the first ingest request; worker CPU {cpu_used:.1f} s "
            f"({cpu_used / max(receiver.fanout_records, 1) * 1e6:.0f} µs per delivery)"
        )

        # (3a) the consents, seeded through consent's subject API.
        subjects = [f"s-{run}-{k}" for k in range(args.consents)]

        def subject_token(subject: str) -> str:
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "dataset": personal,
                      "iat": now, "exp": now + 3600}  # fmt: skip
            return jwt.encode(claims, subject_key, algorithm="EdDSA", headers={"kid": "b1"})

        grant_body = {"dataset": personal, "consumer_org_id": orgs["consumer"],
                      "purpose": PURPOSE, "valid_until": until}  # fmt: skip

        async def grant(subject: str) -> str:
            answer = await consent.call(
                "POST", "/subjects/me/consents", subject_token(subject), grant_body
            )
            return str(answer["consent"]["consent_id"])

        await consent.until("POST", "/subjects/me/consents", subject_token(subjects[0]), grant_body)
        seconds = await closed_loop(
            len(subjects) - 1, args.seed_clients, lambda k: grant(subjects[k + 1])
        )
        print(
            f"(3a) {len(subjects):,} consents granted through consent's API in {seconds:.1f} s "
            f"({(len(subjects) - 1) / seconds:,.0f}/s, {args.seed_clients} callers)"
        )
        # Until notify delivers the last seeded subject's records.
        probe: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while not any(i in receiver.first for i in probe) and time.monotonic() < deadline:
            await open_loop(ingest, personal, pub, 10, 1, 10, f"probe{len(probe)}",
                            lambda _: subjects[-1], probe)  # fmt: skip
            await asyncio.sleep(0.5)

        # (1) latency.
        tail = Tail(topic_of["personal"])
        await tail.start()
        answered: dict[str, float] = {}
        print(f"load average before (1): {os.getloadavg()}")
        failures = await open_loop(
            ingest, personal, pub, args.rate, args.duration, args.batch, "lat",
            lambda _: random.choice(subjects), answered,
        )  # fmt: skip
        await settle(lambda: all(i in receiver.first for i in answered), 30)
        await settle(lambda: all(i in sse.first for i in answered), 5)
        if dump := os.environ.get("BENCH_DUMP"):  # BENCH_DUMP=<file>: each record's times
            rows = [[i, t, tail.first.get(i), receiver.first.get(i), sse.first.get(i)]
                    for i, t in answered.items()]  # fmt: skip
            Path(dump).write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
        base, base_missing = lags(tail.first, answered)
        hook, hook_missing = lags(receiver.first, answered)
        stream, stream_missing = lags(sse.first, answered)
        qs = (0.5, 0.99, 0.999)
        print(
            f"(1) latency, {len(answered):,} records at {args.rate:,.0f}/s for "
            f"{args.duration:.0f} s ({args.batch} per request, {failures} requests failed), "
            f"from the ingest 2xx:"
        )
        print(f"    (a) baseline, read from {tail.topic} by a plain consumer: {ms(base, *qs)}"
              f" ({base_missing} never read)")  # fmt: skip
        for name, values, missing in (("webhook, verified", hook, hook_missing),
                                      ("server-sent event", stream, stream_missing)):  # fmt: skip
            if not values:
                print(f"    {name}: nothing received (SSE status {sse.status})")
                continue
            p99 = percentile(values, 0.99) * 1e3
            verdict = "meets" if p99 <= MAX_LATENCY_P99_MS else "misses"
            ratio = p99 / max(percentile(base, 0.99) * 1e3, 1e-3)
            print(
                f"    {name}: {ms(values, *qs)} ({verdict} p99 <= {MAX_LATENCY_P99_MS} ms; "
                f"{missing} missing; p99 {ratio:.1f}x the baseline's)"
            )
        await tail.stop()
        tail = None
        await show_metrics(session, platform.urls["notify-worker"])

        # (3b) revocation under load.
        hot: list[str] = []
        stop = asyncio.Event()
        withdrawn_at: dict[str, float] = {}
        granted_seen: list[float] = []

        def pick(k: int) -> str:
            # Half the records are the cycling subjects', half any consented one's.
            if hot and k % 2:
                return hot[(k // 2) % len(hot)]
            return random.choice(subjects)

        async def cycle(k: int) -> None:
            subject = f"c-{run}-{k}"
            consent_id = await grant(subject)
            granted = time.perf_counter()
            hot.append(subject)
            await settle(lambda: receiver.last_of_subject.get(subject, 0) > granted, 10)
            if receiver.last_of_subject.get(subject, 0) > granted:
                granted_seen.append(receiver.last_of_subject[subject] - granted)
            await consent.call(
                "POST", f"/subjects/me/consents/{consent_id}/withdraw", subject_token(subject)
            )
            withdrawn_at[subject] = time.perf_counter()
            await asyncio.sleep(AFTER_WITHDRAW_S)  # its records keep coming meanwhile
            hot.remove(subject)

        load = asyncio.create_task(
            open_loop(
                ingest, personal, pub, args.rate, 24 * 3600, args.batch, "rev", pick, {}, stop
            )
        )
        cpu = cpu_seconds(platform.worker_pid)
        began = time.perf_counter()
        print(f"load average before (3b): {os.getloadavg()}")
        await closed_loop(args.cycles, args.cycle_concurrency, cycle)
        cycles_s = time.perf_counter() - began
        await asyncio.sleep(2.0)  # late deliveries, if any, still arrive
        stop.set()
        await load
        cpu_used = cpu_seconds(platform.worker_pid) - cpu
        after = [receiver.last_of_subject.get(s, 0.0) - t for s, t in withdrawn_at.items()]
        delivered_after = [a for a in after if a > 0]
        lag = [max(a, 0.0) for a in after]
        violations = sum(1 for a in after if a > BOUND_S)
        p99 = percentile(lag, 0.99) * 1e3
        verdict = "meets" if p99 <= MAX_REVOCATION_P99_MS and not violations else "misses"
        print(
            f"(3b) revocation: {len(withdrawn_at):,} grant/withdraw cycles in {cycles_s:.1f} s "
            f"({args.cycle_concurrency} at once) with {len(subjects):,} consents active and "
            f"{args.rate:,.0f} records/s flowing; worker CPU {cpu_used:.1f} s"
        )
        print(
            "    withdraw answered -> last delivery of the subject's records: "
            f"{ms(lag, 0.5, 0.99, 1.0)}"
            f" ({verdict} p99 <= {MAX_REVOCATION_P99_MS} ms, none over {BOUND_S:.0f} s); "
            f"{len(delivered_after)} cycles had a delivery after the answer; "
            f"violations of the {BOUND_S:.0f} s bound: {violations}"
        )
        print(
            f"    grant -> first delivery (records flowing, the grant's view update): "
            f"{ms(granted_seen, 0.5, 0.99)}; {receiver.bad_signatures} bad signatures of "
            f"{receiver.requests:,} requests"
        )
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        if tail is not None:
            await tail.stop()
        await sse.stop()
        await session.close()
        platform.stop()
        await receiver.close()
        await cleanup(topics, list(platform.schemas.values()))


async def show_metrics(session: aiohttp.ClientSession, worker: str) -> None:
    """What the worker says of its own waits: records withheld or held back
    (by reason), and how far its entitlement view lagged."""
    async with session.get(f"{worker}/metrics") as r:
        text = await r.text()
    wanted = (
        "datapolis_notify_withheld_records_total{",
        "datapolis_notify_record_to_delivery_seconds_sum",
        "datapolis_notify_record_to_delivery_seconds_count",
        "datapolis_entitlements_seconds_since_caught_up",
        "datapolis_notify_deliveries_total{",
    )
    for line in text.splitlines():
        if line.startswith(wanted):
            print(f"    worker: {line}")


async def cleanup(topics: list[str], schemas: list[str]) -> None:
    if os.environ.get("BENCH_KEEP"):  # BENCH_KEEP=1: leave them for a look
        return
    if topics:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            with contextlib.suppress(Exception):
                await admin.delete_topics(topics)
        finally:
            await admin.close()
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
