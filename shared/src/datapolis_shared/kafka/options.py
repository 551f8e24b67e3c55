"""Connection options every Kafka client of the project shares (TLS, SASL)."""

from __future__ import annotations

import ssl
from typing import Any

from datapolis_shared.settings import KafkaSettings


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        # The cluster's CA (Strimzi issues its own) or the system trust store.
        options["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options
