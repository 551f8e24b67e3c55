"""Validate rendered Kubernetes manifests offline; run by validate.sh.

Three checks, all without a cluster:

1. Schema. Core kinds against the Kubernetes JSON schemas shipped by the
   kubernetes-validate package (strict variant: an unknown field is an error);
   custom resources against the openAPIV3Schema of their CRD, made strict the
   same way. The API server would silently prune an unknown field of a custom
   resource, so a typo there must fail here.
2. References the schemas cannot express: selectors that match pods, and
   Services, ports, ConfigMaps and Secrets (including those Strimzi and
   CloudNativePG create from the rendered resources) that exist.
3. PrometheusRule expressions parse as PromQL.

Usage: validate.py --crds DIR... --k8s-version 1.30 [--k8s-version 1.37] NAME=FILE...
Exits 1 when any resource is invalid.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml
from referencing import Registry, Resource

Doc = dict[str, Any]

# Kinds deployed here whose CRD is not among the validated ones, with why.
UNVALIDATED_KINDS = {
    ("barmancloud.cnpg.io", "ObjectStore"): (
        "CRD of the Barman Cloud plugin is not in the CRD folders; "
        "the ObjectStore is checked by the plugin's admission at apply time"
    ),
}

# Secrets created by hand before deploying (README, "Secrets"), with their keys.
MANUAL_SECRETS = {
    "datapolis-operator": {"operator-key"},
    "datapolis-consent-receipts": {"signing-key", "retired-keys"},
    "datapolis-pg-backup-s3": {"ACCESS_KEY_ID", "ACCESS_SECRET_KEY"},
    "datapolis-api-tls": {"tls.crt", "tls.key"},
}

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
OBJECT_META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# --- schemas -----------------------------------------------------------------


def k8s_schema_dir(version: str) -> Path:
    root = Path(str(importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"))
    folder = root / f"v{version}.0-local-strict"
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.name.endswith("-strict"))
        raise SystemExit(f"no Kubernetes {version} schemas; available: {', '.join(available)}")
    return folder


def core_schema_name(api_version: str, kind: str) -> str:
    # apps/v1 -> apps-v1, networking.k8s.io/v1 -> networking-v1, v1 -> v1
    group, _, version = api_version.rpartition("/")
    prefix = f"{group.split('.')[0]}-" if group else ""
    return f"{kind.lower()}-{prefix}{version}.json"


def crd_to_json_schema(node: Any) -> Any:
    """OpenAPI v3, as Kubernetes uses it, to a strict JSON Schema 2020-12."""
    if isinstance(node, list):
        return [crd_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: convert_keyword(key, value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:  # OpenAPI 3.0's boolean form
            out[bound] = out.pop(limit)
    if node.get("x-kubernetes-embedded-resource"):
        for implicit in ("apiVersion", "kind", "metadata"):
            out.setdefault("properties", {}).setdefault(implicit, {})
    strict = not node.get("x-kubernetes-preserve-unknown-fields")
    if strict and out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def convert_keyword(key: str, value: Any) -> Any:
    if key == "properties":
        return {name: crd_to_json_schema(sub) for name, sub in value.items()}
    if key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
        return crd_to_json_schema(value)
    return value


def check(doc: Doc, schema: Doc, registry: Registry[Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {short(e)}" for e in found]


def short(error: jsonschema.ValidationError) -> str:
    # A oneOf/anyOf failure's own message dumps the whole instance; its best
    # sub-error says what is actually wrong.
    best = jsonschema.exceptions.best_match([error, *error.context]) if error.context else error
    return best.message if len(best.message) < 300 else best.message[:300] + "..."


@dataclass
class Schemas:
    # Kubernetes version -> (schema folder, registry holding its _definitions.json)
    k8s: dict[str, tuple[Path, Registry[Any]]]
    # (group, version, kind) -> JSON schema of a custom resource
    crds: dict[tuple[str, str, str], Doc] = field(default_factory=dict)
    cel_rules: int = 0

    @classmethod
    def load(cls, k8s_versions: list[str], crd_dirs: list[Path]) -> Schemas:
        schemas = cls({})
        for k8s_version in k8s_versions:
            folder = k8s_schema_dir(k8s_version)
            definitions = json.loads((folder / "_definitions.json").read_text())
            registry = Registry().with_resource(
                definitions["$id"], Resource.from_contents(definitions)
            )
            schemas.k8s[k8s_version] = (folder, registry)
        # A custom resource's metadata is checked as the ObjectMeta of the last version.
        object_meta = {"$ref": definitions["$id"] + OBJECT_META}
        for crd_dir in crd_dirs:
            for path in sorted(crd_dir.rglob("*.y*ml")):
                for crd in yaml.safe_load_all(path.read_text()):
                    if crd and crd.get("kind") == "CustomResourceDefinition":
                        schemas.add_crd(crd["spec"], object_meta)
        return schemas

    def add_crd(self, spec: Doc, object_meta: Doc) -> None:
        kind = spec["names"]["kind"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            raw = version["schema"]["openAPIV3Schema"]
            self.cel_rules += json.dumps(raw).count('"x-kubernetes-validations"')
            schema = crd_to_json_schema(raw)
            schema["properties"]["metadata"] = object_meta
            schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            schema["required"].append("metadata")
            self.crds[(spec["group"], version["name"], kind)] = schema

    def is_custom(self, doc: Doc) -> bool:
        group, _, version = doc["apiVersion"].rpartition("/")
        return (group, version, doc["kind"]) in self.crds

    def errors(self, doc: Doc) -> list[str] | None:
        """Schema errors of ``doc``, or None when no schema knows its kind."""
        group, _, version = doc["apiVersion"].rpartition("/")
        if self.is_custom(doc):
            registry = next(reversed(self.k8s.values()))[1]
            return check(doc, self.crds[(group, version, doc["kind"])], registry)
        errors: list[str] = []
        for k8s_version, (folder, registry) in self.k8s.items():
            path = folder / core_schema_name(doc["apiVersion"], doc["kind"])
            if not path.is_file():
                return None
            schema = json.loads(path.read_text())
            errors += [f"[Kubernetes {k8s_version}] {e}" for e in check(doc, schema, registry)]
        return errors


# --- references --------------------------------------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def labels_of(doc: Doc) -> dict[str, str]:
    return doc["metadata"].get("labels") or {}


def operator_secrets(docs: list[Doc]) -> dict[str, set[str]]:
    """Secrets Strimzi and CloudNativePG create from the rendered resources."""
    made: dict[str, set[str]] = {}
    for doc in docs:
        name, kind = doc["metadata"]["name"], doc["kind"]
        if kind == "KafkaUser":
            made[name] = {"password", "sasl.jaas.config"}
        elif kind == "Kafka":
            made[f"{name}-cluster-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
        elif kind == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            made[f"{name}-app"] = {
                *("username", "user", "password", "host", "port", "dbname", "pgpass"),
                *("uri", "fqdn-uri", "jdbc-uri", "fqdn-jdbc-uri"),
            }
            made[f"{name}-ca"] = {"ca.crt", "ca.key"}
    return made


@dataclass
class Rendered:
    """One rendered overlay, indexed for the reference checks."""

    docs: list[Doc]
    by_kind: dict[str, dict[str, Doc]] = field(default_factory=dict)
    configmaps: dict[str, set[str]] = field(default_factory=dict)
    secrets: dict[str, set[str]] = field(default_factory=dict)
    pod_templates: list[Doc] = field(default_factory=list)

    def __post_init__(self) -> None:
        for doc in self.docs:
            self.by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
            data = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            if doc["kind"] == "ConfigMap":
                self.configmaps[doc["metadata"]["name"]] = set(data)
            elif doc["kind"] == "Secret":
                self.secrets[doc["metadata"]["name"]] = set(data)
            elif doc["kind"] in WORKLOAD_KINDS:
                self.pod_templates.append(doc["spec"]["template"])
        self.secrets |= operator_secrets(self.docs) | MANUAL_SECRETS

    def services(self) -> dict[str, Doc]:
        return self.by_kind.get("Service", {})

    def selects_pods(self, selector: dict[str, str]) -> bool:
        return any(matches(selector, labels_of(t)) for t in self.pod_templates)

    def container_ports(self, selector: dict[str, str]) -> set[str]:
        return {
            port.get("name", "")
            for template in self.pod_templates
            if matches(selector, labels_of(template))
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }


Check = Callable[[Doc, Rendered], Iterator[str]]


def check_name(doc: Doc, _: Rendered) -> Iterator[str]:
    name, kind = doc["metadata"]["name"], doc["kind"]
    pattern, limit = (DNS_LABEL, 63) if kind in ("Service", "Namespace") else (DNS_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        yield f"metadata.name {name!r} is not a valid {kind} name"


def check_workload(doc: Doc, rendered: Rendered) -> Iterator[str]:
    template = doc["spec"]["template"]
    selector = doc["spec"].get("selector", {}).get("matchLabels", {})
    if doc["kind"] == "Deployment" and not matches(selector, labels_of(template)):
        yield "spec.selector does not match the pod template's labels"
    pod = template["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod.get("initContainers", []) + pod["containers"]:
        yield from check_container(container, set(volumes), rendered)
    for volume in volumes.values():
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            if name not in rendered.secrets:
                yield f"volume {volume['name']}: secret {name!r} is neither rendered nor made"
            for item in volume["secret"].get("items", []):
                if item["key"] not in rendered.secrets.get(name, set()):
                    yield f"volume {volume['name']}: secret {name!r} has no key {item['key']!r}"


def check_container(container: Doc, volumes: set[str], rendered: Rendered) -> Iterator[str]:
    where = f"container {container['name']}"
    if not container.get("image"):
        yield f"{where} has no image"
    for source in container.get("envFrom", []):
        is_configmap = "configMapRef" in source
        ref = source["configMapRef"] if is_configmap else source["secretRef"]
        known = rendered.configmaps if is_configmap else rendered.secrets
        if ref["name"] not in known and not ref.get("optional"):
            yield f"{where}: envFrom {ref['name']!r} is neither rendered nor made by operators"
    for env in container.get("env", []):
        yield from check_env_ref(env, rendered, where)
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            yield f"{where} mounts undeclared volume {mount['name']!r}"


def check_env_ref(env: Doc, rendered: Rendered, where: str) -> Iterator[str]:
    value_from = env.get("valueFrom") or {}
    for ref_kind, known in (
        ("configMapKeyRef", rendered.configmaps),
        ("secretKeyRef", rendered.secrets),
    ):
        ref = value_from.get(ref_kind)
        if ref and not ref.get("optional") and ref["key"] not in known.get(ref["name"], set()):
            yield f"{where}: env {env['name']}: {ref['name']!r} has no key {ref['key']!r}"


def check_service(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"].get("selector")
    if not selector:
        return
    if not rendered.selects_pods(selector):
        yield f"selector {selector} matches no pod template"
    ports = rendered.container_ports(selector)
    for port in doc["spec"]["ports"]:
        target = port.get("targetPort")
        if isinstance(target, str) and target not in ports:
            yield f"targetPort {target!r} is no container port of the selected pods"


def check_pdb(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"]["selector"].get("matchLabels", {})
    if not rendered.selects_pods(selector):
        yield f"selector {selector} matches no pod template"


def check_hpa(doc: Doc, rendered: Rendered) -> Iterator[str]:
    target = doc["spec"]["scaleTargetRef"]
    workload = rendered.by_kind.get(target["kind"], {}).get(target["name"])
    if workload is None:
        yield f"scaleTargetRef {target['kind']}/{target['name']} is not rendered"
    elif "replicas" in workload["spec"]:
        yield f"{target['name']} sets replicas: every apply would undo the autoscaler's scaling"


def check_ingress(doc: Doc, rendered: Rendered) -> Iterator[str]:
    for rule in doc["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"]["service"]
            service = rendered.services().get(backend["name"])
            ports = {p.get("name") for p in (service or {"spec": {}})["spec"].get("ports", [])}
            if service is None or backend["port"].get("name", "") not in {*ports, ""}:
                yield f"backend {backend['name']}:{backend['port']} is no rendered Service port"


def check_service_monitor(doc: Doc, rendered: Rendered) -> Iterator[str]:
    selector = doc["spec"]["selector"].get("matchLabels", {})
    selected = [s for s in rendered.services().values() if matches(selector, labels_of(s))]
    if not selected:
        yield f"selector {selector} matches no Service"
    ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
    for endpoint in doc["spec"]["endpoints"]:
        if endpoint.get("port") and endpoint["port"] not in ports:
            yield f"endpoint port {endpoint['port']!r} is on none of the selected Services"


def check_prometheus_rule(doc: Doc, _: Rendered) -> Iterator[str]:
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            try:
                promql_parser.parse(rule["expr"])
            except ValueError as exc:
                yield f"rule {rule.get('alert') or rule.get('record')}: bad PromQL: {exc}"


CHECKS: dict[str, list[Check]] = {
    "Deployment": [check_workload],
    "Job": [check_workload],
    "Service": [check_service],
    "PodDisruptionBudget": [check_pdb],
    "HorizontalPodAutoscaler": [check_hpa],
    "Ingress": [check_ingress],
    "ServiceMonitor": [check_service_monitor],
    "PrometheusRule": [check_prometheus_rule],
}


# --- main --------------------------------------------------------------------


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata'].get('name', '?')}"


def validate(name: str, path: Path, schemas: Schemas) -> bool:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    rendered = Rendered(docs)
    failures: dict[str, list[str]] = {}
    skipped: list[str] = []
    counts = {"core": 0, "custom": 0}
    for doc in docs:
        unvalidated = UNVALIDATED_KINDS.get((doc["apiVersion"].rpartition("/")[0], doc["kind"]))
        if unvalidated:
            skipped.append(f"{ident(doc)}: {unvalidated}")
            errors: list[str] | None = []
        else:
            errors = schemas.errors(doc)
            counts["custom" if schemas.is_custom(doc) else "core"] += errors is not None
        if errors is None:
            errors = [f"no schema for {doc['apiVersion']} {doc['kind']}"]
        for checker in [check_name, *CHECKS.get(doc["kind"], [])]:
            errors += checker(doc, rendered)
        if errors:
            failures[ident(doc)] = errors

    checked = f"{counts['core']} core + {counts['custom']} custom"
    print(f"{name}: {len(docs)} resources; schema-checked {checked}")
    for line in skipped:
        print(f"  not schema-checked: {line}")
    for resource, problems in sorted(failures.items()):
        print(f"  INVALID {resource}")
        for problem in problems:
            print(f"    - {problem}")
    if not failures:
        print("  all valid")
    return not failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crds", type=Path, action="append", required=True, help="CRD folder")
    parser.add_argument("--k8s-version", action="append", required=True, help="e.g. 1.30")
    parser.add_argument("rendered", nargs="+", help="NAME=FILE of a rendered overlay")
    args = parser.parse_args()
    schemas = Schemas.load(args.k8s_version, args.crds)
    kinds = ", ".join(sorted(kind for _, _, kind in schemas.crds))
    print(f"schemas: Kubernetes {', '.join(args.k8s_version)} (strict); CRDs: {kinds}")
    ok = True
    for item in args.rendered:
        name, _, file = item.partition("=")
        ok = validate(name, Path(file), schemas) and ok
    print(f"not checked: {schemas.cel_rules} CEL rules of the CRDs, string formats")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
