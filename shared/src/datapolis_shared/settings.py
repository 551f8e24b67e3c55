"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix
(``CATALOG_``, ``INGEST_``...). Nested models use ``__`` as the delimiter, so
``CATALOG_KAFKA__BOOTSTRAP_SERVERS`` sets ``settings.kafka.bootstrap_servers``.
Settings are built in the app factory and passed down, never read at import.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Well-known development values. They make `make up` work with no setup and are
# refused outside development, so a forgotten secret fails loudly at start.
DEV_OPERATOR_KEY = "dpk_operator_dev-only-operator-key-change-me"
DEV_POSTGRES_PASSWORD = "datapolis"  # noqa: S105 - the local stack's password, refused in prod
DEV_WEBHOOK_SECRET = "dev-only-webhook-secret-change-me"  # noqa: S105


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL).
    ssl_cafile: str | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    request_timeout_ms: int = Field(default=10_000, ge=1_000)
    # How long a produce may wait for acks=all before the caller gets a 503.
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    # Replication factor of topics the service creates (1 locally, 3 in prod).
    replication_factor: int = Field(default=1, ge=1)
    readiness_timeout_s: float = Field(default=3.0, gt=0)
    # How long a consumer loop retries one record whose handler fails
    # transiently (attempts, seconds: the first reached) before parking it on
    # the dead letters so its partition moves on. Longer waits (an endpoint
    # down for hours) belong in the handler's own retry schedule.
    consumer_retry_attempts: int = Field(default=10, ge=1)
    consumer_retry_max_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "SASL security_protocol needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self


class PostgresSettings(BaseModel):
    dsn: SecretStr = SecretStr(
        f"postgresql://datapolis:{DEV_POSTGRES_PASSWORD}@127.0.0.1:55432/datapolis"
    )
    # One schema per service in one database; tests use a schema of their own.
    db_schema: str = Field(default="", pattern=r"^[a-z_][a-z0-9_]{0,62}$|^$")
    min_size: int = Field(default=1, ge=0)
    max_size: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=10.0, gt=0)


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The request line and headers together; beyond, 431 problem+json.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # Public base URL, used in links (DCAT, AsyncAPI, Location headers).
    public_url: str | None = None


class AuthSettings(BaseModel):
    """Throttling of failed authentication, per client address (an IPv6
    client counts per /64). A client may present ``max_failures`` bad keys at
    once, then one more per ``failure_interval_s``; beyond that it gets 429
    ``too-many-failed-authentications`` with Retry-After, without a database
    lookup. Other clients are not affected. At most ``tracked_clients`` are
    remembered (the one that failed least recently is forgotten first)."""

    max_failures: int = Field(default=20, ge=1)
    failure_interval_s: float = Field(default=1.0, gt=0)
    tracked_clients: int = Field(default=100_000, ge=100)


class WorkerHttpSettings(BaseModel):
    """Where a stream worker serves /healthz, /readyz and /metrics (and nothing
    else). Its own port, so an API and a worker of one service can run side by
    side; 8000 is the port the Kubernetes manifests probe and scrape."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    service_name: str = "datapolis"
    # Development mode accepts the well-known default secrets above.
    dev: bool = False
    operator_key: SecretStr = SecretStr(DEV_OPERATOR_KEY)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    worker_http: WorkerHttpSettings = WorkerHttpSettings()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Self:
        if not self.postgres.db_schema:
            self.postgres.db_schema = self.service_name
        if self.dev:
            return self
        offending = []
        if self.operator_key.get_secret_value() == DEV_OPERATOR_KEY:
            offending.append("operator_key")
        if f":{DEV_POSTGRES_PASSWORD}@" in self.postgres.dsn.get_secret_value():
            offending.append("postgres.dsn (default password)")
        if offending:
            raise ValueError(
                "default development secrets refused outside development: "
                + ", ".join(offending)
                + " (set them, or set DEV=true with the service's prefix for local work)"
            )
        if len(self.operator_key.get_secret_value()) < 32:
            raise ValueError("operator_key must be at least 32 characters")
        return self
