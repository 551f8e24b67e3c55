"""A dataset's public page answers HTML to a browser and JSON-LD to a
harvester, from the Accept header alone."""

from __future__ import annotations

import pytest

from datapolis_catalog.api.exports import wants_html


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),  # curl, most harvesters
        ("*/*", False),
        ("application/ld+json", False),
        ("application/json", False),
        ("text/turtle, application/ld+json;q=0.9, */*;q=0.1", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
        ("text/*", True),
        ("text/html;q=0.5, application/ld+json", False),
        ("text/html, application/ld+json;q=0.5", True),
        ("text/html;q=oops", False),
    ],
)
def test_the_accept_header_chooses_html_or_json_ld(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html
