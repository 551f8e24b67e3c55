"""`datapolis tail` over server-sent events, against a small local server
speaking notify's stream protocol: it finds or creates an `sse`
subscription, prints the records, resumes with Last-Event-ID after a dropped
connection, and stops with exit 3 and the reason when the stream ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

DATAPOLIS = str(Path(sys.executable).parent / "datapolis")


def _record(n: int) -> str:
    event = {"id": f"data.air:0:{n}", "type": "org.datapolis.record.air.v1",
             "data": {"station_id": "s1", "pm25": n}}  # fmt: skip
    return f"id: 0:{n + 1}\nevent: record\ndata: {json.dumps(event)}\n\n"


class Notify(BaseHTTPRequestHandler):
    subscriptions: ClassVar[list[dict[str, Any]]] = []
    created: ClassVar[list[dict[str, Any]]] = []
    resumed_from: ClassVar[list[str | None]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/datasets/air"):
            self._json(200, {"dataset_id": "ds-air", "slug": "air", "topic": "data.air"})
        elif self.path.startswith("/subscriptions?"):
            self._json(200, {"items": self.subscriptions, "next": None})
        elif self.path == "/subscriptions/sub-1/events":
            last = self.headers.get("Last-Event-ID")
            self.resumed_from.append(last)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if last is None:
                # Two records, then the connection drops without an end.
                self.wfile.write((": ping\n\n" + _record(0) + _record(1)).encode())
                self.wfile.flush()
                self.close_connection = True
                return
            end = 'event: end\ndata: {"reason": "no-active-agreement"}\n\n'
            self.wfile.write((_record(2) + end).encode())
        else:
            self._json(404, {"title": "Not found", "code": "subscription-not-found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.created.append(body)
        sub = {"subscription_id": "sub-1", "channel": "sse", "status": "active",
               "dataset_id": "ds-air", "purpose": None, "fields": None, "filter": {}}  # fmt: skip
        self.subscriptions.append(sub)
        self._json(201, sub)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Notify)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _tail(server: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPOLIS_")}
    env.update({"DATAPOLIS_CONFIG": str(tmp_path / "c.toml"), "DATAPOLIS_API_KEY": "dpk_x",
                "DATAPOLIS_CATALOG_URL": server, "DATAPOLIS_NOTIFY_URL": server})  # fmt: skip
    return subprocess.run(
        [DATAPOLIS, "tail", "air", "--json", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_tail_creates_a_subscription_follows_resumes_and_stops_at_the_end(
    server: str, tmp_path: Path
) -> None:
    result = _tail(server, tmp_path)
    assert Notify.created == [{"dataset": "air", "channel": "sse", "filter": {}}]
    printed = [json.loads(line)["data"]["pm25"] for line in result.stdout.splitlines()]
    assert printed == [0, 1, 2]
    # Resumed right after the last record received, nothing repeated.
    assert Notify.resumed_from == [None, "0:2"]
    assert result.returncode == 3, result.stderr
    assert "no-active-agreement" in result.stderr
    assert "Traceback" not in result.stderr

    # Its subscription is found again, not created twice.
    again = _tail(server, tmp_path, "--max", "1")
    assert again.returncode == 0, again.stderr
    assert len(Notify.created) == 1
