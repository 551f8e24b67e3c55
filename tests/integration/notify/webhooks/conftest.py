"""A real HTTP receiver on a loopback address, for the webhook sender's tests.

A plain asyncio server, so a test can see what reached it at the socket:
how many connections were opened, and every request as sent. Each response
closes its connection, so each request is a new connection (and a new pass
through the target guard)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Hold the answer until the receiver stops (a target that hangs).
    hang: bool = False
    # Stream this many bytes of body (a target answering without end).
    endless_body: bool = False


Replier = Callable[[Received], Reply]


class Receiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        reply: Replier | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.host = host
        self._port = port
        self.reply: Replier = reply or (lambda _: Reply())
        self.connections = 0
        self.requests: list[Received] = []
        self.body_bytes_sent = 0
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/hook", *, host: str | None = None) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, ssl=self._tls
        )

    async def stop(self) -> None:
        self._stopping.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("latin-1").strip():
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        received = Received(method, path, headers, body)
        self.requests.append(received)
        reply = self.reply(received)
        if reply.hang:
            await self._stopping.wait()
            return
        reason = "OK"
        head = [f"HTTP/1.1 {reply.status} {reason}", "connection: close"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        if reply.endless_body:
            head.append(f"content-length: {1 << 40}")
        else:
            head.append(f"content-length: {len(reply.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()
        chunk = b"x" * 65536
        while reply.endless_body:
            writer.write(chunk)
            await writer.drain()
            self.body_bytes_sent += len(chunk)


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receivers() -> AsyncIterator[ReceiverFactory]:
    """Starts receivers; stops them all at the test's end."""
    started: list[Receiver] = []

    async def start(
        host: str = "127.0.0.1",
        *,
        reply: Replier | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> Receiver:
        receiver = Receiver(host, reply=reply, tls=tls, port=port)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@dataclass(frozen=True)
class Tls:
    """A throwaway CA, and a server certificate for the given names."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls() -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("hooks.test", "moved.test")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(server=server, client=client)
