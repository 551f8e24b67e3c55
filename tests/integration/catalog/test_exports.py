"""Exports: the DCAT-AP 3 catalog parses as RDF and carries every dataset; the
AsyncAPI document passes the official AsyncAPI parser (@asyncapi/parser)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF

from tests.infra import REPO
from tests.integration.catalog.conftest import METER_SCHEMA, CatalogApp, unique_slug

CHECKER = REPO / "services/catalog/asyncapi-check"
EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_ACCESS = Namespace("http://publications.europa.eu/resource/authority/access-right/")
EU_FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")


@pytest.fixture
async def published(catalog: CatalogApp) -> dict[str, dict[str, Any]]:
    """An open, a shared and a personal dataset; the open one on major version 2."""
    lyon = await catalog.organisation("Métropole de Lyon", kind="public-authority")
    tcl = await catalog.organisation("Transports en commun lyonnais", kind="company")
    made = {
        "open": await catalog.dataset(lyon, slug=unique_slug("elec")),
        "shared": await catalog.dataset(
            tcl,
            slug=unique_slug("bus"),
            title="Positions des bus",
            theme="mobility",
            licence="proprietary",
            access_level="shared",
            update_frequency="continuous",
            spatial_coverage="https://www.geonames.org/2996943",
        ),
        "personal": await catalog.dataset(
            lyon,
            slug=unique_slug("linky"),
            title="Courbes de charge des foyers",
            licence="proprietary",
            access_level="personal",
            subject_field="household",
            json_schema={**METER_SCHEMA, "required": [*METER_SCHEMA["required"], "household"]},
        ),
    }
    v2 = copy.deepcopy(METER_SCHEMA)
    v2["properties"]["kwh"] = {"type": "integer"}
    major = await catalog.client.post(
        f"/datasets/{made['open']['slug']}/schemas",
        json={"json_schema": v2, "major": True},
        headers=lyon.publisher,
    )
    assert major.status_code == 201, major.text
    retired = await catalog.dataset(lyon, slug=unique_slug("old"), title="Ancien jeu")
    await catalog.client.delete(f"/datasets/{retired['slug']}", headers=lyon.publisher)
    made["retired"] = retired
    return made


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
async def test_dcat_ap_catalog_parses_as_rdf_with_every_dataset(
    catalog: CatalogApp, published: dict[str, dict[str, Any]]
) -> None:
    response = await catalog.client.get("/catalog.jsonld")  # public: harvesters carry no key
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ld+json"

    graph = Graph().parse(data=response.text, format="json-ld")
    base = "http://test"
    [catalog_node] = list(graph.subjects(RDF.type, DCAT.Catalog))
    listed = set(graph.objects(catalog_node, DCAT.dataset))
    datasets = set(graph.subjects(RDF.type, DCAT.Dataset))
    assert listed == datasets

    expected_rights = {"open": "PUBLIC", "shared": "RESTRICTED", "personal": "NON_PUBLIC"}
    for level, dataset in published.items():
        node = URIRef(f"{base}/datasets/{dataset['slug']}")
        if level == "retired":
            assert node not in datasets
            continue
        assert node in datasets
        assert graph.value(node, DCTERMS.title) == Literal(dataset["title"])
        assert graph.value(node, DCTERMS.description) == Literal(dataset["description"])
        assert graph.value(node, DCTERMS.identifier) == Literal(dataset["dataset_id"])
        assert graph.value(node, DCTERMS.accessRights) == EU_ACCESS[expected_rights[level]]
        publisher = graph.value(node, DCTERMS.publisher)
        assert (publisher, RDF.type, FOAF.Agent) in graph
        assert graph.value(publisher, FOAF.name) == Literal(dataset["publisher"]["name"])
        assert graph.value(node, DCTERMS.license) is not None
        distribution = graph.value(node, DCAT.distribution)
        assert (distribution, RDF.type, DCAT.Distribution) in graph
        public_page = URIRef(f"{base}/catalog/datasets/{dataset['slug']}")
        assert graph.value(distribution, DCAT.accessURL) == public_page
        assert graph.value(node, DCAT.landingPage) == public_page
        service = graph.value(distribution, DCAT.accessService)
        assert (service, RDF.type, DCAT.DataService) in graph
        assert graph.value(service, DCAT.endpointURL) == URIRef(base)

    open_node = URIRef(f"{base}/datasets/{published['open']['slug']}")
    assert graph.value(open_node, DCAT.theme) == EU_THEME.ENER
    assert graph.value(open_node, DCTERMS.accrualPeriodicity) == EU_FREQUENCY.HOURLY
    assert set(graph.objects(open_node, DCAT.keyword)) == {Literal("compteurs")}
    assert graph.value(open_node, DCTERMS.license) == URIRef(
        "https://opendatacommons.org/licenses/odbl/1-0/"
    )
    bus = URIRef(f"{base}/datasets/{published['shared']['slug']}")
    assert graph.value(bus, DCAT.theme) == EU_THEME.TRAN
    assert graph.value(bus, DCTERMS.spatial) == URIRef("https://www.geonames.org/2996943")
    assert graph.value(bus, DCTERMS.accrualPeriodicity) == EU_FREQUENCY.UPDATE_CONT


async def _node_validate(path: Path) -> tuple[int, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are needed to validate the AsyncAPI document with the official "
            "parser (@asyncapi/parser): install Node.js 20 (apt-get install nodejs npm)",
            pytrace=False,
        )
    if not (CHECKER / "node_modules/@asyncapi/parser").is_dir():
        install = await asyncio.create_subprocess_exec(
            npm,
            "ci",
            "--no-audit",
            "--no-fund",
            cwd=CHECKER,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await install.communicate()
        if install.returncode != 0:
            pytest.fail(f"npm ci in {CHECKER} failed:\n{output.decode()[-2000:]}", pytrace=False)
    check = await asyncio.create_subprocess_exec(
        node,
        "validate.mjs",
        str(path),
        cwd=CHECKER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await check.communicate()
    return check.returncode or 0, output.decode()


async def test_asyncapi_document_passes_the_official_parser(
    catalog: CatalogApp, published: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    response = await catalog.client.get("/asyncapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))

    returncode, output = await _node_validate(path)
    assert returncode == 0, output
    assert '"severity":"error"' not in output

    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    open_slug = published["open"]["slug"]
    expected = {
        f"data.{open_slug}",
        f"data.{open_slug}.v2",
        f"raw.{open_slug}",
        *(f"data.{published[k]['slug']}" for k in ("shared", "personal")),
        *(f"raw.{published[k]['slug']}" for k in ("shared", "personal")),
    }
    assert addresses == expected
    assert document["servers"]["kafka"]["host"] == catalog.settings.kafka.bootstrap_servers

    channel = document["channels"][f"data-{open_slug}-v2"]
    assert channel["bindings"]["kafka"]["topic"] == f"data.{open_slug}.v2"
    assert channel["bindings"]["kafka"]["partitions"] == published["open"]["partitions"]
    message_ref = channel["messages"]["record"]["$ref"].split("/")[-1]
    message = document["components"]["messages"][message_ref]
    assert message["payload"]["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    assert message["payload"]["schema"]["properties"]["kwh"] == {"type": "integer"}
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    headers = document["components"]["schemas"]["CloudEventsHeaders"]["properties"]
    assert {"ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "content-type"} <= set(
        headers
    )
    for operation in document["operations"].values():
        assert operation["action"] in ("receive", "send")
    receives = [o for o in document["operations"].values() if o["action"] == "receive"]
    assert len(receives) == 4  # one per data topic
    # The parser does not check 2020-12 payloads itself: every one is a valid schema.
    for message in document["components"]["messages"].values():
        Draft202012Validator.check_schema(message["payload"]["schema"])


async def test_openapi_describes_the_api_and_readiness_checks_topics(catalog: CatalogApp) -> None:
    spec = (await catalog.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    operations = {
        (path, method): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    for route in [
        ("/organisations", "post"),
        ("/organisations/{org_id}/keys", "post"),
        ("/organisations/{org_id}/keys/{key_id}", "delete"),
        ("/datasets", "post"),
        ("/datasets", "get"),
        ("/datasets/{slug}", "get"),
        ("/datasets/{slug}", "patch"),
        ("/datasets/{slug}/schemas", "post"),
        ("/catalog.jsonld", "get"),
        ("/asyncapi.json", "get"),
    ]:
        operation = operations[route]
        assert operation["tags"], route
        assert operation["summary"], route
    assert "IssuedApiKey" in spec["components"]["schemas"]
    assert "DatasetDetail" in spec["components"]["schemas"]
    assert (await catalog.client.get("/docs")).status_code == 200

    ready = await catalog.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["topics"] == "ok"
