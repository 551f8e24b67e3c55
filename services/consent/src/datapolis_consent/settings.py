"""Settings of the consent service: environment variables prefixed `CONSENT_`."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from datapolis_shared.events.base import CATALOG_EVENTS
from datapolis_shared.settings import HttpSettings, ServiceSettings

# A well-known Ed25519 private key (a JWK) that signs receipts in development,
# so that `make up` needs no setup and receipts survive a restart. It is
# public, hence refused outside development like the other default secrets.
DEV_RECEIPT_SIGNING_KEY = (
    '{"kty":"OKP","crv":"Ed25519",'
    '"x":"jIyk8aZVkXBQfBTqyHhzLNnPWGkzJBV2d29dLE1bQxc",'
    '"d":"ahgVsorhNaI2GpHbJvZRwXcDv42UGttyWHjQ41eHH-I"}'
)

# Algorithms a subject token may be signed with: asymmetric only, since the
# platform holds issuers' public keys. `none` and HS* are never accepted (an
# HMAC "verified" with a public key is the classic algorithm confusion).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)


class ReceiptSettings(BaseModel):
    """Keys that sign receipts. ``signing_key`` is the current Ed25519
    private key, as a PEM (PKCS#8) or a JWK. ``retired_keys`` are the public
    JWKs of earlier signing keys: they stay in /.well-known/jwks.json so that
    receipts signed before a rotation still verify."""

    signing_key: SecretStr = SecretStr(DEV_RECEIPT_SIGNING_KEY)
    retired_keys: list[dict[str, Any]] = Field(default_factory=list)


class TokenIssuer(BaseModel):
    """One issuer of subject tokens (the publisher, the operator, an OpenID
    Connect provider): its ``iss``, the audience its tokens name for the
    platform, and its public keys, inline (``jwks``) or at ``jwks_url``."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks: dict[str, Any] | None = None
    jwks_url: HttpUrl | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["EdDSA", "ES256", "RS256"], min_length=1)
    # How long fetched keys are trusted before they are fetched again.
    jwks_cache_s: float = Field(default=300.0, gt=0)
    # Clock skew tolerated on exp, nbf and iat.
    leeway_s: int = Field(default=30, ge=0, le=300)

    @model_validator(mode="after")
    def _one_source_of_keys_and_asymmetric_algorithms(self) -> Self:
        if (self.jwks is None) == (self.jwks_url is None):
            raise ValueError(f"issuer {self.issuer!r}: give exactly one of jwks and jwks_url")
        refused = sorted(set(self.algorithms) - ASYMMETRIC_ALGORITHMS)
        if refused:
            raise ValueError(
                f"issuer {self.issuer!r}: algorithms {refused} refused "
                f"(only {sorted(ASYMMETRIC_ALGORITHMS)})"
            )
        return self


class ConsentSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSENT_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "consent"
    http: HttpSettings = HttpSettings(port=8003)
    receipts: ReceiptSettings = ReceiptSettings()
    subject_token_issuers: list[TokenIssuer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refuse_development_keys_and_untrusted_issuers(self) -> Self:
        if not self.dev and (
            self.receipts.signing_key.get_secret_value() == DEV_RECEIPT_SIGNING_KEY
        ):
            raise ValueError(
                "default development secrets refused outside development: "
                "receipts.signing_key (set CONSENT_RECEIPTS__SIGNING_KEY, or CONSENT_DEV=true)"
            )
        for issuer in self.subject_token_issuers:
            url = issuer.jwks_url
            if url is not None and url.scheme != "https" and not self.dev:
                # Whoever answers a plain-HTTP fetch could hand in keys of their
                # own and sign tokens for any data subject.
                raise ValueError(f"issuer {issuer.issuer!r}: jwks_url must be https")
        issuers = [issuer.issuer for issuer in self.subject_token_issuers]
        if len(issuers) != len(set(issuers)):
            raise ValueError("subject_token_issuers: each issuer may be listed once")
        return self

    # Where consent learns about datasets: catalog's events topic.
    catalog_events_topic: str = CATALOG_EVENTS
    # How often the worker signs a checkpoint of the ledger's head, when the
    # head moved since the last one: the longest a rewrite of fresh history
    # stays unpinned by a published checkpoint.
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # How long revoke and terminate wait for Kafka to acknowledge their event
    # before answering 503 (the change stays committed; the relay publishes it
    # once Kafka is back).
    publish_wait_s: float = Field(default=5.0, gt=0, le=60)
    # How often the expiry task looks for agreements whose period ended: an
    # expiry takes effect within this (plus one transaction) of its time.
    expiry_interval_s: float = Field(default=1.0, gt=0, le=5)
