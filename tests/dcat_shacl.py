"""Validating a DCAT-AP export against the official DCAT-AP 3.0.1 SHACL shapes
vendored in tests/data/dcat-ap (its README names their sources).

pyshacl runs with the W3C DCAT 3 vocabulary as the ontology graph (for the
class hierarchy) and no inference: every class must be stated, as a harvester
that infers nothing needs it. Two sets of shapes of the release are used:

- ``release``: the core, range and recommended shapes of the specification
  (``html/shacl/shapes.ttl``, ``range.ttl``, ``shapes_recommended.ttl``);
- ``generated``: the generated core and range shapes
  (``shacl/dcat-ap-SHACL.ttl``, ``ranges.ttl``).

Usage, for a figure: ``.venv/bin/python -m tests.dcat_shacl catalog.jsonld``
prints the violations and warnings of each set.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pyshacl import validate
from rdflib import BNode, Graph, URIRef
from rdflib.namespace import RDF, SH, SKOS

SHAPES = Path(__file__).resolve().parent / "data/dcat-ap"
# sh:property links of the generated shapes to shapes neither file defines.
GENERATED_DANGLING_LINKS = 5


@functools.cache
def _graph(*names: str) -> Graph:
    graph = Graph()
    for name in names:
        graph.parse(SHAPES / name, format="turtle")
    return graph


def release_shapes() -> Graph:
    """The core, range and recommended shapes of the release's specification."""
    return _graph("shapes.ttl", "range.ttl", "shapes_recommended.ttl")


@functools.cache
def generated_shapes() -> Graph:
    """The release's generated core and range shapes. Five of their sh:property
    links point to shapes neither file defines, which pyshacl refuses to load;
    they are dropped (they constrain nothing), and only they."""
    graph = Graph()
    graph += _graph("dcat-ap-SHACL.ttl", "ranges.ttl")
    dangling = [
        (shape, prop)
        for shape, prop in graph.subject_objects(SH.property)
        if (prop, SH.path, None) not in graph
    ]
    if len(dangling) != GENERATED_DANGLING_LINKS:
        raise AssertionError("the vendored generated shapes changed: review this workaround")
    for shape, prop in dangling:
        graph.remove((shape, SH.property, prop))
    return graph


def _key(graph: Graph, node: Any) -> Any:
    """A stable name for a focus node: a blank node (a place given by name) by
    its class and label."""
    if isinstance(node, BNode):
        return (graph.value(node, RDF.type), graph.value(node, SKOS.prefLabel))
    return node


def shacl_results(data: Graph, shapes: Graph) -> tuple[Counter[Any], Counter[Any]]:
    """Violations and warnings, each as a count of (focus, path, constraint)."""
    _, report, _ = validate(
        data,
        shacl_graph=shapes,
        ont_graph=_graph("dcat3.ttl"),
        inference="none",
        allow_warnings=True,
    )
    assert isinstance(report, Graph)
    found: dict[Any, Counter[Any]] = {SH.Violation: Counter(), SH.Warning: Counter()}
    for result in report.subjects(RDF.type, SH.ValidationResult):
        severity = report.value(result, SH.resultSeverity)
        focus = _key(data, report.value(result, SH.focusNode))
        path = report.value(result, SH.resultPath)
        component = report.value(result, SH.sourceConstraintComponent)
        found.setdefault(severity, Counter())[(focus, path, component)] += 1
    return found[SH.Violation], found[SH.Warning]


PREFIXES = {
    "http://www.w3.org/ns/dcat#": "dcat:",
    "http://purl.org/dc/terms/": "dct:",
    "http://data.europa.eu/r5r/": "dcatap:",
    "http://xmlns.com/foaf/0.1/": "foaf:",
    "http://www.w3.org/ns/shacl#": "sh:",
}


def _short(node: Any) -> str:
    text = str(node)
    for namespace, prefix in PREFIXES.items():
        if isinstance(node, URIRef) and text.startswith(namespace):
            return prefix + text.removeprefix(namespace)
    return text


def main(path: str) -> None:
    data = Graph().parse(path, format="json-ld")
    for name, shapes in (("release", release_shapes()), ("generated", generated_shapes())):
        violations, warnings = shacl_results(data, shapes)
        print(f"{name}: {sum(violations.values())} violations, {sum(warnings.values())} warnings")
        for severity, found in (("violation", violations), ("warning", warnings)):
            totals: Counter[tuple[str, str]] = Counter()
            for (_, p, c), n in found.items():
                totals[(_short(p), _short(c))] += n
            for (p, c), n in sorted(totals.items()):
                print(f"  {severity:9} {n:4}  {p}  ({c})")


if __name__ == "__main__":
    main(sys.argv[1])
