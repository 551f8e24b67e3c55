"""Settings: default secrets are refused outside development."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from datapolis_catalog.settings import CatalogSettings
from datapolis_ingest.settings import IngestSettings
from datapolis_shared.settings import KafkaSettings, PostgresSettings

STRONG_KEY = "dpk_operator_" + "x" * 40


def test_default_secrets_are_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATALOG_DEV", raising=False)
    with pytest.raises(ValidationError, match="operator_key"):
        CatalogSettings()


def test_development_flag_accepts_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_DEV", "true")
    settings = CatalogSettings()
    assert settings.postgres.db_schema == "catalog"
    assert settings.http.port == 8001
    # The worker's probes: the port the Kubernetes manifests probe and scrape.
    assert settings.worker_http.port == 8000


def test_default_database_password_is_refused_even_with_a_real_key() -> None:
    with pytest.raises(ValidationError, match=r"postgres\.dsn"):
        CatalogSettings(operator_key=SecretStr(STRONG_KEY))


def test_env_prefix_and_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_OPERATOR_KEY", STRONG_KEY)
    monkeypatch.setenv("INGEST_POSTGRES__DSN", "postgresql://ingest:s3cret@db:5432/datapolis")
    monkeypatch.setenv("INGEST_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("CATALOG_KAFKA__BOOTSTRAP_SERVERS", "not-for-ingest:1")
    settings = IngestSettings()
    assert settings.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert settings.postgres.db_schema == "ingest"
    assert "s3cret" not in repr(settings)  # secrets never print


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="SASL"):
        KafkaSettings(security_protocol="SASL_SSL")


def test_schema_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValidationError):
        PostgresSettings(db_schema='x"; DROP TABLE api_keys; --')
