"""The DCAT-AP export passes the official DCAT-AP 3.0.1 SHACL shapes (see
tests/dcat_shacl.py) with no violation and only the warnings its data cannot
avoid, and a harvester without an API key can follow its landing pages and
access URLs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF, SH

from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.settings import ServiceSettings
from tests.dcat_shacl import generated_shapes, release_shapes, shacl_results
from tests.integration.catalog.conftest import METER_SCHEMA, CatalogApp, problem, unique_slug

BASE = "http://test"  # the catalog app's base URL in these tests
DCATAP = "http://data.europa.eu/r5r/"

pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")


@pytest.fixture
def catalog_settings(service_settings: ServiceSettings) -> CatalogSettings:
    # A deployment states the operator's contact address.
    return CatalogSettings(
        **dict(service_settings), catalog_contact_email="opendata@metropole.example"
    )


@pytest.fixture
async def landscape(catalog: CatalogApp) -> dict[str, dict[str, Any]]:
    """Organisations of every kind; open, shared and personal datasets, with
    every optional field and without any; one retired."""
    lyon = await catalog.organisation("Métropole de Lyon", kind="public-authority")
    tcl = await catalog.organisation("Transports en commun lyonnais", kind="company")
    atmo = await catalog.organisation("Atmo Auvergne-Rhône-Alpes", kind="association")
    univ = await catalog.organisation("Université Lyon 1", kind="research")
    coop = await catalog.organisation("Coopérative des riverains", kind="other")
    personal_schema = {**METER_SCHEMA, "required": [*METER_SCHEMA["required"], "household"]}
    made = {
        "open-full": await catalog.dataset(lyon, slug=unique_slug("elec")),
        "open-minimal": await catalog.dataset(
            atmo,
            slug=unique_slug("air"),
            title="Qualité de l'air",
            description="",
            theme="environment",
            keywords=[],
            licence="etalab-2.0",
            update_frequency=None,
            spatial_coverage=None,
        ),
        "open-place-uri": await catalog.dataset(
            lyon,
            slug=unique_slug("eau"),
            title="Consommation d'eau",
            theme="water",
            licence="cc-by-4.0",
            update_frequency="daily",
            spatial_coverage="https://www.geonames.org/2996943",
        ),
        "open-research": await catalog.dataset(
            univ,
            slug=unique_slug("pop"),
            title="Population par quartier",
            theme="socio-demographic",
            licence="cc0-1.0",
            update_frequency="annual",
            keywords=["population", "quartiers"],
        ),
        "open-other": await catalog.dataset(
            coop,
            slug=unique_slug("bruit"),
            title="Bruit mesuré par les riverains",
            theme="other",
            licence="cc-by-sa-4.0",
            update_frequency="irregular",
        ),
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
        "shared-open-licence": await catalog.dataset(
            lyon,
            slug=unique_slug("svc"),
            title="Demandes aux services publics",
            theme="public-services",
            licence="etalab-2.0",
            access_level="shared",
            update_frequency="weekly",
        ),
        "personal": await catalog.dataset(
            lyon,
            slug=unique_slug("linky"),
            title="Courbes de charge des foyers",
            licence="proprietary",
            access_level="personal",
            subject_field="household",
            update_frequency="monthly",
            json_schema=personal_schema,
        ),
        "personal-minimal": await catalog.dataset(
            tcl,
            slug=unique_slug("trips"),
            title="Trajets des abonnés",
            description="",
            theme="mobility",
            keywords=[],
            licence="proprietary",
            access_level="personal",
            subject_field="household",
            update_frequency=None,
            spatial_coverage=None,
            json_schema=personal_schema,
        ),
    }
    retired = await catalog.dataset(lyon, slug=unique_slug("old"), title="Ancien jeu")
    gone = await catalog.client.delete(f"/datasets/{retired['slug']}", headers=lyon.publisher)
    assert gone.status_code == 200, gone.text
    made["retired"] = retired
    return made


def _node(dataset: dict[str, Any]) -> URIRef:
    return URIRef(f"{BASE}/datasets/{dataset['slug']}")


def _expected_warnings(landscape: dict[str, dict[str, Any]]) -> Counter[Any]:
    """The recommended properties the catalog's data cannot provide."""
    min_count = SH.MinCountConstraintComponent
    catalog = URIRef(f"{BASE}/catalog.jsonld")
    active = {k: d for k, d in landscape.items() if k != "retired"}
    expected: Counter[Any] = Counter()
    # Facts about the catalog itself that the platform does not hold: when it
    # was first issued, its languages (titles are French or English), a
    # licence of the metadata, its spatial and temporal coverage. DCAT 3 makes
    # dcat:Catalog a dcat:Dataset, so the dataset recommendations apply to it
    # too (spatial twice); a distribution, keywords and themes of the catalog
    # as a whole would repeat those of its datasets.
    for path in (DCTERMS.issued, DCTERMS.language, DCTERMS.license, DCTERMS.temporal):
        expected[(catalog, path, min_count)] += 1
    expected[(catalog, DCTERMS.spatial, min_count)] += 2
    for path in (DCAT.distribution, DCAT.keyword, DCAT.theme):
        expected[(catalog, path, min_count)] += 1
    places: set[URIRef] = set()
    for dataset in active.values():
        # A stream's temporal coverage has no end, and the catalog knows no
        # period for it: a start date alone would trade this warning for one
        # about the missing end date.
        expected[(_node(dataset), DCTERMS.temporal, min_count)] += 1
        if not dataset["keywords"]:
            expected[(_node(dataset), DCAT.keyword, min_count)] += 1
        coverage = dataset["spatial_coverage"]
        if coverage is None:
            expected[(_node(dataset), DCTERMS.spatial, min_count)] += 1
            continue
        # A place is a name or a URI: the catalog holds no geometry for it. A
        # URI is one node however many datasets name it; each name is a node.
        if coverage.startswith("https://"):
            places.add(URIRef(coverage))
            continue
        for path in (DCAT.bbox, DCAT.centroid):
            expected[((DCTERMS.Location, Literal(coverage)), path, min_count)] += 1
    for place in places:
        for path in (DCAT.bbox, DCAT.centroid):
            expected[(place, path, min_count)] += 1
    # An organisation of kind "other" has no ADMS publisher type.
    other = landscape["open-other"]["publisher"]["org_id"]
    expected[(URIRef(f"{BASE}/organisations/{other}"), DCTERMS.type, min_count)] += 1
    return expected


async def _export(catalog: CatalogApp) -> Graph:
    response = await catalog.client.get("/catalog.jsonld")  # harvesters carry no key
    assert response.status_code == 200, response.text
    return Graph().parse(data=response.text, format="json-ld")


async def test_export_passes_the_dcat_ap_shapes_with_only_the_warnings_data_cannot_avoid(
    catalog: CatalogApp, landscape: dict[str, dict[str, Any]]
) -> None:
    graph = await _export(catalog)
    listed = set(graph.subjects(RDF.type, DCAT.Dataset)) - set(
        graph.subjects(RDF.type, DCAT.Catalog)
    )
    assert listed == {_node(d) for k, d in landscape.items() if k != "retired"}

    violations, warnings = shacl_results(graph, release_shapes())
    assert violations == Counter(), violations
    assert warnings == _expected_warnings(landscape), (
        f"unexpected: {warnings - _expected_warnings(landscape)}, "
        f"missing: {_expected_warnings(landscape) - warnings}"
    )

    violations, warnings = shacl_results(graph, generated_shapes())
    assert violations == Counter(), violations
    assert warnings == Counter()


async def test_export_uses_the_eu_vocabularies(
    catalog: CatalogApp, landscape: dict[str, dict[str, Any]]
) -> None:
    graph = await _export(catalog)
    eu = "http://publications.europa.eu/resource/authority/"
    adms = "http://purl.org/adms/"
    bus = _node(landscape["shared"])
    assert graph.value(bus, DCAT.theme) == URIRef(f"{eu}data-theme/TRAN")
    assert graph.value(bus, DCTERMS.accessRights) == URIRef(f"{eu}access-right/RESTRICTED")
    assert graph.value(bus, DCTERMS.accrualPeriodicity) == URIRef(f"{eu}frequency/UPDATE_CONT")
    distribution = graph.value(bus, DCAT.distribution)
    assert graph.value(distribution, DCTERMS.format) == URIRef(f"{eu}file-type/JSON")
    assert graph.value(distribution, URIRef(f"{DCATAP}availability")) == URIRef(
        f"{eu}planned-availability/STABLE"
    )
    assert graph.value(distribution, DCAT.mediaType) == URIRef(
        "http://www.iana.org/assignments/media-types/application/json"
    )
    publisher = graph.value(bus, DCTERMS.publisher)
    assert graph.value(publisher, DCTERMS.type) == URIRef(f"{adms}publishertype/Company")
    contact = graph.value(bus, DCAT.contactPoint)
    vcard = "http://www.w3.org/2006/vcard/ns#"
    assert graph.value(contact, URIRef(f"{vcard}hasEmail")) == URIRef("mailto:data@example.org")
    assert graph.value(contact, URIRef(f"{vcard}fn")) == Literal(
        landscape["shared"]["publisher"]["name"]
    )
    odbl = graph.value(_node(landscape["open-full"]), DCTERMS.license)
    assert set(graph.objects(odbl, DCTERMS.type)) == {
        URIRef(f"{adms}licencetype/Attribution"),
        URIRef(f"{adms}licencetype/ViralEffect-ShareAlike"),
    }


def _path(url: Any) -> str:
    assert str(url).startswith(BASE), url
    return str(url).removeprefix(BASE)


async def test_a_harvester_without_a_key_follows_landing_page_and_access_url(
    catalog: CatalogApp, landscape: dict[str, dict[str, Any]]
) -> None:
    graph = await _export(catalog)
    opened = _node(landscape["open-full"])
    landing = graph.value(opened, DCAT.landingPage)
    access = graph.value(graph.value(opened, DCAT.distribution), DCAT.accessURL)
    assert landing is not None
    assert access is not None
    for url in {landing, access}:
        response = await catalog.client.get(_path(url))  # no API key
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/ld+json"
        page = Graph().parse(data=response.text, format="json-ld")
        assert page.value(opened, DCTERMS.title) == Literal(landscape["open-full"]["title"])
        # A person's browser gets the same page as HTML, with how to get the records.
        html = await catalog.client.get(
            _path(url), headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        )
        assert html.status_code == 200, html.text
        assert html.headers["content-type"].startswith("text/html")
        assert landscape["open-full"]["title"] in html.text
        assert landscape["open-full"]["topic"] in html.text
        assert "data@example.org" in html.text


async def test_public_pages_show_no_more_than_the_export(
    catalog: CatalogApp, landscape: dict[str, dict[str, Any]]
) -> None:
    graph = await _export(catalog)
    for key in ("personal-minimal", "shared", "open-minimal"):
        landing = graph.value(_node(landscape[key]), DCAT.landingPage)
        response = await catalog.client.get(_path(landing))
        assert response.status_code == 200, response.text
        page = Graph().parse(data=response.text, format="json-ld")
        extra = {t for t in page if not any(isinstance(n, BNode) for n in t) and t not in graph}
        assert extra == set(), extra
        assert (_node(landscape[key]), RDF.type, DCAT.Dataset) in page
    # A retired dataset left the export: its page is gone too.
    retired = await catalog.client.get(f"/catalog/datasets/{landscape['retired']['slug']}")
    problem(retired, 404, "dataset-not-found")
    unknown = await catalog.client.get("/catalog/datasets/no-such-dataset")
    problem(unknown, 404, "dataset-not-found")


async def test_the_html_page_escapes_what_publishers_wrote(catalog: CatalogApp) -> None:
    org = await catalog.organisation('Org <img src=x onerror="alert(1)">')
    hostile = "Bruit </script><script>alert(1)</script> & co"
    dataset = await catalog.dataset(
        org, slug=unique_slug("xss"), title=hostile, keywords=["<b>bold</b>"]
    )
    page = await catalog.client.get(
        f"/catalog/datasets/{dataset['slug']}", headers={"Accept": "text/html"}
    )
    assert page.status_code == 200, page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "<img" not in page.text
    assert "<b>bold</b>" not in page.text
    assert "Bruit &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page.text
    # The embedded JSON-LD cannot close its script element early, and still
    # says what the publisher wrote.
    assert page.text.count("</script>") == 1
    embedded = page.text.split('<script type="application/ld+json">')[1].split("</script>")[0]
    graph = Graph().parse(data=embedded, format="json-ld")
    assert graph.value(_node(dataset), DCTERMS.title) == Literal(hostile)
