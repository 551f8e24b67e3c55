"""The catalog as DCAT-AP 3 in JSON-LD, for open-data harvesters (data.gouv.fr,
CKAN, the European data portal).

Each active dataset is a ``dcat:Dataset`` with its publisher (``foaf:Agent``
typed with the ADMS publisher type), a contact point (``vcard:Organization``
from the publisher's contact email), EU data theme, access rights (PUBLIC for
open, RESTRICTED for shared, NON_PUBLIC for personal), frequency and spatial
coverage, and one ``dcat:Distribution``: its Kafka topic of JSON records,
reached through the catalog's ``dcat:DataService`` and conforming to the
dataset's current JSON Schema. Shared and personal datasets are listed too:
harvesters show them as restricted, which is how a consumer learns it can ask
for access.

Every object node carries its class and, for concepts of a controlled
vocabulary, its label and scheme: the DCAT-AP 3.0.1 range shapes check the
class of each value and harvesters do not infer it. The landing page and the
access URL of a dataset are its public page (``/catalog/datasets/<slug>``),
which answers without an API key with what this export says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from datapolis_catalog.datasets import Dataset
from datapolis_catalog.organisations import PublisherProfile
from datapolis_catalog.vocabulary import (
    ACCESS_RIGHT_CODES,
    ADMS_LICENCE_TYPE,
    ADMS_PUBLISHER_TYPE,
    EU_ACCESS_RIGHT,
    EU_ACCESS_RIGHT_LABELS,
    EU_DATA_THEME,
    EU_DATA_THEME_LABELS,
    EU_FILE_TYPE,
    EU_FREQUENCY,
    EU_FREQUENCY_LABELS,
    EU_PLANNED_AVAILABILITY,
    FREQUENCY_CODES,
    LICENCE_TYPES,
    LICENCE_URIS,
    PUBLISHER_TYPES,
    THEME_CODES,
    OrganisationKind,
)

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dcatap": "http://data.europa.eu/r5r/",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
JSON_MEDIA_TYPE = "http://www.iana.org/assignments/media-types/application/json"
KAFKA_PROTOCOL = "https://kafka.apache.org/protocol"

# Concept schemes of the values used, with the titles DCAT-AP asks of them.
SCHEMES = {
    "data-theme": (EU_DATA_THEME.rstrip("/"), "Data theme"),
    "access-right": (EU_ACCESS_RIGHT.rstrip("/"), "Access right"),
    "frequency": (EU_FREQUENCY.rstrip("/"), "Frequency"),
    "file-type": (EU_FILE_TYPE.rstrip("/"), "File type"),
    "planned-availability": (EU_PLANNED_AVAILABILITY.rstrip("/"), "Planned availability"),
    "publisher-type": (ADMS_PUBLISHER_TYPE + "1.0", "ADMS publisher type"),
    "licence-type": (ADMS_LICENCE_TYPE + "1.0", "ADMS licence type"),
}


def _iri(value: str) -> dict[str, str]:
    return {"@id": value}


def _typed(value: str, cls: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"@id": value, "@type": cls, **extra}


def _label(text: str) -> dict[str, str]:
    return {"@value": text, "@language": "en"}


def _datetime(value: datetime) -> dict[str, str]:
    return {"@value": value.isoformat(), "@type": "xsd:dateTime"}


def _scheme(name: str) -> dict[str, Any]:
    iri, title = SCHEMES[name]
    return _typed(iri, "skos:ConceptScheme", **{"dct:title": _label(title)})


def _concept(iri: str, label: str, scheme: str, *classes: str) -> dict[str, Any]:
    """A concept of a controlled vocabulary, with the class(es) its property
    expects (dct:Frequency, dct:RightsStatement...) besides skos:Concept."""
    return _typed(
        iri,
        [*classes, "skos:Concept"] if classes else "skos:Concept",
        **{"skos:prefLabel": _label(label), "skos:inScheme": _scheme(scheme)},
    )


def landing_page_url(base: str, slug: str) -> str:
    """The public page of a dataset: no API key needed to follow it."""
    return f"{base}/catalog/datasets/{slug}"


def theme_concept(theme: str) -> dict[str, Any]:
    code = THEME_CODES[theme]
    return _concept(EU_DATA_THEME + code, EU_DATA_THEME_LABELS[code], "data-theme")


def access_rights(access_level: str) -> dict[str, Any]:
    code = ACCESS_RIGHT_CODES[access_level]
    return _concept(
        EU_ACCESS_RIGHT + code, EU_ACCESS_RIGHT_LABELS[code], "access-right", "dct:RightsStatement"
    )


def frequency(update_frequency: str) -> dict[str, Any]:
    code = FREQUENCY_CODES[update_frequency]
    return _concept(EU_FREQUENCY + code, EU_FREQUENCY_LABELS[code], "frequency", "dct:Frequency")


def _licence(licence: str, base: str) -> dict[str, Any]:
    kinds = [
        _concept(ADMS_LICENCE_TYPE + code, label, "licence-type")
        for code, label in LICENCE_TYPES[licence]
    ]
    if licence in LICENCE_URIS:
        return _typed(LICENCE_URIS[licence], "dct:LicenseDocument", **{"dct:type": kinds})
    return _typed(
        f"{base}/licences/{licence}",
        "dct:LicenseDocument",
        **{
            "dct:type": kinds,
            "rdfs:label": "Conditions set in a datapolis sharing agreement with the publisher",
        },
    )


def _spatial(coverage: str) -> dict[str, Any]:
    if coverage.startswith(("http://", "https://")):
        return {"@id": coverage, "@type": "dct:Location"}
    return {"@type": "dct:Location", "skos:prefLabel": coverage}


def _agent(iri: str, name: str, kind: OrganisationKind | None) -> dict[str, Any]:
    agent: dict[str, Any] = {"@id": iri, "@type": "foaf:Agent", "foaf:name": name}
    if kind in PUBLISHER_TYPES:
        code, label = PUBLISHER_TYPES[kind]
        agent["dct:type"] = _concept(ADMS_PUBLISHER_TYPE + code, label, "publisher-type")
    return agent


def _contact_point(iri: str, name: str, email: str) -> dict[str, Any]:
    return {
        "@id": iri,
        # vcard:Kind spelled out: the shapes check it without the vCard ontology.
        "@type": ["vcard:Organization", "vcard:Kind"],
        "vcard:fn": name,
        # Percent-encoded: an address may hold characters an IRI may not.
        "vcard:hasEmail": _iri(f"mailto:{quote(email, safe='@')}"),
    }


def _distribution(dataset: Dataset, base: str, service_id: str) -> dict[str, Any]:
    node_id = f"{base}/datasets/{dataset.slug}"
    schema = f"{node_id}/schemas/{dataset.schema_version}"
    return {
        "@id": f"{node_id}#topic",
        "@type": "dcat:Distribution",
        "dct:title": f"Kafka topic {dataset.topic} (CloudEvents 1.0, binary mode)",
        "dct:description": (
            f"The records of the dataset as they are published, on the Kafka topic "
            f"{dataset.topic}: each record's value is its own JSON document, valid against "
            f"schema version {dataset.schema_version}, with its CloudEvents attributes in "
            f"ce_* headers. The topic keeps records {dataset.retention_days} days."
        ),
        "dcat:accessURL": _iri(landing_page_url(base, dataset.slug)),
        "dcat:accessService": _iri(service_id),
        "dcat:mediaType": _typed(JSON_MEDIA_TYPE, "dct:MediaType"),
        "dct:format": _concept(EU_FILE_TYPE + "JSON", "JSON", "file-type", "dct:MediaTypeOrExtent"),
        "dcatap:availability": _concept(
            EU_PLANNED_AVAILABILITY + "STABLE", "stable", "planned-availability"
        ),
        "dct:license": _licence(dataset.licence, base),
        "dct:conformsTo": _typed(
            schema,
            "dct:Standard",
            **{"dct:title": f"JSON Schema of {dataset.slug}, version {dataset.schema_version}"},
        ),
    }


def dataset_node(
    dataset: Dataset, publisher: PublisherProfile | None, base: str, service_id: str
) -> dict[str, Any]:
    node_id = f"{base}/datasets/{dataset.slug}"
    organisation = f"{base}/organisations/{dataset.publisher.org_id}"
    node: dict[str, Any] = {
        "@id": node_id,
        "@type": "dcat:Dataset",
        "dct:identifier": dataset.dataset_id,
        "dct:title": dataset.title,
        "dct:description": dataset.description or dataset.title,
        "dct:publisher": _agent(
            organisation, dataset.publisher.name, publisher.kind if publisher else None
        ),
        "dcat:theme": theme_concept(dataset.theme),
        "dcat:keyword": dataset.keywords,
        "dct:accessRights": access_rights(dataset.access_level),
        "dct:license": _licence(dataset.licence, base),
        "dcat:landingPage": _typed(
            landing_page_url(base, dataset.slug),
            "foaf:Document",
            **{"dct:title": f"{dataset.title}: public page"},
        ),
        "dct:issued": _datetime(dataset.created_at),
        "dct:modified": _datetime(dataset.updated_at),
        "dcat:distribution": [_distribution(dataset, base, service_id)],
    }
    if publisher is not None:
        node["dcat:contactPoint"] = _contact_point(
            f"{organisation}#contact", publisher.name, publisher.contact_email
        )
    if dataset.update_frequency:
        node["dct:accrualPeriodicity"] = frequency(dataset.update_frequency)
    if dataset.spatial_coverage:
        node["dct:spatial"] = _spatial(dataset.spatial_coverage)
    return node


def service_id_for(base: str) -> str:
    return f"{base}/#streams"


def build_dataset_document(
    dataset: Dataset, publisher: PublisherProfile | None, *, base_url: str
) -> dict[str, Any]:
    """One dataset's node of the export, on its own (its public page)."""
    base = base_url.rstrip("/")
    return {"@context": CONTEXT, **dataset_node(dataset, publisher, base, service_id_for(base))}


def build_catalog(
    datasets: Sequence[Dataset],
    publishers: Mapping[str, PublisherProfile],
    *,
    base_url: str,
    title: str,
    publisher_name: str,
    publisher_kind: OrganisationKind,
    contact_email: str | None = None,
) -> dict[str, Any]:
    base = base_url.rstrip("/")
    service_id = service_id_for(base)
    nodes = [
        dataset_node(d, publishers.get(d.publisher.org_id), base, service_id) for d in datasets
    ]
    operator = _agent(f"{base}/#operator", publisher_name, publisher_kind)
    service: dict[str, Any] = {
        "@id": service_id,
        "@type": "dcat:DataService",
        "dct:title": f"{title}: catalog and stream API",
        # The range shapes ask for an explicit rdfs:Resource here.
        "dcat:endpointURL": _typed(base, "rdfs:Resource"),
        "dcat:endpointDescription": _typed(f"{base}/asyncapi.json", "rdfs:Resource"),
        "dct:conformsTo": _typed(
            KAFKA_PROTOCOL, "dct:Standard", **{"dct:title": "Apache Kafka protocol"}
        ),
        "dct:publisher": _iri(operator["@id"]),
        "dcat:keyword": ["kafka", "streaming", "cloudevents"],
        "dcat:servesDataset": [_iri(n["@id"]) for n in nodes],
    }
    if contact_email:
        contact = _contact_point(f"{base}/#contact", publisher_name, contact_email)
        service["dcat:contactPoint"] = contact
        catalog_contact: dict[str, Any] | None = _iri(contact["@id"])
    else:
        catalog_contact = None
    themes = sorted({d.theme for d in datasets})
    if themes:
        service["dcat:theme"] = [theme_concept(t) for t in themes]
    catalog: dict[str, Any] = {
        "@id": f"{base}/catalog.jsonld",
        "@type": "dcat:Catalog",
        "dct:title": title,
        "dct:description": (
            "Datasets streamed on the metropolitan data bus: open data, and shared or "
            "personal data available under agreements and consents."
        ),
        "dct:publisher": operator,
        "foaf:homepage": _typed(f"{base}/docs", "foaf:Document"),
        "dcat:themeTaxonomy": _scheme("data-theme"),
        "dcat:dataset": nodes,
        "dcat:service": [service],
    }
    if catalog_contact:
        catalog["dcat:contactPoint"] = catalog_contact
    if datasets:
        catalog["dct:modified"] = _datetime(max(d.updated_at for d in datasets))
    return {"@context": CONTEXT, **catalog}
