"""Connection options every Kafka client of the project shares (TLS, SASL).

The producer, the consumer loops and the admin client take their options from
:func:`client_options`; faust apps take the same settings through
``datapolis_shared.streams.broker_options``, which builds on
:func:`ssl_context`. One ``KafkaSettings`` therefore reaches every client.
"""

from __future__ import annotations

import ssl
from typing import Any

from datapolis_shared.settings import KafkaSettings


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection, None without TLS."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    # The cluster's CA (Strimzi issues its own) or the system trust store,
    # which SSL_CERT_FILE can point at a bundle (deploy/k8s: kafka-client patch).
    return ssl.create_default_context(cafile=settings.ssl_cafile)


def describe(settings: KafkaSettings) -> str:
    """Where and how the clients connect, for error messages (no secret)."""
    how: str = settings.security_protocol
    if settings.sasl_mechanism:
        how += f", {settings.sasl_mechanism} as {settings.sasl_username}"
    return f"{settings.bootstrap_servers} ({how})"


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options
