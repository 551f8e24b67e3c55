"""A dataset's public page: the landing page and access URL of the DCAT-AP
export, for a person with a browser or a harvester without an API key.

It says what the export says of the dataset, and how to reach its records,
with addresses already public (the AsyncAPI document, the JSON Schema, the
agreements API); the records of shared and personal datasets stay behind
agreements and consents. The page embeds the dataset's DCAT-AP node as JSON-LD
so a machine reading the HTML finds the same metadata.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from datapolis_catalog.datasets import Dataset, Links
from datapolis_catalog.exports.dcat import build_dataset_document
from datapolis_catalog.organisations import PublisherProfile
from datapolis_catalog.vocabulary import (
    ACCESS_RIGHT_CODES,
    EU_ACCESS_RIGHT_LABELS,
    EU_DATA_THEME_LABELS,
    EU_FREQUENCY_LABELS,
    FREQUENCY_CODES,
    LICENCE_URIS,
    THEME_CODES,
)


def _row(name: str, value_html: str) -> str:
    return f"<tr><th>{escape(name)}</th><td>{value_html}</td></tr>"


def _link(href: str, text: str | None = None) -> str:
    return f'<a href="{escape(href)}">{escape(text or href)}</a>'


def _licence_html(licence: str) -> str:
    if licence in LICENCE_URIS:
        return _link(LICENCE_URIS[licence], licence)
    return escape("conditions set in a sharing agreement with the publisher")


def _how_to_get_records(dataset: Dataset, links: Links, base: str) -> str:
    if dataset.access_level == "open":
        access = (
            "Open data: read the topic with a Kafka client, or subscribe through "
            f"{_link(links.notify_url.rstrip('/') + '/subscriptions')}."
        )
    else:
        access = (
            f"{escape(dataset.access_level.capitalize())} data: ask the publisher for an "
            f"agreement at {_link(links.consent_url.rstrip('/') + '/agreements')}"
            + (
                " and, for each data subject, their consent"
                if dataset.access_level == "personal"
                else ""
            )
            + "; records are then delivered through "
            f"{_link(links.notify_url.rstrip('/') + '/subscriptions')}."
        )
    schema = f"{base}/datasets/{dataset.slug}/schemas/{dataset.schema_version}"
    rows = [
        _row("Kafka topic", f"<code>{escape(dataset.topic)}</code>"),
        _row("Bootstrap servers", f"<code>{escape(links.kafka_bootstrap_servers)}</code>"),
        _row(
            "Record format",
            "CloudEvents 1.0, binary mode: the value is the record's JSON, "
            "its attributes are in <code>ce_*</code> headers",
        ),
        _row("JSON Schema", _link(schema, f"version {dataset.schema_version}")),
        _row("AsyncAPI document", _link(f"{base}/asyncapi.json")),
        _row("Retention", escape(f"{dataset.retention_days} days")),
    ]
    return f"<p>{access}</p><table>{''.join(rows)}</table>"


def render_landing_page(
    dataset: Dataset, publisher: PublisherProfile, *, base_url: str, links: Links
) -> str:
    base = base_url.rstrip("/")
    document: dict[str, Any] = build_dataset_document(dataset, publisher, base_url=base)
    # JSON escapes for <, > and &: nothing in the data can end the script
    # element or read as markup.
    embedded = (
        json.dumps(document, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    theme = EU_DATA_THEME_LABELS[THEME_CODES[dataset.theme]]
    access = EU_ACCESS_RIGHT_LABELS[ACCESS_RIGHT_CODES[dataset.access_level]]
    rows = [
        _row("Publisher", escape(publisher.name)),
        _row("Contact", _link(f"mailto:{publisher.contact_email}", publisher.contact_email)),
        _row("Theme", escape(theme)),
        _row("Access rights", escape(access)),
        _row("Licence", _licence_html(dataset.licence)),
    ]
    if dataset.keywords:
        rows.append(_row("Keywords", escape(", ".join(dataset.keywords))))
    if dataset.update_frequency:
        label = EU_FREQUENCY_LABELS[FREQUENCY_CODES[dataset.update_frequency]]
        rows.append(_row("Update frequency", escape(label)))
    if dataset.spatial_coverage:
        coverage = dataset.spatial_coverage
        is_uri = coverage.startswith(("http://", "https://"))
        rows.append(_row("Spatial coverage", _link(coverage) if is_uri else escape(coverage)))
    rows.append(_row("Registered", escape(dataset.created_at.isoformat())))
    rows.append(_row("Modified", escape(dataset.updated_at.isoformat())))
    page_url = f"{base}/catalog/datasets/{dataset.slug}"
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{escape(dataset.title)}</title>
<link rel="alternate" type="application/ld+json" href="{escape(page_url)}">
<script type="application/ld+json">{embedded}</script>
</head>
<body>
<main>
<h1>{escape(dataset.title)}</h1>
<p>{escape(dataset.description or dataset.title)}</p>
<table>{"".join(rows)}</table>
<h2>Getting the records</h2>
{_how_to_get_records(dataset, links, base)}
<p>{_link(f"{base}/catalog.jsonld", "The whole catalog as DCAT-AP (JSON-LD)")}</p>
</main>
</body>
</html>
"""
