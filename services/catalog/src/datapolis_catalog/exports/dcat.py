"""The catalog as DCAT-AP 3 in JSON-LD, for open-data harvesters (data.gouv.fr,
CKAN, the European data portal).

Each active dataset is a ``dcat:Dataset`` with its publisher (``foaf:Agent``),
EU data theme, access rights (PUBLIC for open, RESTRICTED for shared,
NON_PUBLIC for personal), frequency and spatial coverage, and one
``dcat:Distribution``: its Kafka topic, reached through the catalog's
``dcat:DataService`` and conforming to the dataset's current JSON Schema.
Shared and personal datasets are listed too: harvesters show them as
restricted, which is how a consumer learns it can ask for access.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from datapolis_catalog.datasets import Dataset
from datapolis_catalog.vocabulary import (
    ACCESS_RIGHT_CODES,
    EU_ACCESS_RIGHT,
    EU_DATA_THEME,
    EU_FREQUENCY,
    FREQUENCY_CODES,
    LICENCE_URIS,
    THEME_CODES,
)

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
JSON_MEDIA_TYPE = "https://www.iana.org/assignments/media-types/application/json"


def _iri(value: str) -> dict[str, str]:
    return {"@id": value}


def _datetime(value: datetime) -> dict[str, str]:
    return {"@value": value.isoformat(), "@type": "xsd:dateTime"}


def _licence(licence: str, base: str) -> dict[str, Any]:
    if licence in LICENCE_URIS:
        return {"@id": LICENCE_URIS[licence], "@type": "dct:LicenseDocument"}
    return {
        "@id": f"{base}/licences/{licence}",
        "@type": "dct:LicenseDocument",
        "rdfs:label": "Conditions set in a datapolis sharing agreement with the publisher",
    }


def _spatial(coverage: str) -> dict[str, Any]:
    if coverage.startswith(("http://", "https://")):
        return {"@id": coverage, "@type": "dct:Location"}
    return {"@type": "dct:Location", "skos:prefLabel": coverage}


def dataset_node(dataset: Dataset, base: str, service_id: str) -> dict[str, Any]:
    page = f"{base}/datasets/{dataset.slug}"
    node: dict[str, Any] = {
        "@id": page,
        "@type": "dcat:Dataset",
        "dct:identifier": dataset.dataset_id,
        "dct:title": dataset.title,
        "dct:description": dataset.description or dataset.title,
        "dct:publisher": {
            "@id": f"{base}/organisations/{dataset.publisher.org_id}",
            "@type": "foaf:Agent",
            "foaf:name": dataset.publisher.name,
        },
        "dcat:theme": _iri(EU_DATA_THEME + THEME_CODES[dataset.theme]),
        "dcat:keyword": dataset.keywords,
        "dct:accessRights": _iri(EU_ACCESS_RIGHT + ACCESS_RIGHT_CODES[dataset.access_level]),
        "dct:license": _licence(dataset.licence, base),
        "dcat:landingPage": _iri(page),
        "dct:issued": _datetime(dataset.created_at),
        "dct:modified": _datetime(dataset.updated_at),
        "dcat:distribution": [
            {
                "@id": f"{page}#topic",
                "@type": "dcat:Distribution",
                "dct:title": f"Kafka topic {dataset.topic} (CloudEvents 1.0, binary mode)",
                "dcat:accessURL": _iri(page),
                "dcat:accessService": _iri(service_id),
                "dcat:mediaType": _iri(JSON_MEDIA_TYPE),
                "dct:license": _licence(dataset.licence, base),
                "dct:conformsTo": _iri(f"{page}/schemas/{dataset.schema_version}"),
            }
        ],
    }
    if dataset.update_frequency:
        node["dct:accrualPeriodicity"] = _iri(
            EU_FREQUENCY + FREQUENCY_CODES[dataset.update_frequency]
        )
    if dataset.spatial_coverage:
        node["dct:spatial"] = _spatial(dataset.spatial_coverage)
    return node


def build_catalog(
    datasets: Sequence[Dataset], *, base_url: str, title: str, publisher_name: str
) -> dict[str, Any]:
    base = base_url.rstrip("/")
    service_id = f"{base}/#streams"
    nodes = [dataset_node(d, base, service_id) for d in datasets]
    catalog: dict[str, Any] = {
        "@id": f"{base}/catalog.jsonld",
        "@type": "dcat:Catalog",
        "dct:title": title,
        "dct:description": (
            "Datasets streamed on the metropolitan data bus: open data, and shared or "
            "personal data available under agreements and consents."
        ),
        "dct:publisher": {
            "@id": f"{base}/#operator",
            "@type": "foaf:Agent",
            "foaf:name": publisher_name,
        },
        "foaf:homepage": _iri(f"{base}/docs"),
        "dcat:dataset": nodes,
        "dcat:service": [
            {
                "@id": service_id,
                "@type": "dcat:DataService",
                "dct:title": f"{title}: catalog and stream API",
                "dcat:endpointURL": _iri(base),
                "dcat:endpointDescription": _iri(f"{base}/asyncapi.json"),
                "dcat:servesDataset": [_iri(n["@id"]) for n in nodes],
            }
        ],
    }
    if datasets:
        catalog["dct:modified"] = _datetime(max(d.updated_at for d in datasets))
    return {"@context": CONTEXT, **catalog}
