"""The consent document tells the truth about /.well-known/jwks.json: public,
answered from memory (no 503 when Kafka or PostgreSQL is down), public keys
only."""

from __future__ import annotations

from datapolis_consent.app import create_app
from datapolis_consent.settings import ConsentSettings


def test_the_jwks_operation_is_public_needs_no_dependency_and_serves_public_keys() -> None:
    document = create_app(ConsentSettings(dev=True, log_json=False)).openapi()
    operation = document["paths"]["/.well-known/jwks.json"]["get"]
    assert operation["security"] == []
    assert set(operation["responses"]) == {"200", "400", "431"}
    answer = operation["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JsonWebKeySet"
    }
    assert "Cache-Control" in answer["headers"]
    jwk = document["components"]["schemas"]["PublicJwk"]
    assert set(jwk["properties"]) == {"kty", "crv", "x", "kid", "use", "alg"}
