"""Domain errors. They know nothing of HTTP: `http.problems` maps them.

Each error carries a stable machine-readable ``code`` that clients may rely on;
the message is for humans and may change.
"""

from __future__ import annotations

from typing import Any


class DatapolisError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidInput(DatapolisError):
    code = "invalid-input"


class NotFound(DatapolisError):
    code = "not-found"


class Conflict(DatapolisError):
    code = "conflict"


class Unauthenticated(DatapolisError):
    code = "unauthenticated"


class Forbidden(DatapolisError):
    code = "forbidden"


class TooLarge(DatapolisError):
    code = "payload-too-large"


class Overloaded(DatapolisError):
    """The service sheds load rather than buffer without bound."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


class Unavailable(DatapolisError):
    """A dependency (Kafka, PostgreSQL) cannot do its part now; retry later."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


class Throttled(DatapolisError):
    """This client did something limited too often (for example failed to
    authenticate); it may try again after ``retry_after_s``."""

    code = "throttled"

    def __init__(self, message: str, *, retry_after_s: int = 60, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after_s = retry_after_s


def public_message(exc: DatapolisError) -> str:
    """``exc``'s message without the driver error it was raised from.

    Raise sites translate a client library's error into a domain error with a
    sentence of their own (``raise Unavailable("Kafka is unreachable") from
    exc``); some also append the cause (``f"...: {exc!r}"``). Callers are owed
    the sentence, not the driver's class names and internals, which stay in
    the logs (see ``http.problems``)."""
    message = exc.message
    cause = exc.__cause__
    if cause is None or isinstance(cause, DatapolisError):
        return message
    for internal in (repr(cause), str(cause)):
        if internal and message.endswith(internal):
            return message[: -len(internal)].rstrip(" :;,-") or exc.code
    return message
