"""A parser of server-sent events (the WHATWG event stream format)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines (without their line ends); comments
    (``: ping``) are skipped, an event ends at an empty line."""
    event = "message"
    data: list[str] = []
    last_id: str | None = None
    seen = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if seen:
                yield Event(event, "\n".join(data), last_id)
            event, data, seen = "message", [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
            seen = True
        elif name == "event":
            event = value
            seen = True
        elif name == "id" and "\0" not in value:
            last_id = value
            seen = True
