"""faust's broker options come from the same KafkaSettings as aiokafka's:
each security protocol maps to the same protocol, TLS context and user."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from datapolis_shared.kafka.options import client_options
from datapolis_shared.settings import KafkaSettings
from datapolis_shared.streams import broker_options


def _settings(protocol: str) -> KafkaSettings:
    sasl = protocol.startswith("SASL")
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": "k1:9093, k2:9093",
            "security_protocol": protocol,
            "sasl_mechanism": "SCRAM-SHA-512" if sasl else None,
            "sasl_username": "svc" if sasl else None,
            "sasl_password": SecretStr("pw") if sasl else None,
        }
    )


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_connects_as_the_other_clients_do(protocol: str) -> None:
    settings = _settings(protocol)
    aiokafka = client_options(settings)
    faust = broker_options(settings)
    assert faust["broker"] == "kafka://k1:9093;kafka://k2:9093"
    credentials = faust["broker_credentials"]
    if protocol == "PLAINTEXT":
        assert credentials is None
        assert "ssl_context" not in aiokafka
        return
    assert credentials.protocol.value == aiokafka["security_protocol"] == protocol
    context = getattr(credentials, "ssl_context", getattr(credentials, "context", None))
    assert isinstance(context, ssl.SSLContext) == ("SSL" in protocol)
    if protocol.startswith("SASL"):
        assert credentials.mechanism.value == aiokafka["sasl_mechanism"]
        assert (credentials.username, credentials.password) == ("svc", "pw")
