"""The OpenAPI documents clients generate code from tell the truth about
errors, authentication and bodies; the app factory's lifespan hooks run in
order. Nothing running is needed: a document is built without starting the app.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from jsonschema import Draft202012Validator

from datapolis_catalog.app import create_app as create_catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_consent.app import create_app as create_consent
from datapolis_consent.settings import ConsentSettings
from datapolis_ingest.app import create_app as create_ingest
from datapolis_ingest.settings import IngestSettings
from datapolis_notify.app import create_app as create_notify
from datapolis_notify.settings import NotifySettings
from datapolis_shared.http.app import Caller, build_app
from datapolis_shared.http.openapi import PROBLEM_SCHEMA, ProblemCode, problem_responses
from tests.infra import REPO

PUBLIC = {
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/datasets/{slug}/schemas/{version}", "get"),
    ("/catalog.jsonld", "get"),
    ("/catalog/datasets/{slug}", "get"),
    ("/asyncapi.json", "get"),
    ("/.well-known/jwks.json", "get"),
    ("/ledger/checkpoints/latest", "get"),
    ("/ledger/checkpoints", "get"),
}


def _documents() -> dict[str, dict[str, Any]]:
    apps = {
        "catalog": create_catalog(CatalogSettings(dev=True, log_json=False)),
        "ingest": create_ingest(IngestSettings(dev=True, log_json=False)),
        "consent": create_consent(ConsentSettings(dev=True, log_json=False)),
        "notify": create_notify(NotifySettings(dev=True, log_json=False)),
    }
    return {name: app.openapi() for name, app in apps.items()}


DOCUMENTS = _documents()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def _problem_validator(response_schema: dict[str, Any]) -> Draft202012Validator:
    assert response_schema["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
    return Draft202012Validator({"allOf": [PROBLEM_SCHEMA, *response_schema["allOf"][1:]]})


@pytest.mark.parametrize("service", list(DOCUMENTS))
def test_every_error_is_a_documented_problem_with_its_codes_and_examples(service: str) -> None:
    document = DOCUMENTS[service]
    assert "HTTPValidationError" not in str(document)
    assert document["components"]["schemas"]["Problem"] == PROBLEM_SCHEMA
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], (path, method, status)
            media = content["application/problem+json"]
            codes = media["schema"]["allOf"][1]["properties"]["code"]["enum"]
            assert codes, (path, method, status)
            assert sorted(media["examples"]) == sorted(codes)
            validator = _problem_validator(media["schema"])
            for code in codes:
                assert f"`{code}`" in response["description"]
                example = media["examples"][code]["value"]
                validator.validate(example)
                assert example["status"] == int(status)
            # A code another status carries is not accepted under this one.
            assert not validator.is_valid({**example, "code": "not-a-code-here"})


@pytest.mark.parametrize("service", list(DOCUMENTS))
def test_authenticated_operations_declare_the_schemes_and_their_401_and_429(service: str) -> None:
    document = DOCUMENTS[service]
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header"}
    assert schemes["apiKey"]["name"] == "X-API-Key"
    for path, method, operation in _operations(document):
        if (path, method) in PUBLIC:
            assert operation["security"] == [], (path, method)
            assert "401" not in operation["responses"], (path, method)
            continue
        if path.startswith("/subjects/"):
            # Data subjects authenticate with a subject token (a JWT), not a key.
            assert operation["security"] == [{"subjectToken": []}], (path, method)
            assert schemes["subjectToken"]["bearerFormat"] == "JWT"
            refused = operation["responses"]["401"]["content"]["application/problem+json"]
            assert {"invalid-subject-token", "expired-subject-token", "unknown-token-issuer"} == (
                set(refused["schema"]["allOf"][1]["properties"]["code"]["enum"])
            )
            continue
        assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (path, method)
        unauthenticated = operation["responses"]["401"]["content"]["application/problem+json"]
        assert {"missing-api-key", "invalid-api-key", "revoked-api-key"} <= set(
            unauthenticated["schema"]["allOf"][1]["properties"]["code"]["enum"]
        )
        assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_each_operation_lists_the_statuses_it_really_answers() -> None:
    catalog = {(p, m): o["responses"] for p, m, o in _operations(DOCUMENTS["catalog"])}
    ingest = {(p, m): o["responses"] for p, m, o in _operations(DOCUMENTS["ingest"])}
    assert set(catalog[("/datasets/{slug}/schemas", "post")]) >= {
        "200", "201", "400", "401", "403", "404", "409", "413", "422", "429", "503"
    }  # fmt: skip
    assert set(ingest[("/datasets/{slug}/records", "post")]) >= {
        "200", "401", "403", "404", "409", "413", "415", "422", "429", "503"
    }  # fmt: skip
    # The server answers an oversized or malformed request head before any route.
    assert set(catalog[("/readyz", "get")]) == {"200", "400", "431", "503"}
    assert set(catalog[("/healthz", "get")]) == {"200", "400", "431"}
    assert all(
        {"400", "431"} <= set(responses) for responses in [*catalog.values(), *ingest.values()]
    )
    conflict = catalog[("/datasets/{slug}/schemas", "post")]["409"]
    media = conflict["content"]["application/problem+json"]
    assert media["schema"]["allOf"][1]["properties"]["code"]["enum"] == [
        "dataset-retired",
        "incompatible-schema",
    ]
    assert "changes" in media["examples"]["incompatible-schema"]["value"]


def test_ingest_documents_that_non_object_records_are_taken_and_rejected_one_by_one() -> None:
    operation = DOCUMENTS["ingest"]["paths"]["/datasets/{slug}/records"]["post"]
    body = Draft202012Validator(operation["requestBody"]["content"]["application/json"]["schema"])
    assert body.is_valid([{"meter_id": "m-1", "kwh": 1.5}, 5, "text", None, [1]])
    assert body.is_valid({"meter_id": "m-1"})  # a single record
    assert not body.is_valid([])  # empty-batch
    assert not body.is_valid("text")  # not-a-batch
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/IngestAnswer"}
    rejection = DOCUMENTS["ingest"]["components"]["schemas"]["Rejection"]
    assert {"index", "errors"} <= set(rejection["required"])


# Codes of consumer loops (a bad event on a topic), never of an HTTP answer.
EVENT_CODES = {"invalid-event", "unknown-event-type"}


def test_every_code_the_services_raise_is_in_their_documents() -> None:
    sources = [*(REPO / "services").glob("*/src/**/*.py"), *(REPO / "shared/src").rglob("*.py")]
    raised = {
        code
        for source in sources
        for code in re.findall(r'code="([a-z0-9-]+)"', source.read_text())
    }
    documented = {
        code
        for document in DOCUMENTS.values()
        for _, _, operation in _operations(document)
        for status, response in operation["responses"].items()
        if int(status) >= 400
        for code in response["content"]["application/problem+json"]["schema"]["allOf"][1][
            "properties"
        ]["code"]["enum"]
    }
    assert raised - EVENT_CODES <= documented, sorted(raised - EVENT_CODES - documented)


ITEM_GONE = ProblemCode("item-gone", 410, "the item was deleted")


def _small_app(events: list[str]) -> FastAPI:
    def hook(name: str) -> Any:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            events.append(f"enter {name}")
            try:
                yield
            finally:
                events.append(f"exit {name}")

        return lifespan

    router = APIRouter()

    @router.get("/items", responses=problem_responses(ITEM_GONE))
    async def list_items(caller: Caller) -> list[str]:
        return []

    @router.post("/items")
    async def add_item() -> str:
        return "added"

    app = build_app(title="small", lifespans=[hook("first"), hook("second")])
    app.include_router(router)
    return app


def test_a_route_adds_a_problem_code_with_one_line() -> None:
    document = _small_app([]).openapi()
    operation = document["paths"]["/items"]["get"]
    gone = operation["responses"]["410"]["content"]["application/problem+json"]
    assert gone["schema"]["allOf"][1]["properties"]["code"]["enum"] == ["item-gone"]
    assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
    assert document["paths"]["/items"]["post"]["security"] == []


async def test_lifespan_hooks_enter_in_order_and_leave_in_reverse() -> None:
    events: list[str] = []
    app = _small_app(events)
    async with LifespanManager(app):
        assert events == ["enter first", "enter second"]
    assert events == ["enter first", "enter second", "exit second", "exit first"]


async def test_a_405_allows_every_method_of_the_path() -> None:
    app = _small_app([])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.put("/items")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
